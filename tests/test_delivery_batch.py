"""Fewer transactions a message (issue 17): the claim reads what sending needs in its own
statement, and one round's outcomes share commits, each still committed before its group's next
message and before the round ends. Both databases where it touches SQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import resolve
from casewatch.delivery.claim import LEASE_EXPIRED, claim_rows
from casewatch.delivery.notifier import Sent
from casewatch.delivery.worker import Claimed, Result, _Recorder
from casewatch.store.models import Alert, AlertThread, Delivery, DeliveryAttempt
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.test_delivery_support import (
    T0,
    audits,
    deliveries,
    make_ctx,
    make_settings,
    make_worker,
    open_test_alert,
    setup_directory,
    slack_fixture,  # noqa: F401 (the `slack` fixture)
)

Sessions = async_sessionmaker[AsyncSession]
TEAM_ONLY = {"routes": {"travel.unnotified": ["team_channel"]}}


def _statements(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


async def test_the_claim_reads_message_thread_and_order_in_one_statement(
    engine: AsyncEngine, sessions: Sessions, slack: SlackStandIn
) -> None:
    ctx = make_ctx(make_settings(slack_url=slack.url, routing=TEAM_ONLY))
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)
    async with sessions.begin() as session:
        [first] = (await session.execute(select(Delivery))).scalars()
        session.add(AlertThread(alert_id=alert.id, channel=first.channel, target=first.target,
                                external_ref="C0NORTH:1.000", created_at=T0))
        first.last_error = LEASE_EXPIRED  # as a takeover from a dead worker leaves it
        live = await session.get(Alert, alert.id)
        assert live is not None
        await resolve(session, live, "border check matched a notification", ctx)
    expected = {d.id: d for d in await deliveries(sessions)}
    assert len(expected) == 2

    seen = _statements(engine)
    async with sessions.begin() as session:
        rows = await claim_rows(session, "w1", T0, T0.replace(hour=T0.hour + 1), 10)
    assert len([s for s in seen if s.lstrip().upper().startswith(("UPDATE", "SELECT"))]) == 1
    assert [r.id for r in rows] == sorted(expected)
    for row in rows:
        d = expected[row.id]
        assert (row.channel, row.target, row.alert_id, row.purpose, row.payload, row.content_hash) == (
            d.channel, d.target, d.alert_id, d.purpose, d.payload, d.content_hash
        )
        assert row.thread_ref == "C0NORTH:1.000" and row.claimed_until == T0.replace(hour=T0.hour + 1)
    # The update waits for the first message (claimed in the same batch); the first does not wait.
    assert [r.after_earlier for r in rows] == [False, True]
    assert rows[0].last_error == LEASE_EXPIRED


async def test_a_round_records_with_no_read_transaction_and_the_same_audit_entries(
    engine: AsyncEngine, sessions: Sessions, slack: SlackStandIn
) -> None:
    mail = MailSink().start()
    try:
        ctx = make_ctx(make_settings(slack_url=slack.url, smtp_port=mail.port))
        await setup_directory(sessions, ctx.settings)
        for n in range(3):
            await open_test_alert(sessions, ctx, subject=f"s{n}")
        worker, _ = make_worker(sessions, ctx)
        commits: list[int] = []
        event.listen(engine.sync_engine, "commit", lambda conn: commits.append(1))
        handled = await worker.run_once()
    finally:
        mail.stop()
    rows = await deliveries(sessions)
    assert handled == len(rows) >= 6 and {d.state for d in rows} == {"sent"}
    # One claim, then at most one commit an outcome (before: a read and a record each).
    assert 2 <= len(commits) <= 1 + len(rows)
    entries = {e.details["delivery"]: e for e in await audits(sessions, "delivery.sent")}
    async with sessions() as session:
        attempts = list((await session.execute(select(DeliveryAttempt))).scalars())
    assert sorted(a.delivery_id for a in attempts) == [d.id for d in rows]
    for d in rows:
        entry = entries[d.id]
        assert entry.subject == d.alert_id and entry.actor == "system"
        assert entry.details == {
            "delivery": d.id, "receiver": d.receiver, "channel": d.channel, "target": d.target,
            "change": d.purpose, "content_hash": d.content_hash, "attempt": 1,
        }


def _result(n: int) -> Result:
    claimed = Claimed(n, "slack", f"C{n}", T0, None, False)  # type: ignore[arg-type] (not sent)
    return claimed, Sent(f"C{n}:1"), 1


async def test_outcomes_that_land_together_share_a_transaction_and_a_bad_one_spoils_none() -> None:
    written: list[list[int]] = []

    async def write(results: list[Result]) -> None:
        ids = [claimed.delivery_id for claimed, _, _ in results]
        if 2 in ids and len(ids) > 1:
            raise RuntimeError("the shared transaction failed")
        written.append(ids)
        if ids == [2]:
            raise RuntimeError("this outcome cannot be recorded")

    recorder = _Recorder(write, groups=3, parallel=1)
    outcomes: list[Any] = []

    async def group(n: int) -> None:
        try:
            await recorder.record(_result(n))
            outcomes.append(n)
        except RuntimeError as exc:
            outcomes.append(str(exc))
        finally:
            recorder.finished()

    await asyncio.gather(recorder.run(), group(1), group(2), group(3))
    assert written == [[1], [2], [3]]  # the shared one failed: each again on its own
    assert sorted(map(str, outcomes)) == ["1", "3", "this outcome cannot be recorded"]

    together: list[list[int]] = []

    async def fine(results: list[Result]) -> None:
        together.append([claimed.delivery_id for claimed, _, _ in results])

    recorder = _Recorder(fine, groups=3, parallel=1)

    async def quiet(n: int) -> None:
        await recorder.record(_result(n))
        recorder.finished()

    await asyncio.gather(recorder.run(), *(quiet(n) for n in (1, 2, 3)))
    assert together == [[1, 2, 3]]


async def test_a_group_waits_for_its_outcome_to_commit_before_its_next_message(
    sessions: Sessions, slack: SlackStandIn
) -> None:
    """Two messages to one channel: the second is sent only after the first's outcome is
    committed, so a crash between them never loses the first's record."""
    ctx = make_ctx(make_settings(slack_url=slack.url, routing=TEAM_ONLY))
    await setup_directory(sessions, ctx.settings)
    await open_test_alert(sessions, ctx, subject="a")
    await open_test_alert(sessions, ctx, subject="b", visor_ref="VS-0000002")
    worker, _ = make_worker(sessions, ctx)
    committed_before_second: list[str] = []
    original = worker._send

    async def send(claimed: Claimed) -> Any:
        if len(slack.calls_to("chat.postMessage")) == 1:  # the second message is about to go
            committed_before_second.extend(d.state for d in await deliveries(sessions))
        return await original(claimed)

    worker._send = send  # type: ignore[method-assign]
    assert await worker.run_once() == 2
    assert committed_before_second == ["sent", "sending"]
    assert [d.state for d in await deliveries(sessions)] == ["sent", "sent"]


