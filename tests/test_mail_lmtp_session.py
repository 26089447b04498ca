"""The LMTP listener's session with a client written by hand on loopback: a client that
half-closes after the final dot still gets its replies and its mail stored; a connection lost
while a mail is being handled leaves the handling to finish (nothing half-written); LHLO
advertises PIPELINING and ENHANCEDSTATUSCODES (RFC 2033 section 5) and every reply after it
carries an enhanced status code (RFC 2034); pipelined commands are answered in order."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import pytest

from integrations.mail_ingest.lmtp import STORED, LmtpListener, with_enhanced_code
from integrations.mail_ingest.process import MailProcessor, Outcome
from integrations.mail_ingest.samples import border_alert_mail
from tests.test_mail_support import REF, SENDER, border_events, mail_service

ENHANCED_REPLY = re.compile(r"[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3} .*")


def _mail(minute: int) -> bytes:
    """A report of its own (its own check time: its own event), dot-stuffed, ending CRLF."""
    raw = border_alert_mail(checked=f"19/11/2026 17:{minute:02d}", message_id=f"<s{minute}@x.example>")
    return b"".join(b"." + line if line.startswith(b".") else line for line in raw.splitlines(keepends=True))


def _envelope(recipients: int) -> bytes:
    rcpts = b"".join(b"RCPT TO:<spoc%d@force.example>\r\n" % n for n in range(recipients))
    return b"MAIL FROM:<" + SENDER.encode() + b">\r\n" + rcpts + b"DATA\r\n"


def _read_all(conn: socket.socket, timeout: float = 10.0) -> list[str]:
    """Every reply line until the server closes the connection (a test fails on the timeout)."""
    conn.settimeout(timeout)
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data.decode().splitlines()


def _half_closing_session(
    port: int, minute: int, recipients: int, pause: float, quit_first: bool
) -> list[str]:
    """LHLO, a transaction, the final dot (and QUIT if `quit_first`), then shutdown(SHUT_WR)
    `pause` seconds later; every line the server sent, up to its close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        stream = conn.makefile("rb")
        assert stream.readline().startswith(b"220")
        conn.sendall(b"LHLO test\r\n" + _envelope(recipients))
        line = stream.readline()
        while not line.startswith(b"354"):
            line = stream.readline()
        conn.sendall(_mail(minute) + b".\r\n" + (b"QUIT\r\n" if quit_first else b""))
        if pause:
            time.sleep(pause)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(10)
        rest = stream.read()  # up to the server's close (a timeout fails the test)
    return rest.decode().splitlines()


@pytest.mark.parametrize("pause", [0.0, 0.002, 0.02])
async def test_a_client_half_closing_after_the_dot_gets_every_reply(db_url: str, pause: float) -> None:
    async with mail_service(db_url) as (service, processor):
        listener = await LmtpListener(processor, "127.0.0.1", 0, 1024 * 1024).start()
        try:
            replies = [
                await asyncio.to_thread(_half_closing_session, listener.port, minute, 2, pause, quit_first)
                for minute, quit_first in [(1, False), (2, True)]
            ]
            # The listener still serves a client after them.
            after = await asyncio.to_thread(_half_closing_session, listener.port, 3, 1, 0.0, True)
        finally:
            await listener.stop()
        assert replies[0] == [STORED, STORED]  # then the server closed: nothing more to say
        assert replies[1] == [STORED, STORED, "221 2.0.0 Bye"]  # the QUIT sent before the EOF
        assert after == [STORED, "221 2.0.0 Bye"]
        assert [o.kind for o in listener.handler.outcomes] == ["ingested"] * 3
        assert len(await border_events(service)) == 3


