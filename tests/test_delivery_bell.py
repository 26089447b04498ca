"""The outbox bell: a commit that queued deliveries wakes this process's idle workers at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.alerts.lifecycle import open_alert
from casewatch.bell import OutboxBell
from casewatch.delivery.worker import DeliveryWorker
from casewatch.directory import sync_directory
from casewatch.model.alerts import AlertSpec
from casewatch.store.engine import make_sessionmaker
from integrations.chat_log import ChatLogNotifier
from tests.test_delivery_support import make_ctx, make_settings

SPEC = AlertSpec(kind="recall.issued", severity="critical", visor_ref="VS-0000001", team="north")


async def test_the_bell_wakes_waiters_and_times_out() -> None:
    bell, stop = OutboxBell(), asyncio.Event()
    started = time.monotonic()
    await bell.wait(0.05, stop)  # nobody rings: the timeout
    assert time.monotonic() - started >= 0.04
    waiter = asyncio.create_task(bell.wait(30, stop))
    await asyncio.sleep(0)
    bell.ring()
    await asyncio.wait_for(waiter, 1)
    stopping = asyncio.create_task(bell.wait(30, stop))
    await asyncio.sleep(0)
    stop.set()
    await asyncio.wait_for(stopping, 1)


async def test_only_a_committed_transaction_that_queued_deliveries_rings(engine: AsyncEngine) -> None:
    rings: list[int] = []
    sessions = make_sessionmaker(engine, after_outbox_commit=lambda: rings.append(1))
    ctx = make_ctx(make_settings(delivery={"chat_log_path": "unused.log"}))
    async with sessions.begin() as session:
        await sync_directory(session, ctx.settings)
    assert rings == []  # committed, but queued nothing
    try:
        async with sessions.begin() as session:
            await open_alert(session, SPEC, ctx)
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert rings == []
    async with sessions.begin() as session:
        assert await open_alert(session, SPEC, ctx) is not None
    assert rings == [1]


async def test_an_idle_worker_delivers_at_once_not_at_its_next_poll(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    bell = OutboxBell()
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring)
    chat = tmp_path / "chat.log"
    settings = make_settings(slack={"mode": "off"}, delivery={"chat_log_path": str(chat), "poll_seconds": 60})
    ctx = make_ctx(settings)
    async with sessions.begin() as session:
        await sync_directory(session, settings)
    worker = DeliveryWorker(sessions, ctx, {"slack": ChatLogNotifier(chat)}, bell=bell)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(stop))
    try:
        await asyncio.sleep(0.2)  # the worker found nothing and waits (up to 60 s)
        async with sessions.begin() as session:
            await open_alert(session, SPEC, ctx)
        started = time.monotonic()
        while not (chat.exists() and "recall.issued" in chat.read_text()):
            assert time.monotonic() - started < 5, "the worker slept through the bell"
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
