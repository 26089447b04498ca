"""The scheduler of `casewatch serve`: a leader loop, and an APScheduler 3 AsyncIOScheduler that
runs the jobs (schedules.jobs) only while this process holds the leader lease (schedules.leader).

Every `leader_renew_seconds` the loop renews (or tries to take) the lease. On becoming leader it
starts the APScheduler with the jobs (interval jobs run at once, daily jobs at their local time)
and runs the watchdog, which catches up a daily job missed while there was no leader. On losing
the lease it shuts the APScheduler down at once. On stop it waits briefly for running jobs and
releases the lease, so another process takes over within one renewal instead of a full lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.context import Context
from schedules.jobs import JobSet, describe_failure
from schedules.leader import LeaderLease
from schedules.metrics import JobMetrics
from schedules.timing import DailyLocalTrigger

log = logging.getLogger(__name__)

STOP_WAIT_SECONDS = 10.0


class Scheduler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ctx: Context,
        *,
        registry: CollectorRegistry | None = None,
        holder: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.config = ctx.settings.schedules
        self.metrics = JobMetrics(registry)
        self.jobs = JobSet(sessions, ctx, self.metrics)
        self.lease = LeaderLease(
            sessions, ctx.clock, lease_seconds=self.config.leader_lease_seconds, holder=holder
        )
        self._aps: AsyncIOScheduler | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self._aps is not None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="casewatch-scheduler")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._step_down()
        running = list(self.jobs.running)
        if running:
            _, pending = await asyncio.wait(running, timeout=STOP_WAIT_SECONDS)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.lease.release()
        self.metrics.leader.set(0)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # the type and place only: a database error's text quotes its parameters
                log.error("scheduler: leader tick failed (%s)", describe_failure(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.config.leader_renew_seconds)

    async def tick(self) -> bool:
        """Renew or take the lease; start or stop the jobs to match. True while leading."""
        leader = await self.lease.tick()
        if self._stop.is_set():
            return leader
        if leader and self._aps is None:
            self._become_leader()
        elif not leader and self._aps is not None:
            self._step_down()
        self.metrics.leader.set(1 if leader else 0)
        return leader

    def _become_leader(self) -> None:
        self.jobs.since = self.ctx.clock.now()
        aps = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        )
        now = datetime.now(UTC)
        for spec in self.jobs.specs:
            trigger: Any
            options: dict[str, Any] = {}
            if spec.interval_seconds:
                trigger = IntervalTrigger(seconds=spec.interval_seconds, timezone=UTC)
                options["next_run_time"] = now
            else:
                assert spec.daily_at is not None
                trigger = DailyLocalTrigger(spec.daily_at, self.jobs.tz)
            aps.add_job(self.jobs.launch, trigger, args=[spec], id=spec.name, name=spec.name, **options)
        aps.add_job(
            self.jobs.launch_watchdog,
            IntervalTrigger(seconds=self.config.watchdog_seconds, timezone=UTC),
            id="watchdog",
            name="watchdog",
            next_run_time=now,
        )
        aps.start()
        self._aps = aps
        log.info("scheduler: leading; jobs %s", ", ".join(s.name for s in self.jobs.specs))

    def _step_down(self) -> None:
        if self._aps is not None:
            with contextlib.suppress(Exception):
                self._aps.shutdown(wait=False)
            self._aps = None
            log.info("scheduler: not leading; jobs stopped in this process")


async def start_schedules(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, *, registry: CollectorRegistry | None = None
) -> Callable[[], Awaitable[None]]:
    """Start the scheduler (called by casewatch.wiring.start_background); return its stop."""
    # APScheduler announces every run at INFO; our own job log says what matters.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler = Scheduler(sessions, ctx, registry=registry)
    await scheduler.start()
    return scheduler.stop
