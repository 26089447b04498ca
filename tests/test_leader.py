"""Leader election: exactly one scheduler leads; when the leader dies another takes over within
leader_lease_seconds + leader_renew_seconds; no scan slot runs twice. Lease timing under a fixed
clock on both databases; two schedulers (each with its own engine) in real time on PostgreSQL; and
two real `casewatch serve` processes on PostgreSQL with the leader killed (SIGKILL). A takeover is
timed by the new leader's own reading of its clock (its lease's start, its log line), so a loaded
machine slowing this test's polls does not count against the bound."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from casewatch.clock import FixedClock, SystemClock
from casewatch.context import Context
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import JobRun, Lease
from schedules.leader import LeaderLease, current_holder
from schedules.service import Scheduler
from tests.support import make_settings

T = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LEASE = 2.0
RENEW = 0.5


async def test_one_holder_and_takeover_after_expiry(db_url: str) -> None:
    clock = FixedClock(T)
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        a, b = (
            LeaderLease(make_sessionmaker(e), clock, lease_seconds=30, holder=h)
            for e, h in zip(engines, "ab", strict=True)
        )
        assert await a.tick() is True
        assert await b.tick() is False
        clock.advance(timedelta(seconds=20))
        assert await a.tick() is True  # renewed: expires at T+50 now
        clock.advance(timedelta(seconds=29))
        assert await b.tick() is False  # a's renewed lease still runs
        # a dies (no more ticks); 30 s after its last renewal b takes over.
        clock.advance(timedelta(seconds=2))
        assert await b.tick() is True
        assert await current_holder(b.sessions, clock) == "b"
        assert await a.tick() is False  # a, back from the dead, finds it taken
        await b.release()  # a graceful stop: a takes over at once
        assert await a.tick() is True
    finally:
        for e in engines:
            await e.dispose()


async def test_many_racing_for_an_expired_lease_leaves_one(db_url: str) -> None:
    clock = FixedClock(T)
    engines = [make_engine(db_url) for _ in range(5)]
    try:
        leases = [
            LeaderLease(make_sessionmaker(e), clock, lease_seconds=30, holder=f"p{n}")
            for n, e in enumerate(engines)
        ]
        results = await asyncio.gather(*(lease.tick() for lease in leases))
        assert sum(results) == 1
    finally:
        for e in engines:
            await e.dispose()


async def _wait_for(predicate, within: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while time.monotonic() - started < within:
        if predicate():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {within}s")


@pytest.mark.postgres
async def test_two_schedulers_on_postgresql_leader_killed(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        pg_url,
        schedules={"leader_lease_seconds": LEASE, "leader_renew_seconds": RENEW, "scan_interval_seconds": 10},
    )
    engines = [make_engine(pg_url), make_engine(pg_url)]
    schedulers = [
        Scheduler(make_sessionmaker(e), Context(settings, SystemClock()), holder=f"proc-{n}")
        for n, e in enumerate(engines)
    ]
    try:
        for s in schedulers:
            await s.start()
        await _wait_for(lambda: sum(s.is_leader for s in schedulers) == 1, 10)
        await asyncio.sleep(2 * RENEW)
        assert sum(s.is_leader for s in schedulers) == 1  # exactly one, and it stays so
        leader = next(s for s in schedulers if s.is_leader)
        follower = next(s for s in schedulers if not s.is_leader)
        # The takeover is timed by the follower's own clock reading in the tick that took the
        # lease (its new expiry less the lease), not by when this test's poll next looks: under
        # a loaded machine the poll and the round trip after the reading only add noise.
        acquired: list[datetime] = []
        follower_tick = follower.lease.tick

        async def timed_tick() -> bool:
            held = await follower_tick()
            if held and not acquired:
                assert follower.lease.expires_at is not None
                acquired.append(follower.lease.expires_at - timedelta(seconds=LEASE))
            return held

        monkeypatch.setattr(follower.lease, "tick", timed_tick)
        # Kill the leader: its loop and jobs stop dead, nothing released (as with SIGKILL).
        assert leader._task is not None
        last_expiry = leader.lease.expires_at
        killed = datetime.now(UTC)
        leader._task.cancel()
        leader._step_down()
        await _wait_for(lambda: follower.is_leader, LEASE + RENEW + 10)  # liveness only
        assert last_expiry is not None
        took = (acquired[0] - killed).total_seconds()
        assert acquired[0] >= last_expiry, "taken before the dead leader's lease ran out"
        assert took <= LEASE + RENEW + 0.5, took
        print(f"in-process takeover after {took:.2f}s (bound {LEASE + RENEW}s)")
        await asyncio.sleep(0.3)
    finally:
        for s in schedulers:
            await s.stop()
        async with make_sessionmaker(engines[0])() as session:
            runs = (
                await session.execute(select(JobRun.run_key, JobRun.outcome).where(JobRun.job == "scan"))
            ).all()
        for e in engines:
            await e.dispose()
    keys = [k for k, _ in runs]
    assert len(keys) == len(set(keys)) >= 1  # a scan slot never ran twice, across the takeover
    assert all(o == "ok" for _, o in runs)


def _config(tmp_path: Path, url: str, port: int) -> Path:
    path = tmp_path / f"casewatch-{port}.toml"
    path.write_text(
        f"""