@pytest.mark.parametrize("parallel", [2, 1])
async def test_with_room_for_more_writers_an_outcome_does_not_wait_for_one_being_written(
    parallel: int,
) -> None:
    """PostgreSQL (parallel): groups' outcomes are written at once, as before group commit;
    SQLite (one writer): the second waits for the first's transaction."""
    release = asyncio.Event()
    started: list[list[int]] = []

    async def write(results: list[Result]) -> None:
        started.append([claimed.delivery_id for claimed, _, _ in results])
        if started[-1] == [1]:
            await release.wait()

    recorder = _Recorder(write, groups=2, parallel=parallel)

    async def first() -> None:
        await recorder.record(_result(1))
        recorder.finished()

    async def second() -> None:
        await asyncio.sleep(0.01)  # while the first is being written
        await recorder.record(_result(2))
        recorder.finished()

    async def unblock_later() -> None:
        await asyncio.sleep(0.1)
        assert started == ([[1], [2]] if parallel == 2 else [[1]])
        release.set()

    await asyncio.gather(recorder.run(), first(), second(), unblock_later())
    assert started == [[1], [2]]


async def test_a_round_whose_recorder_fails_ends_instead_of_waiting_for_ever(
    sessions: Sessions, slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Review of issue 17.) The groups wait on the recorder; if the recorder itself fails, the
    round ends with the error (the rows stay claimed until their lease lapses, as after a
    crash) instead of its groups waiting for ever."""
    mail = MailSink().start()
    try:
        ctx = make_ctx(make_settings(slack_url=slack.url, smtp_port=mail.port))
        await setup_directory(sessions, ctx.settings)
        await open_test_alert(sessions, ctx, subject="s-fail")
        worker, _ = make_worker(sessions, ctx)

        async def broken(self: _Recorder) -> None:
            raise RuntimeError("the recorder failed")

        monkeypatch.setattr(_Recorder, "run", broken)
        with pytest.raises(ExceptionGroup):
            await asyncio.wait_for(worker.run_once(), 10)
    finally:
        mail.stop()
    assert {d.state for d in await deliveries(sessions)} == {"sending"}