async def test_a_client_half_closing_before_the_dot_stores_nothing(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        listener = await LmtpListener(processor, "127.0.0.1", 0, 1024 * 1024).start()

        def cut_short() -> list[str]:
            with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as conn:
                conn.sendall(b"LHLO test\r\n" + _envelope(1))
                time.sleep(0.1)
                conn.sendall(_mail(4)[:200])  # no final dot
                conn.shutdown(socket.SHUT_WR)
                return _read_all(conn)

        try:
            lines = await asyncio.to_thread(cut_short)
        finally:
            await listener.stop()
        assert lines[-1].startswith("354")  # no reply to a mail that never ended, and closed
        assert len(listener.handler.outcomes) == 0 and listener.handler.outcomes.unhandled == 0
        assert await border_events(service) == []


class GatedProcessor(MailProcessor):
    """Handles a mail only once the test opens the gate (the connection is gone by then)."""

    def __init__(self, inner: MailProcessor) -> None:
        super().__init__(inner.sessions, inner.ctx, inner.config, inner.template)
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def handle(self, raw: bytes, *, size: int | None = None) -> Outcome:
        self.started.set()
        await self.gate.wait()
        return await super().handle(raw, size=size)


@pytest.mark.parametrize("how", ["half-close", "close", "reset"])
async def test_a_connection_lost_while_a_mail_is_handled_leaves_it_to_finish(db_url: str, how: str) -> None:
    async with mail_service(db_url) as (service, processor):
        gated = GatedProcessor(processor)
        listener = await LmtpListener(gated, "127.0.0.1", 0, 1024 * 1024).start()
        conn = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", listener.port), 10)
        try:
            await asyncio.to_thread(conn.sendall, b"LHLO test\r\n" + _envelope(1))
            await asyncio.sleep(0.1)
            await asyncio.to_thread(conn.sendall, _mail(5) + b".\r\n")
            await asyncio.wait_for(gated.started.wait(), 10)
            if how == "half-close":
                conn.shutdown(socket.SHUT_WR)
            elif how == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
            else:
                conn.close()
            await asyncio.sleep(0.2)  # the server has seen the EOF or the loss by now
            assert await border_events(service) == []
            gated.gate.set()
            if how == "half-close":
                lines = await asyncio.to_thread(_read_all, conn)
                assert lines[-1] == STORED  # answered on the half-closed connection, then closed
        finally:
            conn.close()
            await listener.stop()  # waits for the mail being handled
        assert [o.kind for o in listener.handler.outcomes] == ["ingested"]
        assert [ref for _, ref in await border_events(service)] == [REF]


def _pipelined(port: int) -> list[str]:
    """Two transactions, each with its commands sent in one write (RFC 2920), then QUIT."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        stream = conn.makefile("rb")
        lines = [stream.readline().decode().rstrip()]
        conn.sendall(b"LHLO test\r\n" + _envelope(2))
        while not lines[-1].startswith("354"):
            lines.append(stream.readline().decode().rstrip())
        conn.sendall(_mail(6) + b".\r\n" + _envelope(1))
        while not lines[-1].startswith("354"):
            lines.append(stream.readline().decode().rstrip())
        conn.sendall(_mail(7) + b".\r\nNOOP\r\nBOGUS\r\nRSET\r\nQUIT\r\n")
        conn.settimeout(10)
        lines += stream.read().decode().splitlines()
    return lines


async def test_lhlo_advertises_pipelining_and_enhanced_status_codes(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        listener = await LmtpListener(processor, "127.0.0.1", 0, 1024 * 1024).start()
        try:
            lines = await asyncio.to_thread(_pipelined, listener.port)
        finally:
            await listener.stop()
    greeting, lhlo = lines[0], [line for line in lines if line.startswith("250-") or line == "250 HELP"]
    assert greeting.startswith("220 ") and not ENHANCED_REPLY.fullmatch(greeting)
    assert "250-PIPELINING" in lhlo and "250-ENHANCEDSTATUSCODES" in lhlo and lhlo[-1] == "250 HELP"
    after_lhlo = lines[1 + len(lhlo):]
    assert after_lhlo == [
        "250 2.0.0 OK", "250 2.0.0 OK", "250 2.0.0 OK", "354 End data with <CR><LF>.<CR><LF>",
        STORED, STORED, "250 2.0.0 OK", "250 2.0.0 OK", "354 End data with <CR><LF>.<CR><LF>",
        STORED, "250 2.0.0 OK", '500 5.5.2 Error: command "BOGUS" not recognized', "250 2.0.0 OK",
        "221 2.0.0 Bye",
    ]
    assert [o.kind for o in listener.handler.outcomes] == ["ingested", "ingested"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
        ("501 Syntax: DATA", "501 5.5.4 Syntax: DATA"),
        ("421 4.7.0 DATA sent too many times", "421 4.7.0 DATA sent too many times"),  # has one
        ("451 Whatever", "451 4.0.0 Whatever"),
        ("250-Supported", "250-2.0.0 Supported"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),  # 3xx: none
        (STORED, STORED),
    ],
)
def test_with_enhanced_code(reply: str, expected: str) -> None:
    assert with_enhanced_code(reply) == expected