[database]
url = "{url}"
[http]
port = {port}
[ingest]
secret = "test-secret-not-real"
[slack]
mode = "off"
[schedules]
leader_lease_seconds = {LEASE}
leader_renew_seconds = {RENEW}
[[teams]]
id = "north"
name = "North MOSOVO"
spoc_email = "north.spoc@force.example"
""",
        encoding="utf-8",
    )
    return path


def _holder_pid(url: str) -> int | None:
    async def read() -> int | None:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                lease = await session.get(Lease, "scheduler")
        finally:
            await engine.dispose()
        if lease is None or lease.expires_at < datetime.now(UTC):
            return None
        return int(lease.holder.split(":")[1])

    return asyncio.run(read())


def _serve(tmp_path: Path, url: str, n: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"serve-{n}.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "casewatch.cli", "serve", "--config", str(_config(tmp_path, url, 0))],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={k: v for k, v in os.environ.items() if not k.startswith("CASEWATCH_")},
        )
    return proc, log


def _logged(log: Path, text: str) -> str | None:
    """The first line of a process's log that contains `text`."""
    return next((line for line in log.read_text("utf-8", "replace").splitlines() if text in line), None)


def _wait_for_line(proc: subprocess.Popen[bytes], log: Path, text: str, within: float) -> str:
    deadline = time.monotonic() + within
    while (line := _logged(log, text)) is None:
        assert proc.poll() is None, f"the process exited ({proc.returncode}) before logging {text!r}"
        assert time.monotonic() < deadline, f"{text!r} not logged within {within}s"
        time.sleep(0.05)
    return line


def _logged_at(line: str) -> datetime:
    """When a line of casewatch's log (casewatch.logs.LINE_FORMAT: asctime, local time) was written."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


SERVING = "casewatch serving on"
TOOK_LEASE = "now holds the scheduler lease"


@pytest.mark.postgres
def test_two_serve_processes_leader_sigkilled(pg_url: str, tmp_path: Path) -> None:
    procs = []
    try:
        first, first_log = _serve(tmp_path, pg_url, 0)
        procs.append(first)
        # Start-up deadlines are generous (imports on a loaded machine); they bound nothing measured.
        _wait_for_line(first, first_log, SERVING, 60)
        deadline = time.monotonic() + 20
        while _holder_pid(pg_url) != first.pid:
            assert time.monotonic() < deadline, "the first process never led"
            time.sleep(0.1)
        second, second_log = _serve(tmp_path, pg_url, 1)
        procs.append(second)
        _wait_for_line(second, second_log, SERVING, 60)  # its scheduler loop is started
        time.sleep(2 * RENEW)  # and has found the lease taken, at least once
        assert _holder_pid(pg_url) == first.pid
        assert _logged(second_log, TOOK_LEASE) is None
        killed = datetime.now()  # local time, as the log's asctime
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        # Timed by the second process's own log line of the takeover, not by this test's polls.
        line = _wait_for_line(second, second_log, TOOK_LEASE, LEASE + RENEW + 15)
        took = (_logged_at(line) - killed).total_seconds()
        assert took <= LEASE + RENEW + 1.5, took
        print(f"takeover after SIGKILL: {took:.2f}s (bound {LEASE + RENEW}s)")
        assert _holder_pid(pg_url) == second.pid
        assert second.poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
