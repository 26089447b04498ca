"""The scheduled jobs, each run under a run key recorded in job_runs (see schedules.runs).

  scan           time-based triggers (casewatch.triggers.scan), every schedules.scan_interval_seconds.
                 Reminders (notification.due_soon, action.due_soon) are opened by the scan, so
                 this is also the reminder tick. Key: "scan:<slot start, UTC>".
  escalation     casewatch.routing.escalation.escalate_due, only when
                 delivery.escalation_tick_seconds is 0. Otherwise the delivery runner already
                 ticks escalation in every process (its conditional updates make that safe), and
                 a second tick here would be double work. Key: "escalation:<slot start>".
  digest:<team>  the team's daily digest at teams[].digest_time, local time (schedules.timing).
                 Key: "digest:<team>:<local day>".
  retention      casewatch.retention.purge at schedules.retention_time. Key: "retention:<day>".

There is no separate delivery retry sweep: the delivery workers claim both due retries (pending,
next_attempt_at passed) and expired claims (sending, claimed_until passed) on every poll
(casewatch.delivery.claim), in every process.

The watchdog (every schedules.watchdog_seconds, not recorded) runs missed or failed daily jobs
again while within schedules.daily_catch_up_seconds of their time, and raises a
system.job_stale alert to the admins (officers with the role "admin"; with none, routing falls
back to the SPOC inbox of the first team) for a job with no success for its period plus
schedules.stale_after_seconds (resolved once it succeeds again). A failed interval job is retried
by its next run, in the next slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts import SYSTEM_REF
from casewatch.alerts.lifecycle import live_alert, open_alert, resolve
from casewatch.context import Context
from casewatch.digest.send import send_digests
from casewatch.model.alerts import AlertSpec
from casewatch.retention import purge
from casewatch.routing.escalation import escalate_due
from casewatch.triggers.scan import run_scan
from schedules.metrics import JobMetrics, _family
from schedules.runs import claim_run, finish_run, last_successes, run_outcome
from schedules.timing import latest_due, parse_hhmm, slot_start

log = logging.getLogger(__name__)

STALE_KIND = "system.job_stale"
DAY = timedelta(days=1)

Action = Callable[[datetime], Awaitable[object]]
Outcome = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class JobSpec:
    name: str
    action: Action
    interval_seconds: int | None = None  # an interval job ...
    daily_at: time | None = None  # ... or a daily one, local time

    @property
    def period(self) -> timedelta:
        return timedelta(seconds=self.interval_seconds) if self.interval_seconds else DAY

    def run_key(self, now: datetime, tz: ZoneInfo) -> str:
        if self.interval_seconds:
            return f"{self.name}:{slot_start(now, self.interval_seconds).strftime('%Y-%m-%dT%H:%M:%SZ')}"
        assert self.daily_at is not None
        day, _ = latest_due(now, self.daily_at, tz)
        return f"{self.name}:{day.isoformat()}"


def describe_failure(exc: BaseException) -> str:
    """The exception's type and where it was raised; never its message, which may quote data
    (a SQL error repeats its parameters, say)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}"


