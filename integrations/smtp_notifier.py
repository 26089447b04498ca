"""Alerts by email (aiosmtplib): multipart plain text and HTML, a unique Message-ID per delivery,
later changes as replies (In-Reply-To/References) to the first mail about the alert.

With `max_idle` (the service's notifiers: integrations.notifiers) a connection (connect, EHLO,
STARTTLS, login) is kept open after a message for the next one, up to `idle_seconds` and at
most `max_idle` of them; one a server has closed meanwhile is not used,
and a connection whose message failed in any way is closed, never reused. A kept connection sends
its next message's MAIL FROM (always the configured sender) at once, so that message starts at
RCPT (`arm_idle`), when the connection was itself kept and used again (mail comes closer than
`idle_seconds`); a refused or failed MAIL closes it.

Only configured addresses are ever mailed. 4xx replies, timeouts and connection failures are
retryable; 5xx replies (and a refused login) are permanent. Retries are the worker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import ssl
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime

import aiosmtplib
from aiosmtplib.email import parse_address

from casewatch.config.sections import SmtpSection
from casewatch.delivery import render
from casewatch.delivery.notifier import Outbound, Outcome, Permanent, Retryable, Sent, unbuildable

log = logging.getLogger(__name__)

_RELAY_FAULTS = frozenset({530, 535})
_BAD_SEQUENCE = 503  # a command out of order: on an armed connection, RCPT without its MAIL
# Long header lines unfolded (RFC 5322 allows 998): a folded Subject would read back with a
# leading space, and mail rules matching "[casewatch]" at its start would miss it.
_POLICY = SMTP_POLICY.clone(max_line_length=998, cte_type="7bit")
IDLE_SECONDS = 10.0  # well under the usual server idle timeouts (RFC 5321 asks them for 5 minutes)
MAX_IDLE = 4
QUIT_SECONDS = 5.0  # a QUIT unanswered this long: the connection is dropped instead


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
        arm_idle: bool = True,
        arm_always: bool = False,
    ) -> None:
        """`tls_context` replaces the system's trusted CAs for STARTTLS (tests, private CAs).
        `max_idle` connections are kept open between messages (0: one connection a message); the
        owner then calls close() before its event loop ends. `arm_idle`: an idle connection sends
        its next message's MAIL FROM at once (_arm) when it was kept and used again (_keep); with
        `arm_always` after every message, however sparse (tests of the arming itself)."""
        self._smtp = smtp
        self._tls_context = tls_context
        self._allowed = frozenset(a.lower() for a in allowed)
        self._domain = smtp.sender.rpartition("@")[2]
        self._idle_seconds = idle_seconds
        self._max_idle = max_idle
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []  # open connections, when last used
        self._reaper: asyncio.TimerHandle | None = None
        # Idle connections' MAIL FROM for their next message, sent or answered (_arm).
        self._arming: dict[aiosmtplib.SMTP, asyncio.Task[bool]] = {}
        self._closing: set[asyncio.Task[None]] = set()  # the reaper's QUITs under way (close() ends them)
        self._arm_idle = arm_idle
        self._arm_always = arm_always
        self.connects = 0  # connections opened (tests, the bench)

    async def send(self, message: Outbound) -> Outcome:
        if message.target.lower() not in self._allowed:
            return Permanent(f"{message.target} is not a configured address; casewatch mails no other")
        try:
            raw, message_id = self.flattened(message)
        except Exception as exc:  # noqa: BLE001 - whatever the payload holds, it cannot be sent
            return unbuildable(exc)
        client: aiosmtplib.SMTP | None = None
        done = reused = False
        try:
            client, armed, reused = await self._connection()
            if armed and not await _armed_rcpt(client, message.target):
                # The relay dropped the idle connection's envelope (a transaction timeout, a proxy
                # that reconnected: review10 finding 1): the whole envelope on a new connection.
                client.close()
                client = None
                client, armed, reused = await self._connect(), False, False
            if armed:
                await client.data(raw)
            else:
                await client.sendmail(self._smtp.sender, [message.target], raw)
            done = True
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return _refused(exc.recipients)
        except aiosmtplib.SMTPRecipientRefused as exc:  # the armed path's one recipient
            return _refused([exc])
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
            elif client is not None and not self._keep(client, reused=reused):
                try:
                    await _close(client)
                except asyncio.CancelledError:
                    # The relay took the message (DATA's 250): the send's timeout firing during the
                    # QUIT after it must not make it a failure, sent again later. A stop's cancel is
                    # ended by the worker (DeliveryWorker._send); _close dropped the connection.
                    pass
        return Sent(message_id)

    def build(self, message: Outbound) -> EmailMessage:
        return library_mail(*self._parts(message))

    def flattened(self, message: Outbound) -> tuple[bytes, str]:
        """The mail as sent (`build`'s, flattened with our policy: aiosmtplib's own would fold the
        Subject at 78) and its Message-ID. Plain ASCII mails, the usual, are written directly,
        byte for byte what the email package writes (tests/test_delivery7_mail_bytes.py) at a
        tenth of its ~1.5 ms, which every send of a round waited for on the event loop."""
        headers, plain, html = self._parts(message)
        boundary = _boundary(plain + html)
        raw = direct_bytes(headers, plain, html, boundary)
        if raw is None:
            mail = library_mail(headers, plain, html)
            mail.set_boundary(boundary)
            raw = mail.as_bytes(policy=_POLICY)
        return raw, dict(headers)["Message-ID"]

    def _parts(self, message: Outbound) -> tuple[list[tuple[str, str]], str, str]:
        p = message.payload
        headers = [
            ("From", self._smtp.sender),
            ("To", message.target),
            ("Subject", render.subject(p)),
            # What the email package writes for formatdate(usegmt=True): "+0000", whole seconds.
            ("Date", format_datetime(datetime.now(UTC).replace(microsecond=0))),
            # Derived from the delivery, so a resend after a crash carries the same id.
            ("Message-ID", (
                f"<casewatch.{message.alert_id or 'msg'}.{message.delivery_id}."
                f"{message.content_hash[:10]}@{self._domain}>"
            )),
        ]
        if message.thread_ref:
            headers += [("In-Reply-To", message.thread_ref), ("References", message.thread_ref)]
        if message.alert_id:
            headers.append(("X-Casewatch-Alert", message.alert_id))
        return headers, render.plain_text(p), render.html_text(p)

    async def _connection(self) -> tuple[aiosmtplib.SMTP, bool, bool]:
        """An idle connection still open and fresh enough, or a new one; whether the next
        message's MAIL FROM has been accepted on it (_arm); whether it was an idle one."""
        now = time.monotonic()
        while self._idle:
            client, used = self._idle.pop()
            arming = self._arming.pop(client, None)
            if client.is_connected and now - used < self._idle_seconds:
                if arming is None:
                    return client, False, True
                try:
                    armed = await arming
                except BaseException:  # cancelled (the send's timeout): nothing may use it now
                    arming.cancel()
                    client.close()
                    raise
                if armed and client.is_connected:
                    return client, True, True
                client.close()  # refused or failed: a fresh connection tries the whole envelope
                continue
            await _close(client, arming)
        return await self._connect(), False, False

    async def _connect(self) -> aiosmtplib.SMTP:
        """A new connection: connect, EHLO, STARTTLS, login."""
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
            client, _, _ = await self._connection()
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
        if not self._keep(client, reused=False):
            await _close(client)

    def _keep(self, client: aiosmtplib.SMTP, *, reused: bool) -> bool:
        """Keep `client` idle for the next message (False: no room, or closed). Armed (_arm) when
        its last message came on it while it idled (`reused`): mail comes closer than idle_seconds,
        so the next message is likely to use it. An arming reaped unused is a second MAIL FROM for
        the relay, which counts it against a client's message rate limit (Postfix's
        smtpd_client_message_rate_limit) as it counts the message's own: sparse mail, each message
        on a new connection (alone or with the other mails of its alert), is not armed (review10
        finding 2)."""
        if len(self._idle) >= self._max_idle or not client.is_connected:
            return False
        self._idle.append((client, time.monotonic()))
        if self._arm_idle and (self._arm_always or reused):
            self._arming[client] = asyncio.get_running_loop().create_task(self._arm(client))
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self._idle_seconds, self._reap)
        return True

    async def _arm(self, client: aiosmtplib.SMTP) -> bool:
        """Send the next message's MAIL FROM (always our sender) while the connection is idle, so
        that message's send starts at RCPT: one round trip of four fewer when it counts (on the
        event loop beside the round's other sends). A server waits minutes for the next command
        (RFC 5321 4.5.3.2); QUIT ends an open envelope. False when refused or failed: the
        connection is then not reused."""
        try:
            await client.mail(self._smtp.sender)
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            return False
        return True

    def _reap(self) -> None:
        """Close the connections idle for `idle_seconds` (QUIT in the background)."""
        self._reaper = None
        now = time.monotonic()
        stale = [c for c, used in self._idle if now - used >= self._idle_seconds]
        self._idle = [(c, used) for c, used in self._idle if now - used < self._idle_seconds]
        for client in stale:
            task = asyncio.get_running_loop().create_task(_close(client, self._arming.pop(client, None)))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        if self._idle:
            wait = self._idle_seconds - (now - min(used for _, used in self._idle))
            self._reaper = asyncio.get_running_loop().call_later(max(wait, 0.01), self._reap)

    async def close(self) -> None:
        """QUIT the idle connections and wait for the reaper's QUITs under way (each answered
        within QUIT_SECONDS, else dropped); cut short (cancelled), every connection is still
        dropped, none left open for the garbage collector once the event loop is gone."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        idle, self._idle = self._idle, []
        try:
            for client, _ in idle:
                await _close(client, self._arming.pop(client, None))
            if self._closing:
                await asyncio.wait(self._closing, timeout=QUIT_SECONDS)
        finally:
            for client, _ in idle:
                arming = self._arming.pop(client, None)
                if arming is not None:
                    arming.cancel()
                client.close()
            closing = list(self._closing)
            for task in closing:
                task.cancel()  # its _close drops the connection
            await asyncio.gather(*closing, return_exceptions=True)


def library_mail(headers: list[tuple[str, str]], plain: str, html: str) -> EmailMessage:
    """The mail as the email package builds it: multipart/alternative, plain text then HTML."""
    mail = EmailMessage(policy=_POLICY)
    for name, value in headers:
        mail[name] = value
    mail.set_content(plain)
    mail.add_alternative(html, subtype="html")
    return mail


# Values written as they are only when the email package would write them unchanged: printable
# ASCII words with single spaces (no encoded-word look-alike), plain addresses and message ids.
_WORDS = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_ADDRESS = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_MSG_ID = re.compile(r"<[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*>")
_BODY = re.compile(r"[\x20-\x7e\n]*")
_SHAPE = {"From": _ADDRESS, "To": _ADDRESS, "Message-ID": _MSG_ID, "In-Reply-To": _MSG_ID,
          "References": _MSG_ID, "Date": _WORDS, "Subject": _WORDS, "X-Casewatch-Alert": _WORDS}


def direct_bytes(headers: list[tuple[str, str]], plain: str, html: str, boundary: str) -> bytes | None:
    """library_mail(...) with `boundary`, flattened with our policy, written directly; None when
    a value is not plain enough to be sure of that (non-ASCII, a long line, an odd header): the
    caller then asks the email package."""
    lines: list[str] = []
    for name, value in headers:
        shape = _SHAPE.get(name)
        if shape is None or not shape.fullmatch(value) or "=?" in value or len(name) + 2 + len(value) > 998:
            return None
        lines.append(f"{name}: {value}")
    bodies = []
    for body in (plain, html):
        if not _BODY.fullmatch(body) or any(len(line) > 998 for line in body.split("\n")):
            return None
        bodies.append(body if body.endswith("\n") else body + "\n")
    part = 'Content-Type: text/{}; charset="utf-8"\nContent-Transfer-Encoding: 7bit\n'
    text = "\n".join([
        *lines, "MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"', "",
        f"--{boundary}", part.format("plain"), bodies[0],
        f"--{boundary}", part.format("html") + "MIME-Version: 1.0\n", bodies[1],
        f"--{boundary}--", "",
    ])
    return text.replace("\n", "\r\n").encode("ascii")


def _boundary(text: str) -> str:
    """As the email package draws one: 15 '=', 19 random digits, '=='; never a line of `text`."""
    while True:
        boundary = "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="
        if boundary not in text:
            return boundary


async def _armed_rcpt(client: aiosmtplib.SMTP, target: str) -> bool:
    """RCPT on a connection whose MAIL FROM was accepted while it idled (sendmail's address check
    first); False when the relay answers 503 (bad sequence: it no longer holds that envelope), so
    the arming did not hold and the message is not refused for it. Other refusals raise as
    sendmail's would."""
    parse_address(target)
    try:
        await client.rcpt(target)
    except aiosmtplib.SMTPRecipientRefused as exc:
        if exc.code == _BAD_SEQUENCE:
            return False
        raise
    return True


