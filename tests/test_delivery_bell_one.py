"""One ring of the outbox bell wakes one waiting worker (the other would claim nothing: an empty
write transaction each commit), and a worker whose claim came back full rings on, so a backlog
still wakes them all. Real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.bell import Handoff, OutboxBell
from casewatch.delivery import worker as worker_module
from casewatch.delivery.pacing import Pacer
from casewatch.delivery.worker import DeliveryWorker
from casewatch.store.engine import make_sessionmaker
from integrations.chat_log import ChatLogNotifier
from integrations.notifiers import build_notifiers
from tests.slack_standin import SlackStandIn
from tests.test_delivery_handoff import REFS, _count_claims, _until
from tests.test_delivery_support import (
    deliveries,
    make_ctx,
    make_settings,
    open_test_alert,
    setup_directory,
    slack_fixture,  # noqa: F401
)

ROUTING = {"routes": {"travel.unnotified": ["team_channel"]}}


async def test_a_ring_wakes_the_longest_waiting_worker_only() -> None:
    bell, stop = OutboxBell(), asyncio.Event()
    first = asyncio.create_task(bell.wait(30, stop))
    await asyncio.sleep(0)
    second = asyncio.create_task(bell.wait(30, stop))
    await asyncio.sleep(0)
    bell.ring()
    await asyncio.wait_for(first, 1)
    await asyncio.sleep(0.05)
    assert not second.done()
    bell.ring()
    await asyncio.wait_for(second, 1)
    bell.ring()  # nobody waits: counted, wakes nobody later
    assert bell.rings == 3
    stop.set()


async def test_each_commit_is_claimed_by_one_worker_and_none_claims_in_vain(
    engine: AsyncEngine, tmp_path: object
) -> None:
    chat = f"{tmp_path}/chat.log"
    settings = make_settings(slack={"mode": "off"}, routing=ROUTING, delivery={
        "chat_log_path": chat, "poll_seconds": 60, "chat_interval_seconds": 0,
    })
    ctx = make_ctx(settings)
    bell = OutboxBell()
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring)
    await setup_directory(sessions, settings)
    pacer, notifiers = Pacer(), {"slack": ChatLogNotifier(chat)}
    workers = [
        DeliveryWorker(sessions, ctx, notifiers, worker_id=f"w{n}", pacer=pacer, bell=bell) for n in range(2)
    ]
    claims = [_count_claims(w) for w in workers]
    stop = asyncio.Event()
    running = [asyncio.create_task(w.run_forever(stop)) for w in workers]
    try:
        await asyncio.sleep(0.3)  # each claimed once (nothing) and waits for the bell or the poll
        assert [len(c) for c in claims] == [1, 1]
        for n, ref in enumerate(REFS, start=1):
            await open_test_alert(sessions, ctx, visor_ref=ref)

            async def sent(n: int = n) -> bool:
                rows = await deliveries(sessions)
                return len(rows) == n and all(r.state == "sent" for r in rows)

            await _until(sent)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*running), 10)
    after_start = [rows for c in claims for rows in c[1:]]
    assert [len(rows) for rows in after_start] == [1, 1, 1]  # one claim a commit, none empty


async def test_a_ring_while_held_at_the_round_bound_is_claimed_when_a_round_ends(
    engine: AsyncEngine, slack: SlackStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One round in flight at most: the first alert is handed to the worker (no claim), its send
    slow (1 s), so the worker waits for that round, not for the bell; the second alert, queued
    unclaimed meanwhile (no room), rings then. It is claimed when the round ends, not at the next
    poll (60 s)."""
    monkeypatch.setattr(worker_module, "ROUNDS_IN_FLIGHT", 1)
    settings = make_settings(slack_url=slack.url, routing=ROUTING, delivery={
        "poll_seconds": 60, "chat_interval_seconds": 0, "send_timeout_seconds": 5,
    })
    ctx = make_ctx(settings)
    bell, handoff = OutboxBell(), Handoff(limit=20)
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring, handoff=handoff)
    await setup_directory(sessions, settings)
    notifiers = build_notifiers(settings, keep_alive=False)
    worker = DeliveryWorker(sessions, ctx, notifiers, worker_id="w0", bell=bell, handoff=handoff)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(stop))
    try:
        await asyncio.sleep(0.2)
        slack.delay_next("chat.postMessage", 1.0)
        await open_test_alert(sessions, ctx, visor_ref=REFS[0])
        await slack.wait_for_calls("chat.postMessage", 1, within=5)  # the slow send has begun
        rings = bell.rings
        await open_test_alert(sessions, ctx, visor_ref=REFS[1])  # rings: the worker is held
        assert bell.rings == rings + 1
        started = asyncio.get_running_loop().time()

        async def both_sent() -> bool:
            rows = await deliveries(sessions)
            return len(rows) == 2 and all(r.state == "sent" for r in rows)

        await _until(both_sent, within=10)
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
