"""Review (tenth session) of the SMTP notifier's armed MAIL FROM on idle kept connections (ninth
session, 0252c74 and aff383b) against a relay that misbehaves between and during messages: it
restarts between two messages (before or after answering the idle connection's MAIL), answers the
idle MAIL with 421 (shutting down), sends an unsolicited 421 while idle but keeps the socket open,
answers MAIL slowly, drops the connection in the middle of a message. For each, armed and plain
notifiers: a message is Sent only when the relay kept it, every message the relay kept is one
that was Sent (nothing twice), one not Sent is Retryable (the worker sends it again: nothing lost),
and the next message goes. Where the arming makes a difference it is to the better (a refused
idle MAIL costs a new connection, not a failed message)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from casewatch.config.sections import SmtpSection
from casewatch.delivery.notifier import Outcome, Retryable, Sent
from integrations.smtp_notifier import SmtpNotifier
from tests.test_delivery_smtp import _outbound

SPOC = "north.spoc@force.example"
SENDER = "casewatch@force.example"


@dataclass
class Relay:
    """A scripted relay on loopback. `on_mail(connection, mail)` (both counted from 1, `mail` on
    that connection) says what to do with a MAIL FROM: "ok", "421" (answer 421 and close), "421
    open" (answer 421, keep the socket), "close" (close without answering), "delay:<s>" (answer
    250 after s seconds), "ok then close:<s>" (answer 250, close s seconds later), "ok then
    421:<s>" (answer 250, send an unsolicited 421 s seconds later, keep the socket), "ok then
    forget:<s>" (answer 250, drop the envelope s seconds later, as a relay whose transaction timed
    out while the connection stays up: a RCPT then gets 503 "need MAIL command"), "reply:<reply>"
    (refuse with that reply, the connection kept). `on_data`
    the same for the end of DATA: "ok", "close" (close before answering; the mail is kept), "drop"
    (close before answering; not kept), "ok then close:<s>" and "ok then 421:<s>" (answer 250, then
    as for MAIL: while the connection idles)."""

    on_mail: Callable[[int, int], str] = lambda c, m: "ok"
    on_data: Callable[[int, int], str] = lambda c, m: "ok"
    kept: list[bytes] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 1)

    async def _later(self, seconds: float, writer: asyncio.StreamWriter, reply: bytes | None) -> None:
        await asyncio.sleep(seconds)
        if reply is not None:
            writer.write(reply)
            with contextlib.suppress(Exception):
                await writer.drain()
        else:
            writer.close()

    async def _forget(self, seconds: float, envelope: dict[str, bool]) -> None:
        await asyncio.sleep(seconds)
        envelope["open"] = False

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection, mails, datas = self.connections, 0, 0
        envelope = {"open": False}  # a MAIL accepted and not yet ended by DATA or RSET
        writer.write(b"220 relay.example ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-relay.example\r\n250 8BITMIME\r\n")
                elif verb == b"MAIL":
                    mails += 1
                    action = self.on_mail(connection, mails)
                    if action == "close":
                        return
                    if action.startswith("reply:"):  # refused with this reply, the connection kept
                        writer.write(action.removeprefix("reply:").encode() + b"\r\n")
                        await writer.drain()
                        continue
                    if action in ("421", "421 open"):
                        writer.write(b"421 4.3.2 Service shutting down\r\n")
                        if action == "421":
                            await writer.drain()
                            return
                    elif action.startswith("delay:"):
                        await asyncio.sleep(float(action.split(":")[1]))
                        writer.write(b"250 OK\r\n")
                        envelope["open"] = True
                    else:
                        writer.write(b"250 OK\r\n")
                        envelope["open"] = True
                        if action.startswith("ok then forget:"):  # the relay drops the envelope
                            self.tasks.append(asyncio.create_task(
                                self._forget(float(action.split(":")[1]), envelope)))
                        if action.startswith("ok then close:"):
                            self.tasks.append(asyncio.create_task(
                                self._later(float(action.split(":")[1]), writer, None)))
                        elif action.startswith("ok then 421:"):
                            self.tasks.append(asyncio.create_task(self._later(
                                float(action.split(":")[1]), writer, b"421 4.3.2 Shutting down\r\n")))
                elif verb == b"RCPT":
                    if envelope["open"]:
                        writer.write(b"250 OK\r\n")
                    else:
                        writer.write(b"503 5.5.1 Error: need MAIL command\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    await writer.drain()
                    body = []
                    while (data := await reader.readline()) not in (b".\r\n", b""):
                        body.append(data)
                    datas += 1
                    envelope["open"] = False
                    action = self.on_data(connection, datas)
                    if action != "drop":
                        self.kept.append(b"".join(body))
                    if action in ("close", "drop"):
                        return
                    writer.write(b"250 OK kept\r\n")
                    if action.startswith("ok then close:"):  # a restart while the connection idles
                        self.tasks.append(asyncio.create_task(
                            self._later(float(action.split(":")[1]), writer, None)))
                    elif action.startswith("ok then 421:"):  # out of turn while it idles
                        self.tasks.append(asyncio.create_task(self._later(
                            float(action.split(":")[1]), writer, b"421 4.3.2 Shutting down\r\n")))
                elif verb == b"RSET":
                    envelope["open"] = False
                    writer.write(b"250 OK\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    r = Relay()
    await r.start()
    yield r
    await r.stop()


def _notifier(port: int, *, armed: bool) -> SmtpNotifier:
    smtp = SmtpSection(host="127.0.0.1", port=port, sender=SENDER, timeout_seconds=3)
    return SmtpNotifier(smtp, frozenset({SPOC}), max_idle=2, arm_idle=armed, arm_always=True)


async def _sends(relay: Relay, armed: bool, count: int, pause: float = 0.15) -> list[Outcome]:
    """`count` messages one after another, `pause` apart (the idle connection's arming and the
    relay's doings in between)."""
    notifier = _notifier(await _port(relay), armed=armed)
    outcomes = []
    try:
        for n in range(count):
            outcomes.append(await notifier.send(_outbound(SPOC, summary=f"Border check {n} (fictional)")))
            await asyncio.sleep(pause)
    finally:
        await notifier.close()
    return outcomes


async def _port(relay: Relay) -> int:
    assert relay.server is not None
    return int(relay.server.sockets[0].getsockname()[1])


def _kinds(outcomes: list[Outcome]) -> list[str]:
    return [type(o).__name__ for o in outcomes]


def _kept_each_sent_once(relay: Relay, outcomes: list[Outcome]) -> None:
    """Every Sent message kept exactly once, nothing else kept; what was not Sent is Retryable."""
    sent = [o for o in outcomes if isinstance(o, Sent)]
    assert len(relay.kept) == len(sent), (len(relay.kept), _kinds(outcomes))
    for n, outcome in enumerate(outcomes):
        found = sum(f"Border check {n} (fictional)".encode() in raw for raw in relay.kept)
        assert found == (1 if isinstance(outcome, Sent) else 0), (n, _kinds(outcomes))
        assert isinstance(outcome, Sent | Retryable), outcome


@pytest.mark.parametrize("armed", [True, False])
async def test_a_relay_restart_while_the_connection_idles(relay: Relay, armed: bool) -> None:
    """The relay takes a message, then restarts (closes the connection) while it idles: after
    answering the idle connection's MAIL when it is armed."""
    relay.on_data = lambda c, d: "ok then close:0.1" if (c, d) == (1, 1) else "ok"
    outcomes = await _sends(relay, armed, 3, pause=0.4)
    _kept_each_sent_once(relay, outcomes)
    # The closed connection is seen closed and not used: every message goes.
    assert _kinds(outcomes) == ["Sent"] * 3


@pytest.mark.parametrize("armed", [True, False])
async def test_a_relay_that_closes_instead_of_answering_mail(relay: Relay, armed: bool) -> None:
    relay.on_mail = lambda c, m: "close" if m == 2 else "ok"
    outcomes = await _sends(relay, armed, 3)
    _kept_each_sent_once(relay, outcomes)
    if armed:  # the arming met the close: the next message went on a new connection
        assert _kinds(outcomes) == ["Sent"] * 3
    else:  # the message's own MAIL met it: retried by the worker
        assert _kinds(outcomes)[0] == "Sent" and _kinds(outcomes).count("Retryable") <= 1


@pytest.mark.parametrize("armed", [True, False])
async def test_a_421_at_the_idle_mail(relay: Relay, armed: bool) -> None:
    relay.on_mail = lambda c, m: "421" if m == 2 else "ok"
    outcomes = await _sends(relay, armed, 3)
    _kept_each_sent_once(relay, outcomes)
    if armed:
        assert _kinds(outcomes) == ["Sent"] * 3
    else:
        assert _kinds(outcomes)[1] == "Retryable" and "421" in str(outcomes[1])


@pytest.mark.parametrize("armed", [True, False])
async def test_an_unsolicited_421_while_idle_on_an_open_socket(relay: Relay, armed: bool) -> None:
    """The relay takes a message, then (after accepting the idle MAIL when armed) says 421 out of
    turn while the connection idles, and keeps the socket open."""
    relay.on_data = lambda c, d: "ok then 421:0.1" if (c, d) == (1, 1) else "ok"
    outcomes = await _sends(relay, armed, 3, pause=0.4)
    _kept_each_sent_once(relay, outcomes)
    assert _kinds(outcomes)[0] == "Sent" and _kinds(outcomes)[2] == "Sent"


@pytest.mark.parametrize("armed", [True, False])
async def test_a_slow_answer_to_mail(relay: Relay, armed: bool) -> None:
    relay.on_mail = lambda c, m: "delay:0.4" if m >= 2 else "ok"
    outcomes = await _sends(relay, armed, 3, pause=0.05)
    _kept_each_sent_once(relay, outcomes)
    assert _kinds(outcomes) == ["Sent"] * 3


@pytest.mark.parametrize("armed", [True, False])
async def test_a_connection_dropped_at_the_end_of_data(relay: Relay, armed: bool) -> None:
    """The relay drops the connection at the end of DATA without keeping the mail: Retryable,
    never Sent; the next message goes on a new connection."""
    relay.on_data = lambda c, d: "drop" if (c, d) == (1, 2) else "ok"
    outcomes = await _sends(relay, armed, 3)
    _kept_each_sent_once(relay, outcomes)
    assert _kinds(outcomes) == ["Sent", "Retryable", "Sent"]


@pytest.mark.parametrize("armed", [True, False])
async def test_a_relay_that_keeps_each_mail_but_closes_before_its_250(relay: Relay, armed: bool) -> None:
    """The relay keeps each mail and closes before answering DATA (a restart at that instant): the
    connection is gone each time, a new one is opened for each message."""
    relay.on_data = lambda c, d: "close"
    outcomes = await _sends(relay, armed, 3)
    # The relay kept each mail but never said 250: Retryable, and the worker sends it again. What
    # matters here is that the arming does not make it worse: the same outcomes either way.
    assert _kinds(outcomes) == ["Retryable"] * 3
    assert len(relay.kept) == 3


# review10 finding 1 (fixed): a 503 at RCPT on an armed connection is the relay's word that it
# dropped the idle envelope; the message goes with its whole envelope on a new connection.
@pytest.mark.parametrize("armed", [True, False])
async def test_a_relay_that_drops_the_idle_envelope(relay: Relay, armed: bool) -> None:
    """The relay accepts the idle connection's MAIL, then drops that envelope while the connection
    stays up; the next message must still go (at worst be retried), never be refused for good."""
    relay.on_mail = lambda c, m: "ok then forget:0.15" if m >= 2 else "ok"
    outcomes = await _sends(relay, armed, 3, pause=0.4)
    _kept_each_sent_once(relay, outcomes)
    assert _kinds(outcomes) == ["Sent"] * 3, [str(o)[:120] for o in outcomes]


# review10 finding 2 (fixed): a kept connection is armed only when its message came on it while it
# idled (SmtpNotifier._keep): sparse mail, each message on a new connection, is sent as the plain path.
@pytest.mark.parametrize("armed", [True, False])
async def test_a_relay_limiting_mail_requests_per_client(relay: Relay, armed: bool) -> None:
    """A relay that takes at most four MAIL FROM a client in its window (as Postfix's anvil
    counts them) and alert mail sparser than the notifier's idle time: the plain path's four
    messages are four requests, all taken."""
    requests: list[int] = []

    def limited(connection: int, mail: int) -> str:
        requests.append(connection)
        return "reply:450 4.7.1 Error: too much mail from 127.0.0.1" if len(requests) > 4 else "ok"

    relay.on_mail = limited
    notifier = SmtpNotifier(SmtpSection(host="127.0.0.1", port=await _port(relay), sender=SENDER,
                                        timeout_seconds=3),
                            frozenset({SPOC}), max_idle=2, arm_idle=armed, idle_seconds=0.1)
    outcomes = []
    try:
        for n in range(4):
            outcomes.append(await notifier.send(_outbound(SPOC, summary=f"Border check {n} (fictional)")))
            await asyncio.sleep(0.4)  # sparser than idle_seconds: the idle connection is reaped
    finally:
        await notifier.close()
    _kept_each_sent_once(relay, outcomes)
    assert _kinds(outcomes) == ["Sent"] * 4, (len(requests), _kinds(outcomes))


@pytest.mark.parametrize("armed", [True, False])
async def test_a_relay_that_answers_every_rcpt_with_503(relay: Relay, armed: bool) -> None:
    """A relay that, after a first message, drops every envelope at once (every RCPT then gets
    503): the armed path's retry on a new connection (finding 1's fix) is made once, not again and
    again, and the outcome is the plain path's."""
    relay.on_mail = lambda c, m: "ok" if (c, m) == (1, 1) else "ok then forget:0"
    notifier = _notifier(await _port(relay), armed=armed)
    try:
        first = await notifier.send(_outbound(SPOC, summary="Border check 0 (fictional)"))
        await asyncio.sleep(0.1)
        second = await notifier.send(_outbound(SPOC, summary="Border check 1 (fictional)"))
    finally:
        await notifier.close()
    assert _kinds([first, second]) == ["Sent", "Permanent"]
    assert "503" in str(second) and len(relay.kept) == 1
    assert notifier.connects == (2 if armed else 1)
