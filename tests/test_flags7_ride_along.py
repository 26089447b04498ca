"""SQLite: an audit entry's nominal index rows ride with the transaction's next trip to the driver's
thread (store.sqlite_driver.defer_next_statement, chosen by store.engine for audit_nominals
inserts): a /flags answer that has the writer to itself makes four trips instead of five, its index
rows going with the COMMIT. Everything a caller sees is the same as with SQLAlchemy's own aiosqlite
adapter, which runs each statement when it is given: the rows written, statements after a held one
seeing it, a rollback or savepoint undoing it, a held row the database refuses failing the
transaction at its commit, nothing left half-written. Each scenario runs on both drivers and the
outcomes are compared (as tests/test_sqlite_driver.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.audit import _INSERT_NOMINALS, Entry, record, record_many
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.store.engine import make_sessionmaker
from casewatch.store.migrate import upgrade
from tests.support import T0, make_settings
from tests.test_bot import ALPHA, SGT, Bot, running_bot, shown, slash
from tests.test_sqlite_driver import DRIVERS, _make, trips

__all__ = ["trips"]  # the fixture, used here by name


@pytest.fixture
async def both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, AsyncEngine]]:
    engines = {d: _make(f"sqlite+aiosqlite:///{tmp_path}/{d}.db", d, monkeypatch) for d in DRIVERS}
    for engine in engines.values():
        await upgrade(engine)
    yield engines
    for engine in engines.values():
        await engine.dispose()


async def _tables(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        entries = await conn.execute(text("SELECT id, actor, action, nominals FROM audit_log ORDER BY id"))
        index = await conn.execute(text("SELECT visor_ref, audit_id FROM audit_nominals ORDER BY 2, 1"))
        return [[tuple(r) for r in entries], [tuple(r) for r in index]]


async def _scenario(engine: AsyncEngine, ctx: Context) -> list[Any]:
    seen: list[Any] = []
    sessions = make_sessionmaker(engine)
    async with sessions.begin() as session:
        await record(session, ctx, actor="PC1", action="flags.lookup", nominals=["VS-1", "VS-2"])
        # A statement after the held index rows sees them (they run first in its trip).
        conn = await session.connection()
        seen.append(("seen in the transaction", (await conn.execute(
            text("SELECT count(*) FROM audit_nominals")
        )).scalar_one()))
        await record(session, ctx, actor="PC1", action="flags.lookup", nominals=["VS-3"])
    seen.append(("committed", await _tables(engine)))
    # A rollback undoes held rows (they never run).
    async with sessions() as session:
        async with session.begin():
            await record(session, ctx, actor="PC2", action="flags.lookup", nominals=["VS-4"])
            await session.rollback()
    seen.append(("after a rollback", await _tables(engine)))
    # A savepoint rolled back undoes the index rows written inside it, not those before it.
    async with sessions.begin() as session:
        await record(session, ctx, actor="PC3", action="flags.lookup", nominals=["VS-5"])
        savepoint = await session.begin_nested()
        await record(session, ctx, actor="PC3", action="flags.lookup", nominals=["VS-6"])
        await savepoint.rollback()
    seen.append(("after a savepoint", await _tables(engine)))
    # Index rows the database refuses (no such entry): the transaction fails at its commit,
    # and nothing of it is kept, the entry written before them included.
    try:
        async with sessions.begin() as session:
            await record(session, ctx, actor="PC4", action="flags.lookup", nominals=["VS-7"])
            conn = await session.connection()
            await conn.execute(_INSERT_NOMINALS, [{"visor_ref": "VS-8", "audit_id": 999_999}])
    except IntegrityError as exc:
        seen.append(("refused", type(exc.orig).__name__))
    seen.append(("after a refusal", await _tables(engine)))
    # A batch (record_many): its entries and their index rows.
    async with sessions.begin() as session:
        await record_many(session, ctx, [
            Entry("PC5", "alert.opened", nominals=("VS-9",)),
            Entry("PC5", "alert.opened", nominals=("VS-10", "VS-11")),
        ])
    seen.append(("a batch", await _tables(engine)))
    return seen


async def test_index_rows_riding_along_are_written_as_with_the_plain_adapter(
    both: dict[str, AsyncEngine], ctx: Context
) -> None:
    outcomes = {driver: await _scenario(engine, ctx) for driver, engine in both.items()}
    assert outcomes["one_trip"] == outcomes["plain"]
    seen = dict(outcomes["one_trip"])
    assert seen["seen in the transaction"] == 2
    assert seen["refused"] == "IntegrityError"
    entries, index = seen["a batch"]
    assert sorted(ref for ref, _ in index) == sorted(f"VS-{n}" for n in (1, 2, 3, 5, 9, 10, 11))
    assert [e[1] for e in entries] == ["PC1", "PC1", "PC3", "PC5", "PC5"]


async def test_a_lone_lookup_makes_two_trips_its_entry_and_index_rows_with_the_commit(
    sqlite_url: str, trips: list[str]
) -> None:
    async with running_bot(sqlite_url) as bot:
        await _warm(bot)
        trips.clear()
        answer = await slash(bot, "/flags", ALPHA, user=SGT)
        assert ALPHA in shown(answer)
        # BEGIN with the requester and the view (one statement since the ninth session), then the
        # entry and its index row with the COMMIT (since the tenth session: audit.ENTRY_RIDES_ALONG).
        assert trips == ["_run", "_commit_after"]
        async with bot.service.engine.connect() as conn:
            newest = (await conn.execute(text("SELECT max(id) FROM audit_log"))).scalar_one()
            of_newest = text("SELECT visor_ref FROM audit_nominals WHERE audit_id = :i")
            index = await conn.execute(of_newest, {"i": newest})
            assert [r[0] for r in index] == [ALPHA]


async def _warm(bot: Bot) -> None:
    await slash(bot, "/flags", ALPHA, user=SGT)


@pytest.fixture
def ctx() -> Context:
    return Context(make_settings("sqlite+aiosqlite:///unused.db"), FixedClock(T0))
