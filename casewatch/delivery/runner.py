"""Running the delivery workers (and the escalation tick) in the background of `casewatch serve`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.context import Context
from casewatch.delivery.notifier import Notifier
from casewatch.delivery.pacing import Pacer
from casewatch.delivery.worker import DeliveryWorker, new_worker_id
from casewatch.routing.escalation import escalate_due

log = logging.getLogger(__name__)


async def start_delivery(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, notifiers: Mapping[str, Notifier]
) -> Callable[[], Awaitable[None]]:
    """Start `delivery.workers` worker tasks sharing one pacer, and the escalation tick unless
    `delivery.escalation_tick_seconds` is 0; return the coroutine function that stops them."""
    config = ctx.settings.delivery
    stop = asyncio.Event()
    pacer = Pacer()
    workers = [
        DeliveryWorker(sessions, ctx, notifiers, worker_id=new_worker_id(n), pacer=pacer)
        for n in range(config.workers)
    ]
    tasks = [
        asyncio.create_task(worker.run_forever(stop), name=f"casewatch-delivery-{n}")
        for n, worker in enumerate(workers)
    ]
    if config.escalation_tick_seconds > 0:
        tasks.append(asyncio.create_task(_escalation_loop(sessions, ctx, stop), name="casewatch-escalation"))
    log.info("delivery: %d workers for %s", config.workers, ", ".join(sorted(notifiers)) or "no channel")

    async def cleanup() -> None:
        stop.set()
        _, pending = await asyncio.wait(tasks, timeout=config.send_timeout_seconds + 5)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for notifier in notifiers.values():
            with contextlib.suppress(Exception):
                await notifier.close()

    return cleanup


async def _escalation_loop(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, stop: asyncio.Event
) -> None:
    interval = ctx.settings.delivery.escalation_tick_seconds
    while not stop.is_set():
        try:
            await escalate_due(sessions, ctx)
        except Exception:
            log.exception("escalation tick failed; trying again in %gs", interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