def _refused(refusals: Sequence[aiosmtplib.SMTPRecipientRefused]) -> Outcome:
    codes = [r.code for r in refusals]
    text = "; ".join(f"{r.code} {r.message}" for r in refusals)[:500]
    return Retryable(text) if all(400 <= c < 500 for c in codes) else Permanent(text)


async def _settled(arming: asyncio.Task[bool]) -> bool:
    """Whether the arming's MAIL was answered; one still waiting is cancelled, not waited for (a
    server stalling on MAIL FROM would otherwise hold close() for the client's timeout)."""
    if not arming.done():
        arming.cancel()
    # asyncio.wait, not await: the arming's own cancellation is expected, but a cancel of this
    # task (the send's timeout, a stop) must reach the caller, not be taken for the arming's.
    await asyncio.wait((arming,))
    if arming.cancelled():
        return False
    arming.result()  # what the arming raised, raised here, as awaiting it did
    return True


async def _close(client: aiosmtplib.SMTP, arming: asyncio.Task[bool] | None = None) -> None:
    """QUIT, or drop the connection if the server does not answer it (nor the idle connection's
    MAIL FROM, review9 finding 1)."""
    try:
        if arming is not None and not await _settled(arming):
            return
        if client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await client.quit(timeout=QUIT_SECONDS)
    finally:
        client.close()  # also when cancelled (a shutdown's grace ran out): never left to the collector
