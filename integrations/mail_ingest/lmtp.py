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

Runs in the caller's event loop (the database engine's), on loopback only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.lmtp import LMTP

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


class BorderAlertHandler:
    """Handles each mail the listener received (every recipient is accepted: the listener is the
    forwarding rule's own)."""

    def __init__(self, processor: MailProcessor) -> None:
        self.processor = processor
        self.outcomes = Tally()

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


class _Lmtp(LMTP):
    line_length_limit = READ_CHUNK  # the stream reader's limit; longer lines are read in pieces

    def __init__(self, handler: BorderAlertHandler, max_message_bytes: int, **kwargs: Any) -> None:
        # data_size_limit=None: no SIZE advertised and no refusal at MAIL FROM; smtp_DATA below
        # bounds what it keeps by max_message_bytes itself.
        super().__init__(handler, data_size_limit=None, **kwargs)
        self.border_alerts = handler
        self.max_message_bytes = max_message_bytes

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
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        read = await self._read_data()
        if read is None:
            return  # the connection was lost
        content, size = read
        self.envelope.original_content = self.envelope.content = content
        reply = await self.border_alerts.deliver(content, size)
        recipients = len(self.envelope.rcpt_tos)
        self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd's, untyped
        await self.push("\r\n".join([reply] * recipients))

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
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
