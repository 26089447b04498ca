"""A kept SMTP connection sends its next message's MAIL FROM while idle (ninth session:
SmtpNotifier's `arm_idle`), so that message starts at RCPT: one round trip of four fewer. Against
a scripted aiosmtpd server on loopback, armed and plain notifiers deliver the same mails (sender,
recipient, content) with the same outcomes for every refusal (RCPT, DATA, MAIL), a refused arming
falls back to a new connection, a failed connection is never reused, and a message is Sent only
once the server has accepted its DATA."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

from casewatch.config.sections import SmtpSection
from casewatch.delivery.notifier import Outcome, Sent
from integrations.mail_sink import _Controller
from integrations.smtp_notifier import SmtpNotifier
from tests.test_delivery_smtp import _outbound

SPOC = "north.spoc@force.example"
SENDER = "casewatch@force.example"


class Scripted:
    """aiosmtpd handler: each command answered by its next scripted reply (None: accepted), every
    command logged with its time, accepted mails kept."""

    def __init__(self) -> None:
        self.replies: dict[str, deque[str | None]] = {"MAIL": deque(), "RCPT": deque(), "DATA": deque()}
        self.log: list[tuple[str, float]] = []
        self.kept: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    def _reply(self, command: str) -> str | None:
        with self.lock:
            self.log.append((command, time.monotonic()))
            queue = self.replies[command]
            return queue.popleft() if queue else None

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        reply = self._reply("MAIL")
        if reply:
            return reply
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        reply = self._reply("RCPT")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        reply = self._reply("DATA")
        if reply:
            return reply
        with self.lock:
            self.kept.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 2.0.0 OK: kept"

    def commands(self) -> list[str]:
        with self.lock:
            return [command for command, _ in self.log]


@pytest.fixture
def servers() -> Iterator[tuple[tuple[Scripted, int], tuple[Scripted, int]]]:
    """Two scripted servers: one for the armed notifier, one for the plain."""
    started = []
    try:
        for _ in range(2):
            handler = Scripted()
            controller = _Controller(handler, hostname="127.0.0.1", port=0)
            controller.start()
            started.append((handler, controller))
        yield (started[0][0], started[0][1].port), (started[1][0], started[1][1].port)
    finally:
        for _, controller in started:
            controller.stop()


def _notifier(port: int, *, armed: bool) -> SmtpNotifier:
    smtp = SmtpSection(host="127.0.0.1", port=port, sender=SENDER)
    return SmtpNotifier(smtp, frozenset({SPOC}), max_idle=2, arm_idle=armed, arm_always=True)


async def _armed(handler: Scripted, mails: int) -> None:
    """Until the server has seen the idle connection's MAIL for the next message."""
    for _ in range(200):
        if handler.commands().count("MAIL") > mails:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no MAIL while idle")


def _neutral(raw: bytes) -> bytes:
    """The mail without what differs between two builds of it: its Date and MIME boundary."""
    raw = re.sub(rb"Date: [^\r\n]*", b"Date: <date>", raw)
    return re.sub(rb"={15}\d{19}==", b"<boundary>", raw)


def _described(outcome: Outcome) -> tuple[str, str]:
    return type(outcome).__name__, str(getattr(outcome, "error", getattr(outcome, "external_ref", "")))


