"""An LMTP listener (aiosmtpd, RFC 2033) for a forwarding rule: the SPOC mailbox's server (or an
MTA) delivers a copy of each border-alert report to it.

The reply to DATA is the durable outcome, one reply per accepted recipient (RFC 2033 4.2: the
client waits for as many): 250 only after the mail's event (or its kept item) committed, or when
it is not from an allowed sender (not read, not kept; the original stays in the SPOC's mailbox);
451 (temporary: the sender keeps the mail and retries) when the database cannot be reached or the
kept item could not be written. The mail is handled once, and every recipient gets that reply.

aiosmtpd's own DATA reading throws away a mail larger than its data size limit, or with a line
longer than its stream limit, and answers one 552/500 whatever the number of recipients: a
client then waits for the missing replies. So DATA is read here instead: the first
max_message_bytes are kept (a longer mail is kept unread for a person, with a feed.unreadable
alert, as over IMAP), the rest is read and dropped, lines of any length. No SIZE is advertised,
so a sender never gives up on a large mail before DATA.

A client may half-close after the final dot (shutdown(SHUT_WR)): aiosmtpd would cancel the
session at that EOF, mid-handling, and answer nothing. Here an EOF during DATA only ends the
input: the mail is handled to its end (committed or not, as a whole), the replies are still
sent on the half-closed connection, then the session ends. Handling runs in a task of its own,
so even a connection lost outright (reset, closed) never cancels it half-way: the mail is
stored, the sender (who got no reply) retries, and the retry is a duplicate.

LHLO advertises PIPELINING and ENHANCEDSTATUSCODES (RFC 2033 section 5: an LMTP server must
implement both). aiosmtpd reads commands in order from one buffered stream and never drops
unread input, which is what pipelining asks of a server (RFC 2920); its own replies carry no
enhanced status code, so push() adds one (RFC 3463) to every 2xx/4xx/5xx reply but the greeting
and the LHLO reply (RFC 2034).

aiosmtpd's timeout (300 s) runs from each command: after DATA it covers the whole transfer and
the handling; a sender that takes longer is disconnected (and, if the mail was read by then, it
is still handled).

Runs in the caller's event loop (the database engine's), on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any, AnyStr

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import syntax

from casewatch.store.errors import is_unavailable
from integrations.mail_ingest.process import MailProcessor, Tally

log = logging.getLogger(__name__)
STORED = "250 2.0.0 OK: stored"
KEPT = "250 2.0.0 OK: kept for a person"
NOT_READ = "250 2.0.0 OK: not from an allowed sender, not read"
UNAVAILABLE = "451 4.3.0 Database unavailable: try again later"
FAILED = "451 4.3.0 Could not be processed: try again later"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
READ_CHUNK = 64 * 1024  # how much of a line is read at a time (lines may be longer)
EXTENSIONS = ("PIPELINING", "ENHANCEDSTATUSCODES")  # RFC 2033 section 5: an LMTP server's must

_REPLY = re.compile(r"([245])(\d\d)([ -])(.*)", re.DOTALL)
_ENHANCED_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |$)")
# RFC 3463 codes for aiosmtpd's own replies, which carry none; any other basic code: class.0.0.
_ENHANCED_FOR = {
    "250": "2.0.0", "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1",
    "504": "5.5.4", "530": "5.7.0", "552": "5.3.4", "553": "5.1.3", "554": "5.7.0",
}


def with_enhanced_code(reply: str) -> str:
    """One reply line with an enhanced status code after its basic one (RFC 2034), unless it has
    one or is not a 2xx/4xx/5xx reply (354 has none)."""
    found = _REPLY.fullmatch(reply)
    if found is None or _ENHANCED_CODE.match(found.group(4)):
        return reply
    klass, rest, separator, text = found.groups()
    code = _ENHANCED_FOR.get(klass + rest, f"{klass}.0.0")
    return f"{klass}{rest}{separator}{code} {text}"


class BorderAlertHandler:
    """Handles each mail the listener received (every recipient is accepted: the listener is the
    forwarding rule's own)."""

    def __init__(self, processor: MailProcessor) -> None:
        self.processor = processor
        self.outcomes = Tally()
        self.in_flight: set[asyncio.Task[str]] = set()  # mails being handled (their own tasks)

    async def handle_EHLO(  # noqa: N802  # aiosmtpd's hook (LHLO calls it), 5-argument form
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # the hook must set it (aiosmtpd's handlers documentation)
        return [*responses[:-1], *(f"250-{name}" for name in EXTENSIONS), responses[-1]]

    async def deliver(self, content: bytes, size: int) -> str:
        """The reply for a mail of `size` bytes of which `content` (the first ones) was kept."""
        try:
            outcome = await self.processor.handle(content, size=size)
        except Exception as exc:
            self.outcomes.unhandled += 1
            if is_unavailable(exc):
                log.warning("mail-ingest: database unavailable; LMTP answered 451 (the sender retries)")
                return UNAVAILABLE
            # The type only: the exception's text may quote the mail.
            log.error("mail-ingest: a mail could not be handled (%s); LMTP answered 451", type(exc).__name__)
            return FAILED
        self.outcomes.add(outcome)
        return {"kept": KEPT, "ignored": NOT_READ}.get(outcome.kind, STORED)

    async def deliver_uncancelled(self, content: bytes, size: int) -> str:
        """deliver() in a task of its own: cancelling the caller (the session, at a lost
        connection) leaves the mail's handling to finish, committed or not as a whole."""
        task = asyncio.ensure_future(self.deliver(content, size))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return await asyncio.shield(task)


class _Lmtp(LMTP):
    line_length_limit = READ_CHUNK  # the stream reader's limit; longer lines are read in pieces

    def __init__(self, handler: BorderAlertHandler, max_message_bytes: int, **kwargs: Any) -> None:
        # data_size_limit=None: no SIZE advertised and no refusal at MAIL FROM; smtp_DATA below
        # bounds what it keeps by max_message_bytes itself.
        super().__init__(handler, data_size_limit=None, **kwargs)
        self.border_alerts = handler
        self.max_message_bytes = max_message_bytes
        self._greeted = False
        self._in_lhlo = False
        self._in_data = False
        self._eof_in_data = False

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and self._greeted and not self._in_lhlo:
            await super().push("\r\n".join(with_enhanced_code(line) for line in status.split("\r\n")))
            return
        self._greeted = True  # the first reply is the greeting, which carries no enhanced code
        await super().push(status)

    @syntax("LHLO hostname")
    async def smtp_LHLO(self, arg: str) -> None:  # noqa: N802
        self._in_lhlo = True  # the reply to LHLO carries no enhanced codes (RFC 2034)
        try:
            await super().smtp_LHLO(arg)
        finally:
            self._in_lhlo = False

    def eof_received(self) -> bool | None:
        if not self._in_data:
            return bool(super().eof_received())
        # The client half-closed during DATA: the end of its input, not of the session. The stream
        # reader gets the EOF (a mail cut short reads as a lost connection); the session is not
        # cancelled, so the mail is handled and answered (smtp_DATA ends the session after).
        self._eof_in_data = True
        return asyncio.StreamReaderProtocol.eof_received(self)

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        self._in_data = True
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._receive()
        finally:
            self._in_data = False
        if self._eof_in_data:
            await self._end_after_eof()

    async def _receive(self) -> None:
        read = await self._read_data()
        if read is None:
            return  # the connection was lost, or the client half-closed, before the final dot
        content, size = read
        assert self.envelope is not None
        self.envelope.original_content = self.envelope.content = content
        reply = await self.border_alerts.deliver_uncancelled(content, size)
        recipients = len(self.envelope.rcpt_tos)
        self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd's, untyped
        if self._writable():
            with contextlib.suppress(ConnectionError):
                await self.push("\r\n".join([reply] * recipients))

    async def _end_after_eof(self) -> None:
        """The client half-closed during DATA: answer a QUIT it sent before its EOF, then end the
        session as aiosmtpd ends one at an EOF (its CancelledError path closes the connection)."""
        with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            line = await self._reader.readuntil(b"\r\n")  # at EOF: only what is already buffered
            if line.rstrip().upper() == b"QUIT" and self._writable():
                await self.push("221 Bye")
        raise asyncio.CancelledError

    def _writable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def _read_data(self) -> tuple[bytes, int] | None:
        """(the first max_message_bytes of the mail, its whole size), dot-unstuffed (RFC 5321
        4.5.2), up to the lone dot; None if the connection went away first."""
        kept = bytearray()
        size = 0
        at_line_start = True
        while self.transport is not None:
            try:
                piece = await self._reader.readuntil(b"\r\n")
            except asyncio.CancelledError:
                self._writer.close()
                raise
            except asyncio.LimitOverrunError as exc:  # a line longer than READ_CHUNK: this much of it
                piece = await self._reader.read(exc.consumed)
            except asyncio.IncompleteReadError:
                return None
            if at_line_start:
                if piece == b".\r\n":
                    return bytes(kept), size
                if piece.startswith(b"."):
                    piece = piece[1:]
            at_line_start = piece.endswith(b"\r\n")
            size += len(piece)
            room = self.max_message_bytes - len(kept)
            if room > 0:
                kept += piece[:room]
        return None


class LmtpListener:
    def __init__(self, processor: MailProcessor, host: str, port: int, max_message_bytes: int) -> None:
        if host not in LOOPBACK:
            raise ValueError("the LMTP listener binds to loopback only (127.0.0.1 or ::1)")
        self.handler = BorderAlertHandler(processor)
        self.host = host
        self._port = port
        self.max_message_bytes = max_message_bytes
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> LmtpListener:
        loop = asyncio.get_running_loop()

        def protocol() -> _Lmtp:
            return _Lmtp(
                self.handler, self.max_message_bytes, enable_SMTPUTF8=True,
                hostname="casewatch", ident="casewatch mail-ingest", loop=loop,
            )

        self._server = await loop.create_server(protocol, self.host, self._port)
        return self

    async def stop(self) -> None:
        """Stop listening, then wait for the mails being handled (none is left half-done)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self.handler.in_flight:
            await asyncio.wait(set(self.handler.in_flight))
