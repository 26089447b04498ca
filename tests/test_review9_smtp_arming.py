"""Review (ninth session) of SmtpNotifier's arming (0252c74): a kept connection sends its next
message's MAIL FROM while idle. A server that stalls on MAIL FROM (a slow sender check, a tarpit,
an overloaded relay) while the connection stays up then holds the notifier's close() until the
client's timeout (smtp.timeout_seconds, 30 s by default) for each idle connection, before QUIT:
`casewatch serve` stops that much later (MAX_IDLE connections, one after another). Without the
arming, close() sends QUIT on the idle connection and is done."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from casewatch.config.sections import SmtpSection
from casewatch.delivery.notifier import Sent
from integrations.smtp_notifier import SmtpNotifier
from tests.test_delivery_smtp import _outbound

SPOC = "north.spoc@force.example"
SENDER = "casewatch@force.example"
CLOSE_BOUND_SECONDS = 6.0  # QUIT's own bound (5 s) and a margin


class StallingServer:
    """Minimal SMTP on loopback: the first mail of a connection accepted; any later MAIL FROM on
    it is never answered (the connection stays open), nor anything after it."""

    def __init__(self) -> None:
        self.mails = 0
        self.stalled = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 stall.example ESMTP\r\n")
        mails_here = 0
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-stall.example\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    mails_here += 1
                    if mails_here > 1:
                        self.stalled.set()
                        await reader.read()  # never answers; waits for the client to go
                        return
                    writer.write(b"250 OK\r\n")
                elif verb == b"RCPT":
                    writer.write(b"250 OK\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    await writer.drain()
                    while (await reader.readline()) not in (b".\r\n", b""):
                        pass
                    self.mails += 1
                    writer.write(b"250 OK kept\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        finally:
            writer.close()


@pytest.mark.parametrize(
    "armed",
    [
        True,  # review9 finding 1 (B), fixed: an unanswered arming is cancelled, its connection dropped
        False,
    ],
)
async def test_close_is_not_held_by_a_server_stalling_on_the_idle_mail_from(armed: bool) -> None:
    server = StallingServer()
    port = await server.start()
    notifier = SmtpNotifier(
        SmtpSection(host="127.0.0.1", port=port, sender=SENDER), frozenset({SPOC}), max_idle=2,
        arm_idle=armed, arm_always=True,
    )
    try:
        outcome = await notifier.send(_outbound(SPOC, summary="Border check (fictional)"))
        assert isinstance(outcome, Sent) and server.mails == 1
        if armed:
            await asyncio.wait_for(server.stalled.wait(), 5)  # the idle connection's MAIL is in
        started = time.monotonic()
        try:
            await asyncio.wait_for(notifier.close(), CLOSE_BOUND_SECONDS)
        except TimeoutError:
            pytest.fail(f"close() took over {CLOSE_BOUND_SECONDS} s (smtp.timeout_seconds is 30)")
        assert time.monotonic() - started < CLOSE_BOUND_SECONDS
    finally:
        await server.stop()