class JobSet:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ctx: Context,
        metrics: JobMetrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.ctx = ctx
        self.metrics = metrics or JobMetrics()
        self.config = ctx.settings.schedules
        self.tz = ZoneInfo(ctx.settings.service.timezone)
        self.since = ctx.clock.now()  # reset when this process becomes the leader
        self.running: set[asyncio.Task[Any]] = set()
        self.specs = self._specs()

    def _specs(self) -> list[JobSpec]:
        s = self.ctx.settings
        specs = [JobSpec("scan", self._scan, interval_seconds=self.config.scan_interval_seconds)]
        if s.delivery.escalation_tick_seconds == 0:
            specs.append(
                JobSpec(
                    "escalation", self._escalate, interval_seconds=self.config.escalation_interval_seconds
                )
            )
        for team in s.teams:
            specs.append(
                JobSpec(f"digest:{team.id}", self._digest_for(team.id), daily_at=parse_hhmm(team.digest_time))
            )
        specs.append(JobSpec("retention", self._retention, daily_at=parse_hhmm(self.config.retention_time)))
        return specs

    def spec(self, name: str) -> JobSpec:
        return next(s for s in self.specs if s.name == name)

    # --- the actions ------------------------------------------------------------------------------

    async def _scan(self, now: datetime) -> object:
        return await run_scan(self.sessions, self.ctx, now)

    async def _escalate(self, now: datetime) -> object:
        return await escalate_due(self.sessions, self.ctx)

    def _digest_for(self, team_id: str) -> Action:
        async def digest(now: datetime) -> object:
            return await send_digests(self.sessions, self.ctx, now, [team_id])

        return digest

    async def _retention(self, now: datetime) -> object:
        return await purge(self.sessions, self.ctx)

    # --- running ----------------------------------------------------------------------------------

    async def launch(self, spec: JobSpec) -> None:
        """What APScheduler calls: start the run as a task of our own and return. APScheduler 3
        cancels the coroutines it awaits when it shuts down (on losing the lease, or on stop);
        our tasks are instead let finish (or cancelled quietly) by the scheduler's stop. One run
        of a job at a time: a run still going when the next is due is not doubled."""
        if any(t.get_name() == f"job:{spec.name}" for t in self.running):
            log.info("job %s: previous run still going; not starting another", spec.name)
            return
        self._spawn(self.run(spec), f"job:{spec.name}")

    async def launch_watchdog(self) -> None:
        if any(t.get_name() == "job:watchdog" for t in self.running):
            return
        self._spawn(self.watchdog(), "job:watchdog")

    def _spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def run(self, spec: JobSpec) -> Outcome:
        """Run the job under its current run key, once; record, count and log the outcome."""
        now = self.ctx.clock.now()
        key = spec.run_key(now, self.tz)
        timeout = timedelta(seconds=self.config.job_timeout_seconds)
        try:
            run_id = await claim_run(self.sessions, spec.name, key, now, timeout)
        except Exception as exc:
            log.error(
                "job %s: cannot claim run %s (%s); next run will try again",
                spec.name,
                key,
                describe_failure(exc),
            )
            self.metrics.count(spec.name, "failed")
            return "failed"
        if run_id is None:
            self.metrics.count(spec.name, "skipped")
            log.debug("job %s: run %s already done or running", spec.name, key)
            return "skipped"
        try:
            await spec.action(now)
        except asyncio.CancelledError:
            # Stopped mid-run (the process is stopping): mark it failed, so that the next leader
            # retries it now rather than after job_timeout_seconds.
            log.warning("job %s: run %s interrupted; it will be retried", spec.name, key)
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    finish_run(self.sessions, run_id, "failed", self.ctx.clock.now(), "interrupted")
                )
            raise
        except Exception as exc:
            failure = describe_failure(exc)
            log.error("job %s: run %s failed: %s; it will be retried", spec.name, key, failure)
            self.metrics.count(spec.name, "failed")
            try:
                await finish_run(self.sessions, run_id, "failed", self.ctx.clock.now(), failure)
            except Exception as again:
                log.error("job %s: cannot record the failure (%s)", spec.name, describe_failure(again))
            return "failed"
        finished = self.ctx.clock.now()
        try:
            await finish_run(self.sessions, run_id, "ok", finished)
        except Exception as exc:
            log.error("job %s: ran, but cannot record it (%s)", spec.name, describe_failure(exc))
        self.metrics.count(spec.name, "ok")
        self.metrics.last_success.labels(_family(spec.name)).set(finished.timestamp())
        log.info("job %s: run %s done", spec.name, key)
        return "ok"

    # --- the watchdog -----------------------------------------------------------------------------

    async def watchdog(self) -> None:
        try:
            await self.catch_up()
            await self.check_stale()
        except Exception as exc:
            log.error("scheduler watchdog failed: %s", describe_failure(exc))

    async def catch_up(self) -> list[str]:
        """Run each daily job whose latest due time passed less than daily_catch_up_seconds ago
        and whose run did not succeed (no leader then, or it failed). Returns the jobs run."""
        now = self.ctx.clock.now()
        window = timedelta(seconds=self.config.daily_catch_up_seconds)
        ran = []
        for spec in self.specs:
            if spec.daily_at is None:
                continue
            _, due = latest_due(now, spec.daily_at, self.tz)
            if now - due > window:
                continue
            if await run_outcome(self.sessions, spec.run_key(now, self.tz)) == "ok":
                continue
            if await self.run(spec) == "ok":
                ran.append(spec.name)
        return ran

    async def check_stale(self) -> list[str]:
        """Open a system.job_stale alert (to the admins) for each job with no success for its
        period plus stale_after_seconds; resolve it once the job succeeds. Returns stale jobs."""
        now = self.ctx.clock.now()
        grace = timedelta(seconds=self.config.stale_after_seconds)
        last = await last_successes(self.sessions)
        stale = []
        team = self._system_team()
        for spec in self.specs:
            reference = last.get(spec.name, self.since)
            is_stale = now - reference > spec.period + grace
            if is_stale:
                stale.append(spec.name)
            if team is None:
                if is_stale:
                    log.error(
                        "job %s: no success since %s, and no team to alert", spec.name, reference.isoformat()
                    )
                continue
            async with self.sessions.begin() as session:
                live = await live_alert(session, STALE_KIND, SYSTEM_REF, spec.name)
                if is_stale and live is None:
                    await open_alert(
                        session,
                        AlertSpec(
                            kind=STALE_KIND,
                            severity="high",
                            visor_ref=SYSTEM_REF,
                            team=team,
                            subject=spec.name,
                            summary=f"Scheduled job {spec.name} has not succeeded since "
                            f"{reference.astimezone(self.tz):%Y-%m-%d %H:%M %Z}",
                            details={
                                "job": spec.name,
                                "last_success": last[spec.name].isoformat() if spec.name in last else None,
                            },
                        ),
                        self.ctx,
                    )
                    log.error("job %s: no success since %s; admins alerted", spec.name, reference.isoformat())
                elif not is_stale and live is not None:
                    await resolve(session, live, "the job succeeded again", self.ctx)
        self.metrics.stale.set(len(stale))
        return stale

    def _system_team(self) -> str | None:
        """System alerts belong to the first admin's team (else the first team)."""
        s = self.ctx.settings
        admin = next((o for o in s.officers if "admin" in o.roles), None)
        if admin is not None:
            return admin.team
        return s.teams[0].id if s.teams else None
