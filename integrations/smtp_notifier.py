"""Alerts by email (aiosmtplib): multipart plain text and HTML, a unique Message-ID per delivery,
later changes as replies (In-Reply-To/References) to the first mail about the alert.

With `max_idle` (the service's notifiers: integrations.notifiers) a connection (connect, EHLO,
STARTTLS, login) is kept open after a message for the next one, up to `idle_seconds` and at
most `max_idle` of them; one a server has closed meanwhile is not used,
and a connection whose message failed in any way is closed, never reused.

Only configured addresses are ever mailed. 4xx replies, timeouts and connection failures are
retryable; 5xx replies (and a refused login) are permanent. Retries are the worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate

import aiosmtplib

from casewatch.config.sections import SmtpSection
from casewatch.delivery import render
from casewatch.delivery.notifier import Outbound, Outcome, Permanent, Retryable, Sent, unbuildable

log = logging.getLogger(__name__)

_RELAY_FAULTS = frozenset({530, 535})
# Long header lines unfolded (RFC 5322 allows 998): a folded Subject would read back with a
# leading space, and mail rules matching "[casewatch]" at its start would miss it.
_POLICY = SMTP_POLICY.clone(max_line_length=998, cte_type="7bit")
IDLE_SECONDS = 10.0  # well under the usual server idle timeouts (RFC 5321 asks them for 5 minutes)
MAX_IDLE = 4


class SmtpNotifier:
    channel = "email"

    def __init__(
        self,
        smtp: SmtpSection,
        allowed: frozenset[str],
        *,
        tls_context: ssl.SSLContext | None = None,
        idle_seconds: float = IDLE_SECONDS,
        max_idle: int = 0,
    ) -> None:
        """`tls_context` replaces the system's trusted CAs for STARTTLS (tests, private CAs).
        `max_idle` connections are kept open between messages (0: one connection a message); the
        owner then calls close() before its event loop ends."""
        self._smtp = smtp
        self._tls_context = tls_context
        self._allowed = frozenset(a.lower() for a in allowed)
        self._domain = smtp.sender.rpartition("@")[2]
        self._idle_seconds = idle_seconds
        self._max_idle = max_idle
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []  # open connections, when last used
        self._reaper: asyncio.TimerHandle | None = None
        self.connects = 0  # connections opened (tests, the bench)

    async def send(self, message: Outbound) -> Outcome:
        if message.target.lower() not in self._allowed:
            return Permanent(f"{message.target} is not a configured address; casewatch mails no other")
        try:
            mail = self.build(message)
            # Flattened here with our policy: aiosmtplib's own would fold the Subject at 78.
            raw = mail.as_bytes(policy=_POLICY)
        except Exception as exc:  # noqa: BLE001 - whatever the payload holds, it cannot be sent
            return unbuildable(exc)
        client: aiosmtplib.SMTP | None = None
        done = False
        try:
            client = await self._connection()
            await client.sendmail(self._smtp.sender, [message.target], raw)
            done = True
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
        finally:
            if client is not None and not done:
                client.close()  # failed or cut short: never reused, no QUIT to wait for
            elif client is not None and not self._keep(client):
                await _close(client)
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

    async def _connection(self) -> aiosmtplib.SMTP:
        """An idle connection still open and fresh enough, or a new one."""
        now = time.monotonic()
        while self._idle:
            client, used = self._idle.pop()
            if client.is_connected and now - used < self._idle_seconds:
                return client
            await _close(client)
        smtp = self._smtp
        client = aiosmtplib.SMTP(
            hostname=smtp.host,
            port=smtp.port,
            start_tls=smtp.starttls,
            username=smtp.username or None,
            password=smtp.password.get_secret_value() or None,
            timeout=smtp.timeout_seconds,
            tls_context=self._tls_context if smtp.starttls else None,
        )
        self.connects += 1
        try:
            await client.connect()
        except BaseException:
            client.close()  # refused login, failed STARTTLS, timed out: drop what was opened
            raise
        return client

    async def warm(self) -> None:
        """Open one connection (connect, EHLO, STARTTLS, login: no mail) and keep it idle for the
        first message, which then pays for none of it. Only with `max_idle`; a failure is logged
        (a warning) and left to that message, which connects (and fails, and is retried) as usual."""
        if self._max_idle <= 0 or self._idle:
            return
        try:
            client = await self._connection()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Start-up is the moment to say the mail settings are wrong (a refused login, a server
            # away), not the first alert hours later. The type and reply code only: never the
            # server's text, the host or the credentials.
            code = getattr(exc, "code", None)
            log.warning(
                "SMTP warm-up at start-up failed (%s%s): mail is tried again with the first message",
                type(exc).__name__, f" {code}" if isinstance(code, int) else "",
            )
            return
        if not self._keep(client):
            await _close(client)

    def _keep(self, client: aiosmtplib.SMTP) -> bool:
        if len(self._idle) >= self._max_idle or not client.is_connected:
            return False
        self._idle.append((client, time.monotonic()))
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self._idle_seconds, self._reap)
        return True

    def _reap(self) -> None:
        """Close the connections idle for `idle_seconds` (QUIT in the background)."""
        self._reaper = None
        now = time.monotonic()
        stale = [c for c, used in self._idle if now - used >= self._idle_seconds]
        self._idle = [(c, used) for c, used in self._idle if now - used < self._idle_seconds]
        for client in stale:
            asyncio.get_running_loop().create_task(_close(client))
        if self._idle:
            wait = self._idle_seconds - (now - min(used for _, used in self._idle))
            self._reaper = asyncio.get_running_loop().call_later(max(wait, 0.01), self._reap)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        idle, self._idle = self._idle, []
        for client, _ in idle:
            await _close(client)


async def _close(client: aiosmtplib.SMTP) -> None:
    """QUIT, or drop the connection if the server does not answer it."""
    if client.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await client.quit(timeout=5)
    client.close()
