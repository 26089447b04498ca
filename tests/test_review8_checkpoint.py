"""Review 8 (R): SQLite's WAL checkpointer (casewatch.store.checkpoint) must keep checkpoints off
the request path. A long reader (another connection's read transaction: `casewatch audit verify`,
`export` and `chronology` read in one DEFERRED transaction, store.engine.reader) pins the WAL;
SQLite's own automatic checkpoint then copies what it can and never holds a writer. The
checkpointer must not either: its RESTART takes the WAL's write lock and waits for readers."""

from __future__ import annotations

import asyncio
import sqlite3
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.store.checkpoint import WalCheckpointer
from casewatch.store.engine import make_engine, make_sessionmaker

BODY = "x" * 3500  # about a page a row


# Commits a run makes at least: 4 rows of about a page each, so the WAL passes the checkpointer's
# hard bound (80 frames) several times over while the reader pins it. A slow disk makes the
# run longer (up to MAX_SECONDS), not thinner (CI: 39 commits in 2.5 s once, each fsync slow).
AT_LEAST = 61
MAX_SECONDS = 20.0


async def _commit_times(engine: AsyncEngine, seconds: float) -> list[float]:
    sessions = make_sessionmaker(engine)
    took: list[float] = []
    started_all = time.monotonic()
    deadline, cap = started_all + seconds, started_all + MAX_SECONDS
    while time.monotonic() < deadline or (len(took) < AT_LEAST and time.monotonic() < cap):
        started = time.monotonic()
        async with sessions.begin() as session:
            await session.execute(text("INSERT INTO scratch_r8 (body) VALUES (:body)"), [{"body": BODY}] * 4)
        took.append(time.monotonic() - started)
        await asyncio.sleep(0.005)
    return took


def _second_worst(took: list[float]) -> float:
    """The second slowest commit: one fsync of this virtual disk may take a second on its own
    (bench/README, SQLite's long commits, eighth session); a held commit repeats."""
    return sorted(took)[-2]


async def _writes_beside_a_long_reader(sqlite_url: str, *, checkpointer: bool) -> list[float]:
    engine = make_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE scratch_r8 (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    running = WalCheckpointer(
        engine, soft_frames=20, busy_frames=40, hard_frames=80, quiet=0.05, idle=3600, restart_wait=1.0
    ) if checkpointer else None
    if running is not None:
        running.start()
    reader = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM scratch_r8").fetchall()  # its snapshot is now pinned
        return await _commit_times(engine, 2.5)
    finally:
        reader.execute("COMMIT")
        reader.close()
        if running is not None:
            await running.stop()
        await engine.dispose()


async def test_without_the_checkpointer_a_long_reader_holds_no_commit(sqlite_url: str) -> None:
    took = await _writes_beside_a_long_reader(sqlite_url, checkpointer=False)
    assert len(took) >= AT_LEAST and _second_worst(took) < 0.25, (len(took), sorted(took)[-3:])


async def test_a_long_reader_does_not_make_the_checkpointer_hold_commits(sqlite_url: str) -> None:
    took = await _writes_beside_a_long_reader(sqlite_url, checkpointer=True)
    worst = _second_worst(took)
    assert worst < 0.25, f"commits waited {sorted(took)[-3:]} s; {len(took)} commits"
    assert len(took) >= AT_LEAST


async def test_steady_writes_keep_the_wal_near_its_hard_bound_with_the_default_back_off(
    sqlite_url: str,
) -> None:
    """Back-to-back commits (the service's writer always busy), the checkpointer's own back-off
    after a busy RESTART (RESTART_WAIT_SECONDS): the WAL still comes back under a few times its
    hard bound, not only when the writes pause."""
    from casewatch.store.checkpoint import read_wal_frames

    engine = make_engine(sqlite_url)
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE scratch_r8 (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    hard = 400
    running = WalCheckpointer(
        engine, soft_frames=50, busy_frames=100, hard_frames=hard, quiet=0.05, idle=3600
    )
    running.start()
    sessions = make_sessionmaker(engine)
    lengths: list[int] = []
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            async with sessions.begin() as session:
                await session.execute(
                    text("INSERT INTO scratch_r8 (body) VALUES (:body)"), [{"body": BODY}] * 4
                )
            frames = read_wal_frames(sqlite_url.split("///", 1)[1])
            lengths.append(frames.length if frames is not None else 0)
    finally:
        await running.stop()
        await engine.dispose()
    assert len(lengths) > 200
    assert max(lengths) <= 4 * hard, (max(lengths), running.counts)
