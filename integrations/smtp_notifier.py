"""Alerts by email (aiosmtplib): multipart plain text and HTML, a unique Message-ID per delivery,
later changes as replies (In-Reply-To/References) to the first mail about the alert.

Only configured addresses are ever mailed. 4xx replies, timeouts and connection failures are
retryable; 5xx replies (and a refused login) are permanent. Retries are the worker's.
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate

import aiosmtplib

from casewatch.config.sections import SmtpSection
from casewatch.delivery import render
from casewatch.delivery.notifier import Outbound, Outcome, Permanent, Retryable, Sent, unbuildable

_RELAY_FAULTS = frozenset({530, 535})
# Long header lines unfolded (RFC 5322 allows 998): a folded Subject would read back with a
# leading space, and mail rules matching "[casewatch]" at its start would miss it.
_POLICY = SMTP_POLICY.clone(max_line_length=998, cte_type="7bit")

class SmtpNotifier:
    channel = "email"

    def __init__(
        self, smtp: SmtpSection, allowed: frozenset[str], *, tls_context: ssl.SSLContext | None = None
    ) -> None:
        """`tls_context` replaces the system's trusted CAs for STARTTLS (tests, private CAs)."""
        self._smtp = smtp
        self._tls_context = tls_context
        self._allowed = frozenset(a.lower() for a in allowed)
        self._domain = smtp.sender.rpartition("@")[2]

    async def send(self, message: Outbound) -> Outcome:
        if message.target.lower() not in self._allowed:
            return Permanent(f"{message.target} is not a configured address; casewatch mails no other")
        try:
            mail = self.build(message)
            # Flattened here with our policy: aiosmtplib's own would fold the Subject at 78.
            raw = mail.as_bytes(policy=_POLICY)
        except Exception as exc:  # noqa: BLE001 - whatever the payload holds, it cannot be sent
            return unbuildable(exc)
        smtp = self._smtp
        try:
            await aiosmtplib.send(
                raw,
                sender=smtp.sender,
                recipients=[message.target],
                hostname=smtp.host,
                port=smtp.port,
                start_tls=smtp.starttls,
                username=smtp.username or None,
                password=smtp.password.get_secret_value() or None,
                timeout=smtp.timeout_seconds,
                tls_context=self._tls_context if smtp.starttls else None,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)[:500]
            return Retryable(text) if all(400 <= c < 500 for c in codes) else Permanent(text)
        except aiosmtplib.SMTPResponseException as exc:
            text = f"{exc.code} {exc.message}"[:500]
            # 530/535 (authentication required/refused) are our configuration's fault, not the
            # message's: keep it queued (and retried) until an operator mends the credentials.
            retry = 400 <= exc.code < 500 or exc.code in _RELAY_FAULTS
            return Retryable(text) if retry else Permanent(text)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Retryable(f"{type(exc).__name__}: {str(exc)[:200]}")
        return Sent(str(mail["Message-ID"]))

    def build(self, message: Outbound) -> EmailMessage:
        p = message.payload
        mail = EmailMessage(policy=_POLICY)
        mail["From"] = self._smtp.sender
        mail["To"] = message.target
        mail["Subject"] = render.subject(p)
        mail["Date"] = formatdate(usegmt=True)
        # Derived from the delivery, so a resend after a crash carries the same id.
        mail["Message-ID"] = (
            f"<casewatch.{message.alert_id or 'msg'}.{message.delivery_id}."
            f"{message.content_hash[:10]}@{self._domain}>"
        )
        if message.thread_ref:
            mail["In-Reply-To"] = message.thread_ref
            mail["References"] = message.thread_ref
        if message.alert_id:
            mail["X-Casewatch-Alert"] = message.alert_id
        mail.set_content(render.plain_text(p))
        mail.add_alternative(render.html_text(p), subtype="html")
        return mail

    async def close(self) -> None:
        return None
