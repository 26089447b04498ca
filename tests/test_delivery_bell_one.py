"""One ring of the outbox bell wakes one waiting worker (the other would claim nothing: an empty
write transaction each commit), and a worker whose claim came back full rings on, so a backlog
still wakes them all. Real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.bell import OutboxBell
from casewatch.delivery.pacing import Pacer
from casewatch.delivery.worker import DeliveryWorker
from casewatch.store.engine import make_sessionmaker
from integrations.chat_log import ChatLogNotifier
from tests.test_delivery_handoff import REFS, _count_claims, _until
from tests.test_delivery_support import deliveries, make_ctx, make_settings, open_test_alert, setup_directory

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
