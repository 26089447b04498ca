"""A round's outcomes wait for its other sends still in flight (seventh session, issue 17): a
record transaction's work on the event loop would otherwise sit between another group's SMTP
round trips. Held at most RECORD_HOLD_SECONDS; the same rows, messages and audit as without."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import casewatch.delivery.worker as worker_module
from casewatch.delivery.notifier import Sent
from casewatch.delivery.worker import Claimed, Result, _Recorder
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.test_delivery_handoff import _run_scenario, mail_fixture, two_urls  # noqa: F401 (fixtures)
from tests.test_delivery_support import T0, slack_fixture  # noqa: F401 (the `slack` fixture)


def _result(n: int) -> Result:
    claimed = Claimed(n, "slack", f"C{n}", T0, None, False)  # type: ignore[arg-type]  # not sent
    return claimed, Sent(f"C{n}:1"), 1


@pytest.mark.parametrize("parallel", [1, 2])
async def test_an_outcome_waits_while_another_group_sends_then_both_share_one_transaction(
    parallel: int,
) -> None:
    written: list[tuple[list[int], bool]] = []
    sending_done = asyncio.Event()
    recorder = _Recorder(_writer(written, sending_done), groups=2, parallel=parallel, hold=5.0)
    send_ends = asyncio.Event()

    async def fast() -> None:
        with recorder.send():
            pass
        await recorder.record(_result(1))
        recorder.finished()

    async def slow() -> None:
        with recorder.send():
            await send_ends.wait()
        sending_done.set()
        await recorder.record(_result(2))
        recorder.finished()

    run = asyncio.gather(recorder.run(), fast(), slow())
    await asyncio.sleep(0.05)
    assert written == []  # the first outcome is held while the other group sends
    send_ends.set()
    await asyncio.wait_for(run, 5)
    assert written == [([1, 2], True)]  # after that send, one transaction for both


async def test_the_hold_is_bounded_a_long_send_does_not_keep_an_outcome_unrecorded() -> None:
    written: list[tuple[list[int], bool]] = []
    sending_done = asyncio.Event()
    recorder = _Recorder(_writer(written, sending_done), groups=2, parallel=2, hold=0.05)
    recorded_at: list[float] = []
    loop = asyncio.get_running_loop()

    async def fast() -> None:
        with recorder.send():
            pass
        started = loop.time()
        await recorder.record(_result(1))
        recorded_at.append(loop.time() - started)
        recorder.finished()

    async def slow() -> None:
        with recorder.send():
            await asyncio.sleep(1.0)
        sending_done.set()
        await recorder.record(_result(2))
        recorder.finished()

    await asyncio.wait_for(asyncio.gather(recorder.run(), fast(), slow()), 5)
    assert written == [([1], False), ([2], True)]
    assert 0.04 <= recorded_at[0] < 0.5  # held about `hold`, not for the whole 1 s send


async def test_the_hold_is_one_budget_a_round_not_one_a_message() -> None:
    """Ten messages to one destination in a row while another group's send takes 1 s: only the
    round's first `hold` is waited, not ten."""
    written: list[tuple[list[int], bool]] = []
    sending_done = asyncio.Event()
    recorder = _Recorder(_writer(written, sending_done), groups=2, parallel=2, hold=0.05)
    loop = asyncio.get_running_loop()
    took: list[float] = []

    async def inbox() -> None:
        started = loop.time()
        for n in range(10):
            with recorder.send():
                await asyncio.sleep(0)
            await recorder.record(_result(n))
        took.append(loop.time() - started)
        recorder.finished()

    async def slow() -> None:
        with recorder.send():
            await asyncio.sleep(1.0)
        sending_done.set()
        await recorder.record(_result(99))
        recorder.finished()

    await asyncio.wait_for(asyncio.gather(recorder.run(), inbox(), slow()), 5)
    assert 0.04 <= took[0] < 0.3  # one hold (0.05 s), not ten (0.5 s)
    assert [ids for ids, _ in written][:10] == [[n] for n in range(10)] and written[-1] == ([99], True)


async def test_with_no_other_send_in_flight_an_outcome_is_written_at_once() -> None:
    written: list[tuple[list[int], bool]] = []
    recorder = _Recorder(_writer(written, asyncio.Event()), groups=1, parallel=1, hold=5.0)

    async def alone() -> None:
        with recorder.send():
            pass
        await recorder.record(_result(1))
        recorder.finished()

    await asyncio.wait_for(asyncio.gather(recorder.run(), alone()), 1)  # not held 5 s
    assert written == [([1], False)]


def _writer(written: list[tuple[list[int], bool]], sending_done: asyncio.Event) -> Any:
    async def write(results: list[Result]) -> None:
        written.append(([claimed.delivery_id for claimed, _, _ in results], sending_done.is_set()))

    return write


async def test_held_and_unheld_records_give_the_same_rows_messages_and_audit(
    two_urls: tuple[str, str],  # noqa: F811
    slack: SlackStandIn,
    mail: MailSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three alerts, each to a Slack channel and an inbox (two groups a round, so each round's
    Slack outcome is held for its mail's send), on two fresh databases: held, then as before."""
    monkeypatch.setattr(worker_module, "RECORD_HOLD_SECONDS", 0.03)
    held = await _run_scenario(two_urls[0], slack, mail, handed=True)
    monkeypatch.setattr(worker_module, "RECORD_HOLD_SECONDS", 0.0)
    plain = await _run_scenario(two_urls[1], slack, mail, handed=True)
    assert held == plain
    assert len(plain["deliveries"]) == 6 and len(plain["slack"]) == 3 and len(plain["mail"]) == 3
    assert {d["state"] for d in plain["deliveries"]} == {"sent"}
    assert [e["action"] for e in plain["audit"]].count("delivery.sent") == 6
