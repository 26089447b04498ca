"""An LMTP listener (aiosmtpd, RFC 2033) for a forwarding rule: the SPOC mailbox's server (or an
MTA) delivers a copy of each border-alert report to it.

The reply to DATA is the durable outcome: 250 only after the mail's event (or its kept item)
committed; 451 (temporary: the sender keeps the mail and retries) when the database cannot be
reached or anything else went wrong. A mail larger than max_message_bytes is refused by aiosmtpd
with 552 (SIZE is advertised, so a well-behaved sender does not even try); the forwarding rule's
original stays in the SPOC's mailbox. LMTP wants one reply per accepted recipient: each gets
the same one, as the mail is handled once.

Runs in the caller's event loop (the database engine's), on loopback only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.lmtp import LMTP

from casewatch.store.errors import is_unavailable
from integrations.mail_ingest.process import MailProcessor, Outcome

log = logging.getLogger(__name__)
STORED = "250 2.0.0 OK: stored"
UNAVAILABLE = "451 4.3.0 Database unavailable: try again later"
FAILED = "451 4.3.0 Could not be processed: try again later"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class _Lmtp(LMTP):
    # RFC 5321 lines are at most 1000 octets, but generated reports break that; what is read is
    # still bounded by the data size limit (max_message_bytes).
    line_length_limit = 64 * 1024


class BorderAlertHandler:
    """aiosmtpd's handler: every recipient accepted (the listener is the forwarding rule's own)."""

    def __init__(self, processor: MailProcessor) -> None:
        self.processor = processor
        self.outcomes: list[Outcome] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        try:
            outcome = await self.processor.handle(bytes(raw))
        except Exception as exc:
            if is_unavailable(exc):
                log.warning("mail-ingest: database unavailable; LMTP answered 451 (the sender retries)")
                reply = UNAVAILABLE
            else:
                log.exception("mail-ingest: a mail could not be handled; LMTP answered 451")
                reply = FAILED
        else:
            self.outcomes.append(outcome)
            reply = STORED
        return "\r\n".join([reply] * max(1, len(envelope.rcpt_tos)))


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
                self.handler, data_size_limit=self.max_message_bytes, enable_SMTPUTF8=True,
                hostname="casewatch", ident="casewatch mail-ingest", loop=loop,
            )

        self._server = await loop.create_server(protocol, self.host, self._port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
