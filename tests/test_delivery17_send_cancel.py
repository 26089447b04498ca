"""A send runs in the delivery worker's own task (asyncio.timeout, since the seventeenth session:
the pace counts from the moment it starts). A cancel of that task, a stop, must still end it: a
notifier that swallows the cancel must not carry the round on into a recorder already cancelled
(the round then never ends, nor the service's stop: review of the change). And the SMTP
notifier's wait for an idle connection's MAIL FROM must not swallow its caller's cancel (the
send's timeout, or a stop) with the one it gave the arming; but a mail the relay has taken stays
sent when the timeout fires during the QUIT after it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aiosmtplib
import pytest

from casewatch.config.sections import SmtpSection
from casewatch.delivery.notifier import Outbound, Outcome, Sent
from casewatch.delivery.worker import Claimed, DeliveryWorker
from integrations.mail_sink import MailSink
from integrations.smtp_notifier import SmtpNotifier, _settled
from tests.test_delivery_smtp import _outbound
from tests.test_delivery_support import (
    T0,
    mail_fixture,  # noqa: F401 (the `mail` fixture)
    make_ctx,
    make_settings,
)


def _claimed() -> Claimed:
    message = Outbound(
        delivery_id=1, alert_id="A-TEST01", change="opened", target="C0NORTH",
        payload={"kind": "travel.unnotified"}, content_hash="h",
    )
    return Claimed(1, "slack", "C0NORTH", T0, message)


class SwallowsACancel:
    """A notifier that, cancelled mid-send, carries on and reports the message sent."""

    channel = "slack"

    def __init__(self) -> None:
        self.sending = asyncio.Event()
        self.swallowed = 0

    async def send(self, message: Outbound) -> Outcome:
        self.sending.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.swallowed += 1
        return Sent("C0NORTH:1")

    async def close(self) -> None:
        return None


class SwallowsACancelThenFails(SwallowsACancel):
    async def send(self, message: Outbound) -> Outcome:
        await super().send(message)
        raise OSError("connection reset")


def _worker(notifier: Any, channel: str = "slack", **delivery: Any) -> DeliveryWorker:
    ctx = make_ctx(make_settings(delivery={"send_timeout_seconds": 5, **delivery}))
    return DeliveryWorker(cast(Any, None), ctx, {channel: notifier}, worker_id="w1")


@pytest.mark.parametrize("kind", [SwallowsACancel, SwallowsACancelThenFails])
async def test_a_cancel_the_notifier_swallows_still_ends_the_send(kind: type[SwallowsACancel]) -> None:
    """Whatever the notifier then returns (sent) or raises."""
    notifier = kind()
    send = asyncio.create_task(_worker(notifier)._send(_claimed()))
    await asyncio.wait_for(notifier.sending.wait(), 5)
    send.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(send, 5)
    assert notifier.swallowed == 1


async def test_the_send_timeout_still_times_out_a_notifier_that_swallows_its_cancel_late() -> None:
    """The timeout's own cancel, swallowed, is the timeout's: the outcome is what the notifier said
    (the worker cannot take a message back), and the task is not left cancelled."""
    notifier = SwallowsACancel()
    worker = _worker(notifier, send_timeout_seconds=1)
    outcome = await asyncio.wait_for(worker._send(_claimed()), 5)
    assert outcome == Sent("C0NORTH:1") and notifier.swallowed == 1
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def _slow_to_cancel(entered: asyncio.Event) -> bool:
    """An arming whose MAIL FROM is unanswered, and which takes a moment to unwind."""
    entered.set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(0.2)
        raise
    return True


async def test_settling_an_arming_does_not_swallow_a_cancel_of_its_caller() -> None:
    entered = asyncio.Event()
    arming = asyncio.create_task(_slow_to_cancel(entered))
    await entered.wait()
    settling = asyncio.create_task(_settled(arming))
    await asyncio.sleep(0.05)  # _settled has cancelled the arming and waits for it to unwind
    settling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(settling, 5)


async def test_a_send_timeout_while_an_arming_is_settled_times_the_send_out() -> None:
    entered = asyncio.Event()
    arming = asyncio.create_task(_slow_to_cancel(entered))
    await entered.wait()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await _settled(arming)
            await asyncio.sleep(5)  # what would follow: a fresh connection and the message
    await asyncio.wait((arming,))


async def test_settled_says_whether_the_arming_was_answered_and_raises_what_it_raised() -> None:
    async def answered() -> bool:
        return False  # refused: not cancelled, so the connection is still QUIT

    async def failed() -> bool:
        raise RuntimeError("arming bug")

    done = asyncio.create_task(answered())
    await asyncio.wait((done,))
    assert await _settled(done) is True
    entered = asyncio.Event()
    waiting = asyncio.create_task(_slow_to_cancel(entered))
    await entered.wait()
    assert await _settled(waiting) is False and waiting.cancelled()
    broken = asyncio.create_task(failed())
    await asyncio.wait((broken,))
    with pytest.raises(RuntimeError, match="arming bug"):
        await _settled(broken)


async def test_a_mail_the_relay_took_stays_sent_when_the_send_times_out_in_its_quit(
    mail: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection not kept is QUIT inside the send, after the relay answered DATA with 250: a
    send timeout during that QUIT (a relay stalling on it) left the mail "timed out", and sent
    again later (a second copy to the SPOC)."""
    spoc = "north.spoc@force.example"
    notifier = SmtpNotifier(
        SmtpSection(host="127.0.0.1", port=mail.port, timeout_seconds=3), frozenset({spoc}), max_idle=0,
    )
    quitting = asyncio.Event()

    async def stuck(self: aiosmtplib.SMTP, **_kw: object) -> None:
        quitting.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(aiosmtplib.SMTP, "quit", stuck)
    worker = _worker(notifier, "email", send_timeout_seconds=1)
    message = _outbound(spoc)
    try:
        outcome = await asyncio.wait_for(
            worker._send(Claimed(message.delivery_id, "email", spoc, T0, message)), 5
        )
    finally:
        await notifier.close()
    assert quitting.is_set()
    assert isinstance(outcome, Sent), outcome
    assert len(mail.messages) == 1
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
