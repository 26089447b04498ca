"""The scheduled jobs under fixed clocks: the daily digest at 07:00 local on both 2026 clock-change
days, once each (run keys, two job sets = two processes); failures logged, counted in /metrics and
retried; a stale job alerting the admins; the scheduler running inside a service."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Alert, Delivery, JobRun
from casewatch.wiring import start_background, stop
from schedules.jobs import JobSet
from schedules.metrics import JobMetrics
from tests.support import OFFICERS, client_for, make_service, make_settings

ADMIN = {
    "id": "ADM0001",
    "name": "Admin Example",
    "email": "admin@force.example",
    "team": "south",
    "roles": ["officer", "admin"],
}


def _jobs(db_url: str, sessions: async_sessionmaker[AsyncSession], at: datetime, **overrides: Any) -> JobSet:
    settings = make_settings(db_url, **overrides)
    return JobSet(sessions, Context(settings, FixedClock(at)), JobMetrics(CollectorRegistry()))


async def _runs(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, str]]:
    async with sessions() as session:
        rows = (await session.execute(select(JobRun.run_key, JobRun.outcome).order_by(JobRun.run_key))).all()
    return [(k, o) for k, o in rows]


async def _digests(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, str]]:
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Delivery.target, Delivery.payload)
                .where(Delivery.purpose == "digest")
                .order_by(Delivery.id)
            )
        ).all()
    return [(target, payload["subject"]) for target, payload in rows]


@pytest.mark.parametrize(
    ("seven_local", "day"),
    [
        (datetime(2026, 3, 29, 6, 0, tzinfo=UTC), "2026-03-29"),  # 07:00 BST, the day the clocks go forward
        (datetime(2026, 10, 25, 7, 0, tzinfo=UTC), "2026-10-25"),  # 07:00 GMT, the day they go back
    ],
)
async def test_the_digest_runs_at_seven_local_once_on_each_clock_change_day(
    db_url: str, engine: Any, seven_local: datetime, day: str
) -> None:
    sessions = make_sessionmaker(engine)
    other_engine = make_engine(db_url)  # a second process: its own engine, its own job set
    try:
        first = _jobs(db_url, sessions, seven_local - timedelta(minutes=1))
        second = _jobs(db_url, make_sessionmaker(other_engine), seven_local)
        spec = first.spec("digest:north")
        assert spec.daily_at is not None
        # A minute before 07:00 local the latest digest due is yesterday's; nothing due today yet.
        assert spec.run_key(first.ctx.clock.now(), first.tz) != f"digest:north:{day}"
        # Yesterday's digest is beyond the catch-up window (24 h > 6 h); today's 04:00 purge is not.
        assert await first.catch_up() == ["retention"]
        assert await _digests(sessions) == []

        first.ctx.clock.set(seven_local)  # type: ignore[attr-defined]
        assert spec.run_key(seven_local, first.tz) == f"digest:north:{day}"
        assert await first.run(spec) == "ok"
        assert (
            await second.run(second.spec("digest:north")) == "skipped"
        )  # the other process: no second digest
        first.ctx.clock.set(seven_local + timedelta(hours=1))  # type: ignore[attr-defined]
        assert await first.run(spec) == "skipped"
        # The watchdog's catch-up runs the south digest (also 07:00) and nothing else, once.
        assert sorted(await first.catch_up()) == ["digest:south"]
        assert await second.catch_up() == []
        assert await first.catch_up() == []
    finally:
        await other_engine.dispose()
    assert await _digests(sessions) == [
        ("sgt.north@force.example", f"[casewatch] Daily digest North MOSOVO {day} (nothing to report)"),
        ("sgt.south@force.example", f"[casewatch] Daily digest South MOSOVO {day} (nothing to report)"),
    ]
    assert [r for r in await _runs(sessions) if r[0].startswith("digest")] == [
        (f"digest:north:{day}", "ok"),
        (f"digest:south:{day}", "ok"),
    ]


async def test_the_scan_runs_once_per_slot(db_url: str, sessions: async_sessionmaker[AsyncSession]) -> None:
    at = datetime(2026, 11, 23, 10, 1, tzinfo=UTC)
    jobs = _jobs(db_url, sessions, at)
    scan = jobs.spec("scan")
    assert await jobs.run(scan) == "ok"
    assert await jobs.run(scan) == "skipped"
    jobs.ctx.clock.advance(timedelta(seconds=300))  # type: ignore[attr-defined]
    assert await jobs.run(scan) == "ok"
    assert await _runs(sessions) == [
        ("scan:2026-11-23T10:00:00Z", "ok"),
        ("scan:2026-11-23T10:05:00Z", "ok"),
    ]


def test_escalation_is_ticked_by_exactly_one_of_delivery_and_scheduler(sqlite_url: str) -> None:
    by_delivery = _jobs(sqlite_url, None, datetime.now(UTC))  # type: ignore[arg-type]
    assert "escalation" not in [s.name for s in by_delivery.specs]
    by_scheduler = _jobs(sqlite_url, None, datetime.now(UTC), delivery={"escalation_tick_seconds": 0})  # type: ignore[arg-type]
    assert "escalation" in [s.name for s in by_scheduler.specs]


async def test_a_failing_job_is_logged_counted_and_retried(
    db_url: str, sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    at = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    jobs = _jobs(db_url, sessions, at)
    calls: list[datetime] = []

    async def broken(now: datetime) -> object:
        calls.append(now)
        raise RuntimeError("Fictional Person at VS-0000001 would be personal data")

    spec = jobs.spec("digest:north")
    broken_spec = dataclasses.replace(spec, action=broken)
    with caplog.at_level(logging.ERROR):
        assert await jobs.run(broken_spec) == "failed"
    assert "digest:north" in caplog.text and "RuntimeError" in caplog.text
    assert "Fictional Person" not in caplog.text  # the message (which may hold data) is never logged
    async with sessions() as session:
        run = (await session.execute(select(JobRun))).scalar_one()
    assert run.outcome == "failed" and run.error is not None and run.error.startswith("RuntimeError at ")
    metrics = generate_latest(jobs.metrics.registry).decode()
    assert 'casewatch_job_runs_total{job="digest",outcome="failed"} 1.0' in metrics

    jobs.ctx.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    # The failed run is retried by the watchdog (with today's other daily jobs), once.
    assert await jobs.catch_up() == ["digest:north", "digest:south", "retention"]
    assert await jobs.catch_up() == []
    assert await _runs(sessions) == [
        ("digest:north:2026-11-23", "ok"),
        ("digest:south:2026-11-23", "ok"),
        ("retention:2026-11-23", "ok"),
    ]
    metrics = generate_latest(jobs.metrics.registry).decode()
    assert 'casewatch_job_runs_total{job="digest",outcome="ok"} 2.0' in metrics


async def test_a_stale_job_alerts_the_admins_and_clears(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    jobs = _jobs(db_url, sessions, at, officers=[*OFFICERS, ADMIN])
    jobs.since = at - timedelta(minutes=30)
    assert await jobs.check_stale() == []  # not long enough yet
    jobs.since = at - timedelta(hours=2)  # scan (300 s + 3600 s) is stale; daily jobs are not
    assert await jobs.check_stale() == ["scan"]
    assert await jobs.check_stale() == ["scan"]  # still one alert, not two
    async with sessions() as session:
        (alert,) = (await session.execute(select(Alert).where(Alert.kind == "system.job_stale"))).scalars()
        targets = (
            (await session.execute(select(Delivery.target).where(Delivery.alert_id == alert.id)))
            .scalars()
            .all()
        )
    assert (alert.state, alert.subject, alert.team, alert.visor_ref) == ("open", "scan", "south", "SYSTEM")
    assert list(targets) == ["admin@force.example"]  # to the admins, by email (no Slack id)

    assert await jobs.run(jobs.spec("scan")) == "ok"
    assert await jobs.check_stale() == []
    async with sessions() as session:
        refreshed = await session.get(Alert, alert.id)
    assert refreshed is not None and refreshed.state == "resolved"


async def test_the_scheduler_runs_inside_the_service_and_shows_in_metrics(sqlite_url: str) -> None:
    service = await make_service(
        sqlite_url,
        schedules={"leader_lease_seconds": 2, "leader_renew_seconds": 0.5},
    )
    try:
        await start_background(service)
        import asyncio

        for _ in range(100):
            runs = await _runs(service.sessions)
            if any(k.startswith("scan:") and o == "ok" for k, o in runs):
                break
            await asyncio.sleep(0.05)
        assert any(k.startswith("scan:") and o == "ok" for k, o in runs), runs
        async with client_for(service) as client:
            body = await (await client.get("/metrics")).text()
        assert "casewatch_scheduler_leader 1.0" in body
        assert 'casewatch_job_runs_total{job="scan",outcome="ok"} 1.0' in body
    finally:
        await stop(service)
    from casewatch.store.models import Lease

    engine = make_engine(sqlite_url)
    try:
        async with make_sessionmaker(engine)() as session:
            lease = await session.get(Lease, "scheduler")
        assert lease is not None and lease.expires_at < datetime(
            2026, 11, 20, 9, 30, tzinfo=UTC
        )  # released on stop
    finally:
        await engine.dispose()


async def test_a_run_interrupted_by_a_stop_is_retried_at_once(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    import asyncio

    at = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    jobs = _jobs(db_url, sessions, at)
    started = asyncio.Event()

    async def slow(now: datetime) -> object:
        started.set()
        await asyncio.Event().wait()  # never finishes by itself
        return None

    await jobs.launch(dataclasses.replace(jobs.spec("digest:north"), action=slow))
    await asyncio.wait_for(started.wait(), 5)
    (task,) = jobs.running
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await _runs(sessions) == [("digest:north:2026-11-23", "failed")]
    assert "digest:north" in await jobs.catch_up()  # not blocked for job_timeout_seconds
    assert ("digest:north:2026-11-23", "ok") in await _runs(sessions)
