"""Review (sixth session, issue 17): the outbox bell and the delivery handoff together.

A worker woken by the handoff (not by a ring) keeps its poll deadline. If it then starts rounds
up to ROUNDS_IN_FLIGHT, it waits for a round to end and is no bell waiter: a ring then (a commit
whose rows could not be handed, as the handoff takes none from a worker without room) wakes
nobody, and the worker, its poll deadline still ahead, slept while the committed rows waited
(fixed in 6895e51: the ring count is compared with the last claim's). Real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.bell import Handoff, OutboxBell
from casewatch.delivery.notifier import Outbound, Outcome, Sent
from casewatch.delivery.worker import ROUNDS_IN_FLIGHT, DeliveryWorker
from casewatch.store.engine import make_sessionmaker
from tests.test_delivery_handoff import _count_claims, _until
from tests.test_delivery_support import deliveries, make_ctx, make_settings, open_test_alert, setup_directory

ROUTING = {"routes": {"travel.unnotified": ["team_channel"]}}


class GatedChat:
    """A Slack notifier whose sends wait until the gate opens."""

    channel = "slack"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.sent: list[int] = []

    async def send(self, message: Outbound) -> Outcome:
        await self.gate.wait()
        self.sent.append(message.delivery_id)
        return Sent(f"chatlog:{message.delivery_id}")

    async def close(self) -> None:
        return None


async def test_a_ring_while_the_handoff_worker_is_held_is_not_lost(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    settings = make_settings(slack={"mode": "off"}, routing=ROUTING, delivery={
        "chat_log_path": str(tmp_path / "chat.log"),
        "poll_seconds": 60, "chat_interval_seconds": 0, "send_timeout_seconds": 30, "lease_seconds": 120,
        "workers": 1,
    })
    ctx = make_ctx(settings)
    bell, handoff = OutboxBell(), Handoff(limit=20)
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring, handoff=handoff)
    await setup_directory(sessions, settings)
    chat = GatedChat()
    worker = DeliveryWorker(sessions, ctx, {"slack": chat}, worker_id="w0", bell=bell, handoff=handoff)
    claims = _count_claims(worker)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(stop))
    refs = [f"VS-00000{n:02d}" for n in range(1, ROUNDS_IN_FLIGHT + 2)]
    try:
        async def claimed_once() -> bool:
            return len(claims) == 1

        await _until(claimed_once)  # nothing yet: its next claim is at the poll, 60 s away
        for ref in refs[:ROUNDS_IN_FLIGHT]:  # each handed over and started: a round each, held
            await open_test_alert(sessions, ctx, visor_ref=ref)

        async def held() -> bool:
            return not handoff.accepting and handoff.take(0) == [] and not handoff.ready.is_set()

        await _until(held)
        await open_test_alert(sessions, ctx, visor_ref=refs[-1])  # no room: queued unclaimed, rung
        assert bell.rings == 1
        rows = await deliveries(sessions)
        assert [r.state for r in rows] == ["sending"] * ROUNDS_IN_FLIGHT + ["pending"]
        chat.gate.set()  # the rounds end; the last row was rung for: it should go now, not at the poll

        async def held_ones_sent() -> bool:
            return len(chat.sent) >= ROUNDS_IN_FLIGHT

        await _until(held_ones_sent, within=5)

        async def all_sent() -> bool:
            rows = await deliveries(sessions)
            return len(rows) == len(refs) and all(r.state == "sent" for r in rows)

        await _until(all_sent, within=5)
    finally:
        stop.set()
        chat.gate.set()
        await asyncio.wait_for(running, 10)
