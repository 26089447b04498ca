"""A delivery worker's poll claim waits for a quiet moment (issue 17, DeliveryWorker `quiet`): when
the poll comes round while something is in flight (an ingest's transaction, a request being
answered), the claim waits until nothing has been in flight for POLL_QUIET_GAP_SECONDS, and never
past POLL_DEFER_LIMIT_SECONDS; a claim the bell asks for does not wait. The rows here are queued
as another process queues them (no bell rings in this one), so only the poll finds them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import open_alert
from casewatch.audit.quiet import Quiet
from casewatch.bell import OutboxBell
from casewatch.delivery import worker as worker_mod
from casewatch.delivery.worker import DeliveryWorker
from casewatch.directory import sync_directory
from casewatch.model.alerts import AlertSpec
from casewatch.store.engine import make_sessionmaker
from integrations.chat_log import ChatLogNotifier
from tests.test_delivery_support import make_ctx, make_settings

POLL = 1.0


@dataclass
class Running:
    sessions: async_sessionmaker[AsyncSession]
    ctx: Any
    worker: DeliveryWorker
    quiet: Quiet
    bell: OutboxBell
    claims: list[tuple[float, int]]  # (time.monotonic(), rows claimed) of each claim
    started: float

    async def queue_elsewhere(self, ref: str) -> None:
        """An alert's deliveries written without ringing this process's bell (another process)."""
        async with self.sessions.begin() as session:
            spec = AlertSpec(kind="recall.issued", severity="critical", visor_ref=ref, team="north")
            assert await open_alert(session, spec, self.ctx) is not None

    async def claimed_after(self, since: float, within: float = 5.0) -> float:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            found = [at for at, n in self.claims if n and at >= since]
            if found:
                return found[0]
            await asyncio.sleep(0.005)
        raise AssertionError("the rows were never claimed")


async def _running(engine: AsyncEngine, tmp_path: Path, *, quiet: bool) -> AsyncIterator[Running]:
    sessions = make_sessionmaker(engine)  # commits ring no bell here
    chat = tmp_path / "chat.log"
    settings = make_settings(
        slack={"mode": "off"}, delivery={"chat_log_path": str(chat), "poll_seconds": POLL}
    )
    ctx = make_ctx(settings)
    async with sessions.begin() as session:
        await sync_directory(session, settings)
    bell, the_quiet = OutboxBell(), Quiet()
    worker = DeliveryWorker(
        sessions, ctx, {"slack": ChatLogNotifier(chat)}, bell=bell, quiet=the_quiet if quiet else None
    )
    claims: list[tuple[float, int]] = []
    claim = worker._claim

    async def noted(**kw: Any) -> Any:
        rows = await claim(**kw)
        claims.append((time.monotonic(), len(rows)))
        return rows

    worker._claim = noted  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run_forever(stop))
    try:
        began = time.monotonic()
        while not claims:  # the first claim, at once (nothing due)
            assert time.monotonic() - began < 5
            await asyncio.sleep(0.005)
        yield Running(sessions, ctx, worker, the_quiet, bell, claims, claims[0][0])
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def with_quiet(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in _running(engine, tmp_path, quiet=True):
        yield running


@pytest.fixture
async def without_quiet(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Running]:
    async for running in _running(engine, tmp_path, quiet=False):
        yield running


async def test_the_poll_claim_waits_for_what_is_in_flight_to_end(with_quiet: Running) -> None:
    run = with_quiet
    run.quiet.begin()  # an ingest, say, in flight when the poll comes round
    await run.queue_elsewhere("VS-0000001")
    await asyncio.sleep(POLL + 0.1 - (time.monotonic() - run.started))
    assert [n for _, n in run.claims if n] == []  # the poll came: it waits
    ended = time.monotonic()
    run.quiet.end()
    claimed = await run.claimed_after(run.started)
    assert claimed >= ended + worker_mod.POLL_QUIET_GAP_SECONDS - 0.002


async def test_the_poll_claim_never_waits_past_its_limit(with_quiet: Running) -> None:
    run = with_quiet
    await run.queue_elsewhere("VS-0000002")
    run.quiet.begin()  # and it never ends
    try:
        claimed = await run.claimed_after(run.started)
        limit = run.started + POLL + worker_mod.POLL_DEFER_LIMIT_SECONDS
        assert limit - 0.002 <= claimed < limit + 0.3
    finally:
        run.quiet.end()


async def test_a_claim_the_bell_asks_for_does_not_wait(with_quiet: Running) -> None:
    run = with_quiet
    await asyncio.sleep(0.05)
    run.quiet.begin()
    try:
        await run.queue_elsewhere("VS-0000003")
        rung = time.monotonic()
        run.bell.ring()  # as after_outbox_commit, or a row given back due now
        claimed = await run.claimed_after(rung)
        assert claimed - rung < 0.15  # at the bell, not after a quiet moment's limit (0.3 s)
    finally:
        run.quiet.end()


async def test_without_quiet_the_poll_claims_on_time(without_quiet: Running) -> None:
    run = without_quiet
    await run.queue_elsewhere("VS-0000004")
    claimed = await run.claimed_after(run.started)
    assert run.started + POLL - 0.002 <= claimed < run.started + POLL + 0.25


async def test_the_housekeeping_rounds_after_the_first_wait_for_a_quiet_moment(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from casewatch.delivery import runner
    from casewatch.delivery.metrics import DeliveryMetrics

    ticks: list[float] = []

    async def escalate_due(*_: Any, **__: Any) -> None:
        ticks.append(time.monotonic())

    monkeypatch.setattr(runner, "escalate_due", escalate_due)
    ctx = make_ctx(make_settings(delivery={"chat_log_path": "unused.log", "escalation_tick_seconds": 0.2}))
    quiet, stop = Quiet(), asyncio.Event()
    task = asyncio.create_task(
        runner._housekeeping_loop(make_sessionmaker(engine), ctx, DeliveryMetrics(), stop, quiet)
    )
    try:
        began = time.monotonic()
        while not ticks:  # the first round, at once
            assert time.monotonic() - began < 5
            await asyncio.sleep(0.005)
        quiet.begin()
        await asyncio.sleep(0.25)  # the next round is due now, and waits
        assert len(ticks) == 1
        ended = time.monotonic()
        quiet.end()
        while len(ticks) < 2:
            assert time.monotonic() - ended < 5
            await asyncio.sleep(0.005)
        assert ticks[1] >= ended + worker_mod.POLL_QUIET_GAP_SECONDS - 0.002
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
