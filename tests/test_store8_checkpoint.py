"""SQLite's WAL checkpoints off the request path (casewatch.store.checkpoint; serve does not start
it: bench/README, eighth session): the writer's commits never checkpoint while a WalCheckpointer
runs; the checkpointer does, at a quiet moment, when idle, under steady writes (the WAL stays
bounded), and hands SQLite's own automatic checkpoint back when it stops."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from casewatch.store.checkpoint import WalCheckpointer, WalFrames, read_wal_frames, start_wal_checkpoints
from casewatch.store.engine import make_engine, make_sessionmaker

BODY = "x" * 3500  # about a page a row
ROWS_PER_COMMIT = 4
NEVER = 10**9


def _path(url: str) -> str:
    return url.split("///", 1)[1]


async def _scratch(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE scratch8 (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")


_SESSIONS: dict[AsyncEngine, async_sessionmaker[AsyncSession]] = {}


async def _commit(engine: AsyncEngine) -> None:
    sessions = _SESSIONS.get(engine)
    if sessions is None:
        sessions = _SESSIONS[engine] = make_sessionmaker(engine)
    async with sessions.begin() as session:
        await session.execute(
            text("INSERT INTO scratch8 (body) VALUES (:body)"), [{"body": BODY}] * ROWS_PER_COMMIT
        )


async def _autocheckpoint(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one())


async def _until(done: Callable[[], bool], within: float) -> None:
    """Look every 10 ms until `done()` (the checkpointer works on a thread of its own)."""
    async with asyncio.timeout(within):
        while not done():  # noqa: ASYNC110 (a condition of another thread's work, no event to wait on)
            await asyncio.sleep(0.01)


def _frames(url: str) -> WalFrames:
    frames = read_wal_frames(_path(url))
    assert frames is not None
    return frames


async def _write_frames(engine: AsyncEngine, url: str, at_least: int) -> list[WalFrames]:
    """Commit until `at_least` frames were written; the WAL as it was after each commit."""
    seen: list[WalFrames] = []
    written = 0
    while written < at_least:
        before = _frames(url).length
        await _commit(engine)
        seen.append(_frames(url))
        written += max(1, seen[-1].length - before)
    return seen


async def test_read_wal_frames_agrees_with_sqlite(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        await _scratch(engine)
        for _ in range(5):
            await _commit(engine)
        frames = _frames(sqlite_url)
        with sqlite3.connect(_path(sqlite_url)) as other:
            busy, length, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0
        assert frames.length == length > 5
        after = _frames(sqlite_url)
        assert (after.length, after.copied, after.waiting) == (length, copied, 0)
    finally:
        await engine.dispose()


async def test_no_commit_checkpoints_while_the_checkpointer_owns_it(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    await _scratch(engine)
    # Bounds never reached: whatever is copied into the database now, a commit copied it.
    checkpointer = WalCheckpointer(engine, soft_frames=NEVER, busy_frames=NEVER, hard_frames=NEVER, idle=3600)
    checkpointer.start()
    try:
        assert await _autocheckpoint(engine) == 0
        start = _frames(sqlite_url)
        seen = await _write_frames(engine, sqlite_url, 2500)  # SQLite's own bound is 1000
        assert seen[-1].length >= start.length + 2400
        assert all(f.copied == start.copied for f in seen)  # no commit checkpointed
        assert checkpointer.counts.passive == checkpointer.counts.restart == 0
    finally:
        await checkpointer.stop()
    # Stopped: SQLite's automatic checkpoint is back, in the next commits (the check above would
    # have seen it).
    assert await _autocheckpoint(engine) == 1000
    await _commit(engine)
    assert _frames(sqlite_url).waiting < 1000
    await engine.dispose()


async def test_without_a_checkpointer_commits_checkpoint_as_before(sqlite_url: str) -> None:
    """The control for the test above: the same writes on a plain engine are checkpointed by the
    commits themselves (every 1000 frames)."""
    engine = make_engine(sqlite_url)
    try:
        await _scratch(engine)
        start = _frames(sqlite_url)
        seen = await _write_frames(engine, sqlite_url, 2500)
        assert await _autocheckpoint(engine) == 1000
        assert any(f.copied > start.copied or f.length < seen[0].length for f in seen)
        assert max(f.length for f in seen) < 1000 + 50
    finally:
        await engine.dispose()


async def test_checkpoints_at_a_quiet_moment_past_the_soft_bound(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    await _scratch(engine)
    checkpointer = WalCheckpointer(engine, soft_frames=60, busy_frames=NEVER, hard_frames=NEVER,
                                   quiet=0.03, idle=3600)
    checkpointer.start()
    try:
        seen = await _write_frames(engine, sqlite_url, 30)
        await asyncio.sleep(0.15)
        assert checkpointer.counts.passive == 0  # below the soft bound: left for later
        assert _frames(sqlite_url).copied == seen[0].copied
        await _write_frames(engine, sqlite_url, 40)
        waiting = _frames(sqlite_url).waiting
        assert waiting >= 60
        await _until(lambda: _frames(sqlite_url).waiting == 0, within=2)
        assert checkpointer.counts.passive == 1
        # Every frame copied: the next write starts the WAL again from its beginning.
        await _commit(engine)
        assert _frames(sqlite_url).length < waiting
    finally:
        await checkpointer.stop()
        await engine.dispose()


async def test_checkpoints_what_is_left_once_idle(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    await _scratch(engine)
    checkpointer = WalCheckpointer(engine, quiet=0.02, idle=0.2)  # soft bound 1000: never reached here
    checkpointer.start()
    try:
        await _write_frames(engine, sqlite_url, 20)
        assert 0 < _frames(sqlite_url).waiting < 1000
        started = time.monotonic()
        await _until(lambda: _frames(sqlite_url).waiting == 0, within=3)
        assert time.monotonic() - started >= 0.15  # after the idle time, not at the quiet moment
        assert checkpointer.counts.passive == 1
    finally:
        await checkpointer.stop()
        await engine.dispose()


async def test_steady_writes_keep_the_wal_bounded(sqlite_url: str) -> None:
    """Commits back to back, never a quiet moment: PASSIVE checkpoints run beside them once the
    busy bound is passed, and the WAL's length stays under the hard bound (RESTART if need be)."""
    engine = make_engine(sqlite_url)
    await _scratch(engine)
    hard = 400
    checkpointer = WalCheckpointer(engine, soft_frames=50, busy_frames=100, hard_frames=hard, quiet=0.05,
                                   idle=3600, restart_wait=0.05)
    checkpointer.start()
    try:
        lengths: list[int] = []
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            await _commit(engine)
            lengths.append(_frames(sqlite_url).length)
        assert sum(lengths) / len(lengths) > 0  # the writes went on throughout
        assert len(lengths) > 300
        assert checkpointer.counts.passive + checkpointer.counts.restart >= 3
        # Within one look (every `quiet`, 0.05 s) of the hard bound: writes go on while it looks.
        per_commit = max(b - a for a, b in zip(lengths, lengths[1:], strict=False) if b > a)
        commits_per_look = len(lengths) / 2.5 * 0.05 * 3  # three looks' worth, for a loaded machine
        assert max(lengths) <= hard + per_commit * commits_per_look
        assert min(lengths[len(lengths) // 2:]) < hard  # it came back down, and stays there
        assert await _autocheckpoint(engine) == 0
    finally:
        await checkpointer.stop()
        await engine.dispose()


async def test_a_failing_checkpoint_gives_the_commits_their_checkpoint_back(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(sqlite_url)
    await _scratch(engine)
    checkpointer = WalCheckpointer(engine, soft_frames=10, busy_frames=10, hard_frames=NEVER, quiet=0.02)

    def broken(*, restart: bool) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    checkpointer._checkpoint = broken  # type: ignore[method-assign]
    checkpointer.start()
    try:
        await _write_frames(engine, sqlite_url, 30)
        await _until(lambda: checkpointer.failed, within=2)
        assert await _autocheckpoint(engine) == 1000
        assert "WAL checkpoints failed (OperationalError)" in caplog.text
    finally:
        await checkpointer.stop()
        await engine.dispose()


async def test_a_reconnected_writer_takes_the_setting_again(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    checkpointer = WalCheckpointer(engine)
    checkpointer.start()
    try:
        assert await _autocheckpoint(engine) == 0
        await engine.dispose()  # the pool's connection closed; the next checkout connects afresh
        assert await _autocheckpoint(engine) == 0
    finally:
        await checkpointer.stop()
    assert await _autocheckpoint(engine) == 1000
    await engine.dispose()


async def test_nothing_to_checkpoint_without_a_database_file(tmp_path: Path) -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        assert start_wal_checkpoints(engine) is None
        with pytest.raises(ValueError, match="SQLite database file"):
            WalCheckpointer(engine)
    finally:
        await engine.dispose()


async def test_waits_while_the_process_has_work_in_flight(sqlite_url: str) -> None:
    """With `quiet_for` (wiring: requests and transactions in flight), a quiet moment needs it too."""
    engine = make_engine(sqlite_url)
    await _scratch(engine)
    in_flight = [True]
    checkpointer = WalCheckpointer(engine, soft_frames=30, busy_frames=NEVER, hard_frames=NEVER, quiet=0.02,
                                   idle=3600, quiet_for=lambda: 0.0 if in_flight[0] else 1.0)
    checkpointer.start()
    try:
        await _write_frames(engine, sqlite_url, 40)
        await asyncio.sleep(0.2)
        assert checkpointer.counts.passive == 0 and _frames(sqlite_url).waiting >= 30
        in_flight[0] = False
        await _until(lambda: _frames(sqlite_url).waiting == 0, within=2)
        assert checkpointer.counts.passive == 1
    finally:
        await checkpointer.stop()
        await engine.dispose()
