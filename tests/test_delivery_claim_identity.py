"""A claim is its worker *and* its lease. With rounds in flight (run_forever), a row can wait its
turn at a busy destination until its lease lapses, or the wall clock can step past a lease while a
row is being sent; the worker must then neither claim its own in-flight row again nor let an older
round release or record over a newer claim: every message goes once, with one attempt row.
(Found by review: both cases posted a message twice, with four attempt rows for two messages.)"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.bell import OutboxBell
from casewatch.config.delivery import DeliverySection
from casewatch.context import Context
from casewatch.delivery.pacing import Pacer
from casewatch.delivery.worker import DeliveryWorker
from casewatch.store.engine import make_sessionmaker
from casewatch.store.models import AuditEntry, DeliveryAttempt
from integrations.notifiers import build_notifiers
from tests.slack_standin import SlackStandIn
from tests.test_delivery_support import (
    clock_of,
    deliveries,
    make_ctx,
    make_settings,
    open_test_alert,
    setup_directory,
    slack_fixture,  # noqa: F401
)

DELIVERY = {"send_timeout_seconds": 5, "poll_seconds": 0.05, "batch_size": 1, "chat_interval_seconds": 0}
ROUTING = {"routes": {"travel.unnotified": ["team_channel"]}}


async def _sent_once_each(sessions: async_sessionmaker[AsyncSession], slack: SlackStandIn) -> None:
    rows = await deliveries(sessions)
    assert [(r.state, r.attempts) for r in rows] == [("sent", 1), ("sent", 1)]
    refs = [re.findall(r"VS-\d{7}", str(call.args))[0] for call in slack.calls_to("chat.postMessage")]
    assert sorted(refs) == ["VS-0000001", "VS-0000002"]
    async with sessions() as session:
        attempts = (await session.execute(select(DeliveryAttempt.delivery_id))).scalars().all()
        audited = (await session.execute(
            select(AuditEntry.action).where(AuditEntry.action.like("delivery.%"))
        )).scalars().all()
    assert sorted(attempts) == [r.id for r in rows]
    assert audited == ["delivery.sent", "delivery.sent"]


async def _settled(sessions: async_sessionmaker[AsyncSession]) -> None:
    for _ in range(400):
        rows = await deliveries(sessions)
        if rows and all(r.state not in ("pending", "sending") for r in rows):
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("history", ["readable", "missing_scope"])
async def test_a_clock_step_past_the_lease_mid_send_sends_each_message_once(
    engine: AsyncEngine, slack: SlackStandIn, history: str
) -> None:
    """One worker, two messages to one channel, the first post slow: the second waits in a second
    round. The wall clock steps 61 s (an NTP step, a VM resumed) past both leases."""
    settings = make_settings(slack_url=slack.url, routing=ROUTING, delivery={**DELIVERY, "lease_seconds": 60})
    ctx = make_ctx(settings)
    bell = OutboxBell()
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring)
    await setup_directory(sessions, settings)
    if history == "missing_scope":  # no history to read: a message re-sent as "maybe sent" is posted again
        slack.fail_next("conversations.history", error="missing_scope", times=10)
    slack.delay_next("chat.postMessage", 1.5)
    slack.delay_next("chat.postMessage", 0.5, times=3)
    await open_test_alert(sessions, ctx, visor_ref="VS-0000001")
    await open_test_alert(sessions, ctx, visor_ref="VS-0000002")
    notifiers = build_notifiers(settings, keep_alive=False)
    worker = DeliveryWorker(sessions, ctx, notifiers, worker_id="w1", bell=bell)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(stop))
    try:
        await slack.wait_for_calls("chat.postMessage", 1, within=10)
        for _ in range(100):
            if all(r.state == "sending" for r in await deliveries(sessions)):
                break
            await asyncio.sleep(0.02)
        clock_of(ctx).advance(timedelta(seconds=61))
        await _settled(sessions)
        await asyncio.sleep(1.0)  # time for a second post, if one were coming
    finally:
        stop.set()
        await asyncio.wait_for(running, 20)
    await _sent_once_each(sessions, slack)


async def test_a_row_whose_lease_lapsed_while_it_waited_its_turn_is_sent_once(
    engine: AsyncEngine, slack: SlackStandIn
) -> None:
    """Row 1 (another worker of the process, a long lease, sharing the pacer and so the turns) is
    slow to post; row 2, claimed by w1 (lease 60 s), waits in the channel's line until its lease
    lapses. w1 must not claim it again meanwhile, nor release a newer claim of it."""
    settings = make_settings(slack_url=slack.url, routing=ROUTING, delivery={**DELIVERY, "lease_seconds": 60})
    long_settings = make_settings(
        slack_url=slack.url, routing=ROUTING, delivery={**DELIVERY, "lease_seconds": 600}
    )
    ctx = make_ctx(settings)
    clock = clock_of(ctx)
    bell = OutboxBell()
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring)
    await setup_directory(sessions, settings)
    slack.fail_next("conversations.history", error="missing_scope", times=10)
    slack.delay_next("chat.postMessage", 1.5)
    slack.delay_next("chat.postMessage", 0.5)
    pacer = Pacer()
    await open_test_alert(sessions, ctx, visor_ref="VS-0000001")
    blocker = DeliveryWorker(
        sessions, Context(long_settings, clock), build_notifiers(settings, keep_alive=False),
        worker_id="w0", bell=bell, pacer=pacer,
    )
    blocking = asyncio.create_task(blocker.run_once())
    await slack.wait_for_calls("chat.postMessage", 1, within=10)
    await open_test_alert(sessions, ctx, visor_ref="VS-0000002")
    worker = DeliveryWorker(
        sessions, ctx, build_notifiers(settings, keep_alive=False), worker_id="w1", bell=bell, pacer=pacer
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(stop))
    try:
        for _ in range(100):
            rows = await deliveries(sessions)
            if [r.state for r in rows] == ["sending", "sending"]:
                break
            await asyncio.sleep(0.01)
        assert [r.claimed_by for r in rows] == ["w0", "w1"]
        clock.advance(timedelta(seconds=61))  # row 2's lease lapses while it waits for its turn
        await asyncio.wait_for(blocking, 10)
        await _settled(sessions)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.wait_for(running, 20)
    await _sent_once_each(sessions, slack)


async def test_a_lease_too_short_for_the_pace_is_given_back_due_when_the_destination_is_free(
    engine: AsyncEngine, slack: SlackStandIn
) -> None:
    """A row whose lease ran down (it waited its turn; here the clock moves 8 s) and whose channel
    is paced 8 s more cannot wait and still send inside its lease (5 s sends): it goes back due
    when the channel is free (a fresh claim then has its whole lease), not due now, to be claimed
    and given back again and again, and it takes no pacing slot."""
    delivery = {**DELIVERY, "lease_seconds": 20, "max_inline_wait_seconds": 10}
    settings = make_settings(slack_url=slack.url, routing=ROUTING, delivery=delivery)
    ctx = make_ctx(settings)
    clock = clock_of(ctx)
    sessions = make_sessionmaker(engine)
    await setup_directory(sessions, settings)
    await open_test_alert(sessions, ctx, visor_ref="VS-0000001")
    pacer = Pacer()
    worker = DeliveryWorker(
        sessions, ctx, build_notifiers(settings, keep_alive=False), worker_id="w1", pacer=pacer
    )
    rows = await worker._claim()
    clock.advance(timedelta(seconds=8))  # 12 s of the lease left
    free_at = clock.now() + timedelta(seconds=8)
    pacer.block((rows[0].channel, rows[0].target), free_at)
    await worker._run_round(rows)
    (row,) = await deliveries(sessions)
    assert (row.state, row.attempts, row.claimed_by, row.next_attempt_at) == ("pending", 0, None, free_at)
    assert slack.calls_to("chat.postMessage") == []
    assert pacer.wait((rows[0].channel, rows[0].target), clock.now()) == 8.0  # no slot taken


async def test_two_workers_of_one_process_and_a_clock_step_mid_send_send_once(
    engine: AsyncEngine, slack: SlackStandIn
) -> None:
    """The service's shape: `delivery.workers` workers in one process share the pacer, and with it
    the rows in flight. A clock step past the lease while w1 posts must not let w2 claim the row
    and post it again after its turn."""
    settings = make_settings(slack_url=slack.url, routing=ROUTING, delivery={**DELIVERY, "lease_seconds": 60})
    ctx = make_ctx(settings)
    bell = OutboxBell()
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring)
    await setup_directory(sessions, settings)
    slack.fail_next("conversations.history", error="missing_scope", times=10)
    slack.delay_next("chat.postMessage", 1.5)
    await open_test_alert(sessions, ctx, visor_ref="VS-0000001")
    pacer = Pacer()
    notifiers = build_notifiers(settings, keep_alive=False)
    w1 = DeliveryWorker(sessions, ctx, notifiers, worker_id="w1", bell=bell, pacer=pacer)
    w2 = DeliveryWorker(sessions, ctx, notifiers, worker_id="w2", bell=bell, pacer=pacer)
    stop = asyncio.Event()
    first = asyncio.create_task(w1.run_forever(stop))
    second: asyncio.Task[None] | None = None
    try:
        await slack.wait_for_calls("chat.postMessage", 1, within=10)
        second = asyncio.create_task(w2.run_forever(stop))
        clock_of(ctx).advance(timedelta(seconds=61))
        await _settled(sessions)
        await asyncio.sleep(1.5)  # time for a second post, if one were coming
    finally:
        stop.set()
        await asyncio.wait_for(first, 20)
        if second is not None:
            await asyncio.wait_for(second, 20)
    assert len(slack.calls_to("chat.postMessage")) == 1
    async with sessions() as session:
        attempts = (await session.execute(select(DeliveryAttempt.outcome))).scalars().all()
    assert attempts == ["sent"]
    assert pacer.in_flight == {}


def test_a_lease_that_cannot_hold_a_paced_send_is_refused() -> None:
    with pytest.raises(ValidationError, match="send_timeout_seconds \\+ max_inline_wait_seconds"):
        DeliverySection(lease_seconds=10, send_timeout_seconds=5, max_inline_wait_seconds=6)
    assert DeliverySection(lease_seconds=11, send_timeout_seconds=5, max_inline_wait_seconds=6)
