"""Review (sixth session, issue 17): store.sqlite_driver against SQLAlchemy's own aiosqlite adapter
where its tests do not look: server-side cursors (`stream`), savepoints, a task cancelled mid-trip.

The one-trip connection sends a transaction's BEGIN with the next statement of its own cursor; a
server-side cursor is the parent's, so the BEGIN must go before it (it did not at first: a streamed
first statement took no write lock, and a streamed write was committed at once, kept when its
transaction rolled back). Real SQLite files; each scenario runs on both drivers and the outcomes
are compared."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.store.engine import make_sessionmaker
from tests.test_sqlite_driver import both

__all__ = ["both"]  # the fixture (SQLite files, one a driver), used here by name


def _another_process_may_write(path: Path) -> bool:
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


async def _names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return [str(r[0]) for r in (await conn.exec_driver_sql("SELECT name FROM t ORDER BY name")).all()]


async def test_a_streamed_first_statement_takes_the_write_lock_as_plain(
    both: dict[str, AsyncEngine], tmp_path: Path
) -> None:
    seen = {}
    for driver, engine in both.items():
        async with engine.begin() as conn:
            result = await conn.stream(text("SELECT count(*) FROM t"))
            assert [tuple(row) async for row in result] == [(0,)]
            seen[driver] = _another_process_may_write(tmp_path / f"{driver}.db")
    assert seen["plain"] is False  # BEGIN IMMEDIATE ran before the read: the lock is held
    assert seen["one_trip"] == seen["plain"]


async def test_a_streamed_write_is_undone_by_the_rollback_as_plain(both: dict[str, AsyncEngine]) -> None:
    kept = {}
    for driver, engine in both.items():
        with pytest.raises(LookupError):
            async with engine.begin() as conn:
                result = await conn.stream(text("INSERT INTO t (name) VALUES ('Testperson') RETURNING id"))
                assert len([row async for row in result]) == 1
                raise LookupError("something later in the transaction failed")
        kept[driver] = await _names(engine)
    assert kept["plain"] == []
    assert kept["one_trip"] == kept["plain"]


async def test_savepoints_behave_as_plain(both: dict[str, AsyncEngine]) -> None:
    """A savepoint as the transaction's first statement (BEGIN rides with it), one rolled back,
    one released, and one that failed on a constraint and was rolled back, the transaction going
    on: the same rows on both drivers, and no transaction left open."""
    outcome = {}
    for driver, engine in both.items():
        sessions = make_sessionmaker(engine)
        async with sessions.begin() as session:
            nested = await session.begin_nested()
            await session.execute(text("INSERT INTO t (name) VALUES ('undone')"))
            await nested.rollback()
            await session.execute(text("INSERT INTO t (name) VALUES ('Example')"))
            async with session.begin_nested():
                await session.execute(text("INSERT INTO t (name) VALUES ('released')"))
            with pytest.raises(IntegrityError):
                async with session.begin_nested():
                    await session.execute(text("INSERT INTO t (name) VALUES ('Example')"))
            await session.execute(text("INSERT INTO t (name) VALUES ('after the failure')"))
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            open_after = raw.driver_connection._conn.in_transaction  # type: ignore[union-attr]
        outcome[driver] = (await _names(engine), open_after)
    assert outcome["plain"] == (["Example", "after the failure", "released"], False)
    assert outcome["one_trip"] == outcome["plain"]


async def test_a_task_cancelled_mid_statement_leaves_nothing_behind(
    both: dict[str, AsyncEngine], tmp_path: Path
) -> None:
    """Cancelled while its statement runs on the driver's thread (a request's deadline, a stop):
    its earlier write is rolled back, the connection goes back to the pool with no transaction
    open (the next transaction on it begins and commits), and no lock is left held."""
    engine = both["one_trip"]
    sessions = make_sessionmaker(engine)
    slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
            "SELECT count(*) FROM c")

    async def work() -> None:
        async with sessions.begin() as session:
            await session.execute(text("INSERT INTO t (name) VALUES ('cancelled')"))
            await session.execute(text(slow))

    for cancel_after in (0.0, 0.05):
        task = asyncio.create_task(work())
        await asyncio.sleep(cancel_after)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with sessions.begin() as session:
            await session.execute(text("INSERT INTO t (name) VALUES (:n)"), {"n": f"next {cancel_after}"})
    assert await _names(engine) == ["next 0.0", "next 0.05"]
    assert _another_process_may_write(tmp_path / "one_trip.db")


_OTHER_PROCESS_WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("PRAGMA busy_timeout=30000")
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
n = 0
while time.monotonic() < end:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO t (name) VALUES (?)", (f"other {sys.argv[3]} {n}",))
    conn.execute("COMMIT")
    n += 1
    time.sleep(0.001)
print(n, flush=True)
"""


async def _read_then_write_beside_another_process(
    engine: AsyncEngine, path: Path, *, read_only_option: bool
) -> tuple[int, int, int]:
    """Transactions that read, then write, while another process writes in a loop: (committed,
    refused as locked, the other's commits)."""
    import sys

    from sqlalchemy.exc import OperationalError

    from casewatch.store.engine import _READ_ONLY

    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _OTHER_PROCESS_WRITER, str(path), "1.5", str(read_only_option),
        stdout=asyncio.subprocess.PIPE,
    )
    assert other.stdout is not None
    assert (await other.stdout.readline()).strip() == b"ready"
    bound = engine.execution_options(**{_READ_ONLY: True}) if read_only_option else engine
    committed = refused = 0
    n = 0
    while other.returncode is None and n < 5000:  # until the other ends: its commits fall among ours
        n += 1
        try:
            async with bound.begin() as conn:
                seen = (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()
                await asyncio.sleep(0.002)  # the other process commits meanwhile, if it may
                mine = f"mine {read_only_option} {n} after {seen}"
                await conn.execute(text("INSERT INTO t (name) VALUES (:n)"), {"n": mine})
            committed += 1
        except OperationalError as exc:
            assert "locked" in str(exc.orig)
            refused += 1
        await asyncio.sleep(0)
    out, _ = await other.communicate()
    assert other.returncode == 0
    return committed, refused, int(out.split()[-1])


async def test_a_read_then_write_never_fails_half_way_beside_another_process(
    both: dict[str, AsyncEngine], tmp_path: Path
) -> None:
    """casewatch import beside a running service: the transaction's first statement takes the write
    lock (BEGIN IMMEDIATE rides with it), so a read-then-write waits for the other process instead
    of failing at its write. The control: the same transactions begun DEFERRED (as a reader's)
    are refused half way, so the scenario does make the other process write in between."""
    engine = both["one_trip"]
    committed, refused, others = await _read_then_write_beside_another_process(
        engine, tmp_path / "one_trip.db", read_only_option=False
    )
    assert refused == 0 and committed > 20 and others > 0  # the other got the lock in between, too
    committed, refused, others = await _read_then_write_beside_another_process(
        engine, tmp_path / "one_trip.db", read_only_option=True
    )
    assert refused > 0