async def test_armed_sends_start_at_rcpt_and_deliver_what_plain_sends_deliver(
    servers: tuple[tuple[Scripted, int], tuple[Scripted, int]]
) -> None:
    (armed_server, armed_port), (plain_server, plain_port) = servers
    armed, plain = _notifier(armed_port, armed=True), _notifier(plain_port, armed=False)
    messages = [_outbound(SPOC, summary=f"Border check {n} (fictional)") for n in range(3)]
    try:
        armed_outcomes, plain_outcomes = [], []
        for n, message in enumerate(messages):
            plain_outcomes.append(await plain.send(message))
            before = len(armed_server.kept)
            outcome = await armed.send(message)
            # Sent only once the server kept it (its DATA accepted).
            assert isinstance(outcome, Sent) and len(armed_server.kept) == before + 1
            armed_outcomes.append(outcome)
            await _armed(armed_server, n + 1)
        assert [_described(o) for o in armed_outcomes] == [_described(o) for o in plain_outcomes]
        assert all(isinstance(o, Sent) for o in armed_outcomes)
        assert armed.connects == plain.connects == 1
        # The next message's MAIL went while idle: each send after the first is RCPT, DATA.
        assert armed_server.commands() == ["MAIL", "RCPT", "DATA"] + ["MAIL", "RCPT", "DATA"] * 2 + ["MAIL"]
        assert plain_server.commands() == ["MAIL", "RCPT", "DATA"] * 3
        assert [(f, t, _neutral(raw)) for f, t, raw in armed_server.kept] == [
            (f, t, _neutral(raw)) for f, t, raw in plain_server.kept
        ]
        assert [f for f, _, _ in armed_server.kept] == [SENDER] * 3
    finally:
        await armed.close()
        await plain.close()


REFUSALS = [
    ("RCPT", "550 5.1.1 No such user"),
    ("RCPT", "451 4.3.0 Try again later"),
    ("RCPT", "530 5.7.0 Authentication required"),
    ("DATA", "554 5.6.0 Refused"),
    ("DATA", "451 4.3.0 Try again later"),
]


@pytest.mark.parametrize(("command", "reply"), REFUSALS)
async def test_a_refusal_on_an_armed_connection_is_what_plain_gets(
    servers: tuple[tuple[Scripted, int], tuple[Scripted, int]], command: str, reply: str
) -> None:
    (armed_server, armed_port), (plain_server, plain_port) = servers
    armed, plain = _notifier(armed_port, armed=True), _notifier(plain_port, armed=False)
    try:
        for notifier, server in ((armed, armed_server), (plain, plain_server)):
            assert isinstance(await notifier.send(_outbound(SPOC)), Sent)
            server.replies[command].append(reply)
        await _armed(armed_server, 1)
        refused = await armed.send(_outbound(SPOC))
        assert _described(refused) == _described(await plain.send(_outbound(SPOC)))
        assert not isinstance(refused, Sent) and reply in _described(refused)[1]
        # A failed connection is not reused: the next mail opens another, and goes.
        assert isinstance(await armed.send(_outbound(SPOC)), Sent)
        assert isinstance(await plain.send(_outbound(SPOC)), Sent)
        assert armed.connects == plain.connects == 2
        assert len(armed_server.kept) == len(plain_server.kept) == 2
    finally:
        await armed.close()
        await plain.close()


async def test_a_refused_arming_falls_back_to_a_new_connection(
    servers: tuple[tuple[Scripted, int], tuple[Scripted, int]]
) -> None:
    (armed_server, armed_port), (plain_server, plain_port) = servers
    armed, plain = _notifier(armed_port, armed=True), _notifier(plain_port, armed=False)
    try:
        # The idle connection's MAIL is refused: the next mail goes on a new connection.
        armed_server.replies["MAIL"].extend([None, "451 4.3.0 Busy"])
        assert isinstance(await armed.send(_outbound(SPOC)), Sent)
        await _armed(armed_server, 1)
        assert isinstance(await armed.send(_outbound(SPOC)), Sent)
        assert armed.connects == 2 and len(armed_server.kept) == 2
        # Refused again there, its MAIL gets what the plain path gets for a refused MAIL.
        await _armed(armed_server, 3)
        armed_server.replies["MAIL"].extend(["421 4.3.2 Closing", "451 4.3.0 Busy"])
        # (the idle connection's arming was accepted before the script: spend it first)
        assert isinstance(await armed.send(_outbound(SPOC)), Sent)
        await _armed(armed_server, 4)
        assert isinstance(await plain.send(_outbound(SPOC)), Sent)
        plain_server.replies["MAIL"].append("451 4.3.0 Busy")
        refused = await armed.send(_outbound(SPOC))
        assert _described(refused) == _described(await plain.send(_outbound(SPOC)))
        assert _described(refused) == ("Retryable", "451 4.3.0 Busy")
    finally:
        await armed.close()
        await plain.close()
