"""run_forever's rounds in flight, as a second review tried them: a stop cuts a pacing wait short
and gives its row back (never posted after stop, never left "sending" under a live lease); a row
given back due now while its round is in flight is claimed again as soon as that round ends, not
at the next poll; and a run that ends, by stop or cancellation, leaves nothing behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import open_alert
from casewatch.bell import OutboxBell
from casewatch.context import Context
from casewatch.delivery.notifier import Notifier, Outbound, Outcome
from casewatch.delivery.pacing import Pacer
from casewatch.delivery.runner import start_delivery
from casewatch.delivery.worker import DeliveryWorker
from casewatch.model.alerts import AlertSpec
from casewatch.store.engine import make_sessionmaker
from integrations.notifiers import build_notifiers
from tests.slack_standin import SlackStandIn
from tests.test_delivery_support import (
    TEAM,
    clock_of,
    deliveries,
    make_ctx,
    make_settings,
    open_test_alert,
    setup_directory,
    slack_fixture,  # noqa: F401
)

ROUTING = {"routes": {"travel.unnotified": ["team_channel"]}}
SOUTH = {"id": "south", "name": "South MOSOVO", "channel": "C0SOUTH", "spoc_email": "s.spoc@force.example"}
TEAMS = [TEAM, SOUTH]


async def _open(sessions: async_sessionmaker[AsyncSession], ctx: Context, team: str, n: int) -> None:
    async with sessions.begin() as session:
        spec = AlertSpec(
            kind="travel.unnotified", severity="high", visor_ref=f"VS-{n:07d}", team=team,
            summary="border check", due_at=ctx.clock.now() + timedelta(days=1),
        )
        await open_alert(session, spec, ctx)


class _SlowTo:
    """The real Slack notifier, but sends to one channel take `seconds` longer."""

    def __init__(self, inner: Notifier, channel: str, seconds: float) -> None:
        self.inner, self.channel, self.seconds = inner, channel, seconds

    async def send(self, message: Outbound) -> Outcome:
        if message.target == self.channel:
            await asyncio.sleep(self.seconds)
        return await self.inner.send(message)

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class _NorthSouthNorth:
    sessions: async_sessionmaker[AsyncSession]
    ctx: Context
    bell: OutboxBell
    notifiers: dict[str, Any]
    sleep: Callable[[float], Awaitable[None]]


async def _north_south_north(
    engine: AsyncEngine, slack: SlackStandIn, delivery: dict[str, Any], *, step: float, south_takes: float
) -> _NorthSouthNorth:
    """Three alerts: row 1 to C0NORTH, row 2 to C0SOUTH (its sends take `south_takes` seconds
    longer), row 3 to C0NORTH again (paced behind row 1); the pacing wait steps the wall clock
    `step` seconds."""
    settings = make_settings(slack_url=slack.url, routing=ROUTING, delivery=delivery, teams=TEAMS)
    ctx = make_ctx(settings)
    clock = clock_of(ctx)
    bell = OutboxBell()
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring)
    await setup_directory(sessions, settings)
    await _open(sessions, ctx, "north", 1)
    await _open(sessions, ctx, "south", 2)
    await _open(sessions, ctx, "north", 3)

    async def stepping_sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=step))

    notifiers: dict[str, Any] = dict(build_notifiers(settings, keep_alive=False))
    notifiers["slack"] = _SlowTo(notifiers["slack"], "C0SOUTH", south_takes)
    return _NorthSouthNorth(sessions, ctx, bell, notifiers, stepping_sleep)


async def test_stop_cuts_a_pacing_wait_short_and_gives_the_row_back(
    engine: AsyncEngine, slack: SlackStandIn
) -> None:
    delivery = {
        "send_timeout_seconds": 2, "lease_seconds": 30, "poll_seconds": 0.05, "batch_size": 1,
        "chat_interval_seconds": 3, "max_inline_wait_seconds": 3,
    }
    settings = make_settings(slack_url=slack.url, routing=ROUTING, delivery=delivery)
    ctx = make_ctx(settings)
    bell = OutboxBell()
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring)
    await setup_directory(sessions, settings)
    await open_test_alert(sessions, ctx, visor_ref="VS-0000001")
    await open_test_alert(sessions, ctx, visor_ref="VS-0000002")
    notifiers = build_notifiers(settings, keep_alive=False)
    worker = DeliveryWorker(sessions, ctx, notifiers, worker_id="w1", bell=bell)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(stop))
    await slack.wait_for_calls("chat.postMessage", 1, within=10)
    await asyncio.sleep(0.5)  # row 2 is claimed and waiting its 3 s pace
    stopped = time.monotonic()
    stop.set()
    await asyncio.wait_for(running, 20)
    assert time.monotonic() - stopped < 1.0
    await asyncio.sleep(3)  # past the pace: a post now would be one sent after stop
    assert len(slack.calls_to("chat.postMessage")) == 1
    second = (await deliveries(sessions))[1]
    assert (second.state, second.attempts, second.claimed_by) == ("pending", 0, None)
    assert second.next_attempt_at == clock_of(ctx).now()


async def test_the_service_stop_leaves_no_row_sending_under_a_live_lease(
    engine: AsyncEngine, slack: SlackStandIn
) -> None:
    """A pace longer than a send's timeout: cleanup used to cancel the wait after send_timeout + 5 s
    and leave the row "sending", its lease 30 s ahead (then sent as "maybe sent")."""
    delivery = {
        "send_timeout_seconds": 2, "lease_seconds": 30, "poll_seconds": 0.05, "batch_size": 1,
        "workers": 1, "chat_interval_seconds": 10, "max_inline_wait_seconds": 10,
        "escalation_tick_seconds": 0,
    }
    settings = make_settings(slack_url=slack.url, routing=ROUTING, delivery=delivery)
    ctx = make_ctx(settings)
    bell = OutboxBell()
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring)
    await setup_directory(sessions, settings)
    await open_test_alert(sessions, ctx, visor_ref="VS-0000001")
    await open_test_alert(sessions, ctx, visor_ref="VS-0000002")
    cleanup = await start_delivery(sessions, ctx, build_notifiers(settings, keep_alive=False), bell=bell)
    await slack.wait_for_calls("chat.postMessage", 1, within=10)
    await asyncio.sleep(0.5)
    stopped = time.monotonic()
    await cleanup()
    assert time.monotonic() - stopped < 2.0
    assert len(slack.calls_to("chat.postMessage")) == 1
    second = (await deliveries(sessions))[1]
    assert (second.state, second.claimed_by, second.claimed_until) == ("pending", None, None)


async def test_a_row_given_back_due_now_mid_round_is_claimed_when_the_round_ends(
    engine: AsyncEngine, slack: SlackStandIn
) -> None:
    """Row 3 (north, paced 1 s) sees the clock step 7 s during its pace wait, so too little lease
    is left: it goes back due now, while its round still waits for row 2 (south, slow). It must go
    when that round ends, not at the next poll (8 s)."""
    poll = 8.0
    delivery = {
        "send_timeout_seconds": 4, "lease_seconds": 10, "poll_seconds": poll, "batch_size": 3,
        "chat_interval_seconds": 1, "max_inline_wait_seconds": 2,
    }
    case = await _north_south_north(engine, slack, delivery, step=7, south_takes=3.0)
    sessions = case.sessions
    worker = DeliveryWorker(
        sessions, case.ctx, case.notifiers, worker_id="w1", bell=case.bell, sleep=case.sleep
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(stop))
    try:
        await slack.wait_for_calls("chat.postMessage", 3, within=poll + 8)
    finally:
        stop.set()
        await asyncio.wait_for(running, 20)
    rows = await deliveries(sessions)
    assert [(r.state, r.attempts) for r in rows] == [("sent", 1), ("sent", 1), ("sent", 1)]
    posts = slack.calls_to("chat.postMessage")
    north = [c.at for c in posts if c.args.get("channel") == "C0NORTH"]
    south = [c.at for c in posts if c.args.get("channel") == "C0SOUTH"]
    assert north[1] - south[0] < 1.0, north[1] - south[0]


@pytest.mark.parametrize("end", ["stop", "cancel"])
async def test_a_run_that_ends_leaves_nothing_behind(
    engine: AsyncEngine, slack: SlackStandIn, end: str
) -> None:
    delivery = {
        "send_timeout_seconds": 5, "lease_seconds": 60, "poll_seconds": 0.05, "batch_size": 2,
        "chat_interval_seconds": 0,
    }
    settings = make_settings(slack_url=slack.url, routing=ROUTING, delivery=delivery, teams=TEAMS)
    ctx = make_ctx(settings)
    bell = OutboxBell()
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring)
    await setup_directory(sessions, settings)
    for n in range(8):
        await _open(sessions, ctx, "north" if n % 2 else "south", n + 1)
    slack.delay_next("chat.postMessage", 0.5, times=8)
    pacer = Pacer()
    notifiers = build_notifiers(settings, keep_alive=False)
    worker = DeliveryWorker(sessions, ctx, notifiers, worker_id="w1", bell=bell, pacer=pacer)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(stop))
    await slack.wait_for_calls("chat.postMessage", 2, within=10)
    await asyncio.sleep(0.1)
    assert len(pacer.turns) == 2 and len(pacer.in_flight) > 2  # rounds queued behind each other
    if end == "stop":
        stop.set()
        await asyncio.wait_for(running, 20)
    else:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert len(pacer.turns) == 0
    assert pacer.in_flight == {}
    assert worker._stop is None


async def test_a_row_given_back_due_now_is_claimable_at_once_not_when_its_round_ends(
    engine: AsyncEngine, slack: SlackStandIn
) -> None:
    """Row 3 (north) is given back due now ~1 s in (the clock steps 20 s during its pace wait)
    while its round waits 4 s for row 2 (south, slow). Its old round never touches it again, so
    the process's other worker may claim it at once (a third review: it was held to the round's end)."""
    delivery = {
        "send_timeout_seconds": 12, "lease_seconds": 30, "poll_seconds": 0.5, "batch_size": 3,
        "chat_interval_seconds": 1, "max_inline_wait_seconds": 2,
    }
    case = await _north_south_north(engine, slack, delivery, step=20, south_takes=4.0)
    sessions = case.sessions
    pacer = Pacer()
    w1 = DeliveryWorker(
        sessions, case.ctx, case.notifiers, worker_id="w1", bell=case.bell, pacer=pacer, sleep=case.sleep
    )
    stop = asyncio.Event()
    first = asyncio.create_task(w1.run_forever(stop))
    await slack.wait_for_calls("chat.postMessage", 1, within=10)  # north row 1; w1 holds all 3 rows
    w2 = DeliveryWorker(sessions, case.ctx, case.notifiers, worker_id="w2", bell=case.bell, pacer=pacer)
    second = asyncio.create_task(w2.run_forever(stop))
    try:
        await slack.wait_for_calls("chat.postMessage", 3, within=20)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(first, second), 30)
    rows = await deliveries(sessions)
    assert [(r.state, r.attempts) for r in rows] == [("sent", 1), ("sent", 1), ("sent", 1)]
    north = [c.at for c in slack.calls_to("chat.postMessage") if c.args.get("channel") == "C0NORTH"]
    assert north[1] - north[0] < 2.5, north[1] - north[0]  # held to the round's end: ~4 s


def test_a_claim_spares_only_the_rows_in_flight_whose_lease_has_lapsed() -> None:
    """A live lease keeps a row out of every claim already: only lapsed ones are named to the
    claim (a third review: every row in flight went as one bind parameter, up to the driver's
    limit of 32,767 on PostgreSQL, and each claim grew slower with them)."""
    pacer = Pacer()
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    pacer.in_flight.update({n: now + timedelta(seconds=60) for n in range(40_000)})
    pacer.in_flight[7] = now - timedelta(seconds=1)
    pacer.in_flight[8] = now
    assert sorted(pacer.lapsed_in_flight(now)) == [7, 8]
