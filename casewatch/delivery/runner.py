"""Running the delivery workers (and the escalation tick) in the background of `casewatch serve`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.audit.quiet import Quiet
from casewatch.bell import Handoff, OutboxBell
from casewatch.context import Context
from casewatch.delivery.metrics import DeliveryMetrics
from casewatch.delivery.notifier import Notifier
from casewatch.delivery.pacing import Pacer
from casewatch.delivery.stats import outbox_counts
from casewatch.delivery.worker import (
    POLL_DEFER_LIMIT_SECONDS,
    POLL_DEFER_SECONDS,
    POLL_QUIET_GAP_SECONDS,
    DeliveryWorker,
    new_worker_id,
)
from casewatch.routing.escalation import escalate_due

log = logging.getLogger(__name__)

OUTBOX_GAUGE_SECONDS = 30.0


async def start_delivery(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    notifiers: Mapping[str, Notifier],
    *,
    registry: CollectorRegistry | None = None,
    bell: OutboxBell | None = None,
    handoff: Handoff | None = None,
    quiet: Quiet | None = None,
) -> Callable[[], Awaitable[None]]:
    """Start `delivery.workers` worker tasks sharing one pacer and one set of counters (on
    `registry`, the service's /metrics registry), and the escalation tick unless
    `delivery.escalation_tick_seconds` is 0; return the coroutine function that stops them.
    The first worker owns `handoff` (the sessions' own: make_sessionmaker): new alerts'
    deliveries are written claimed by it and handed over after their commit. With `quiet` (the
    service's), the workers' poll claims wait for a quiet moment (DeliveryWorker)."""
    config = ctx.settings.delivery
    stop = asyncio.Event()
    pacer = Pacer()
    metrics = DeliveryMetrics(registry)
    workers = [
        DeliveryWorker(
            sessions, ctx, notifiers, worker_id=new_worker_id(n), pacer=pacer, metrics=metrics, bell=bell,
            handoff=handoff if n == 0 else None, quiet=quiet,
        )
        for n in range(config.workers)
    ]
    tasks = [
        asyncio.create_task(worker.run_forever(stop), name=f"casewatch-delivery-{n}")
        for n, worker in enumerate(workers)
    ]
    tasks.append(
        asyncio.create_task(
            _housekeeping_loop(sessions, ctx, metrics, stop, quiet), name="casewatch-housekeeping"
        )
    )
    log.info("delivery: %d workers for %s", config.workers, ", ".join(sorted(notifiers)) or "no channel")

    async def cleanup() -> None:
        stop.set()
        # Long enough for a send under way, and for a pacing wait that stop cuts short to give
        # its row back.
        grace = config.send_timeout_seconds + config.max_inline_wait_seconds + 5
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for notifier in notifiers.values():
            with contextlib.suppress(Exception):
                await notifier.close()

    return cleanup


async def _housekeeping_loop(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, metrics: DeliveryMetrics, stop: asyncio.Event,
    quiet: Quiet | None = None,
) -> None:
    """The escalation tick (unless it is left to the scheduler), and the outbox gauge; each round,
    with `quiet`, at a quiet moment as the workers' poll claims (DeliveryWorker)."""
    tick = ctx.settings.delivery.escalation_tick_seconds
    interval = tick or OUTBOX_GAUGE_SECONDS
    first = True
    while not stop.is_set():
        if quiet is not None and not first:
            await quiet.settled(
                stop, gap=POLL_QUIET_GAP_SECONDS, soft=POLL_DEFER_SECONDS, hard=POLL_DEFER_LIMIT_SECONDS
            )
            if stop.is_set():
                return
        first = False
        try:
            if tick:
                await escalate_due(sessions, ctx)
            async with sessions() as session:
                metrics.set_outbox(await outbox_counts(session))
        except Exception:
            log.exception("delivery housekeeping failed; trying again in %gs", interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
