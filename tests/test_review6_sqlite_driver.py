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
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.store import engine as store_engine
from casewatch.store.engine import make_sessionmaker

DRIVERS = ("plain", "one_trip")


def _make(url: str, driver: str, monkeypatch: pytest.MonkeyPatch) -> AsyncEngine:
    """store.engine.make_engine with the given driver (plain: SQLAlchemy's own adapter)."""
    if driver == "plain":
        with monkeypatch.context() as m:
            m.setattr(store_engine, "_sqlite_driver", lambda _url: {})
            return store_engine.make_engine(url)
    return store_engine.make_engine(url)


@pytest.fixture
async def both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, AsyncEngine]]:
    engines = {d: _make(f"sqlite+aiosqlite:///{tmp_path}/{d}.db", d, monkeypatch) for d in DRIVERS}
    for engine in engines.values():
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)")
    yield engines
    for engine in engines.values():
        await engine.dispose()


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
