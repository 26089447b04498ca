"""A lookup's audit entry handed to the driver itself (audit.record(direct=True),
casewatch.audit.DIRECT_ENTRIES, tenth session), as the SQL SQLAlchemy sends with each value through
its column's bind processing (store.held), not through SQLAlchemy's execution. SQLite: an entry
about at most one nominal and its index row (audit_id = last_insert_rowid()) run with the COMMIT, so
a lone /flags answer makes two trips to the driver's thread, not three; PostgreSQL: the entry with
its index, one statement, sent by asyncpg. The same scenarios with it on and off, on SQLAlchemy's
own SQLite adapter and on casewatch's driver, give the same tables row by row (ids, index rows,
what a statement after a held one sees, rollbacks, savepoints, a refusal at the commit), and /flags
gives the same answers, audit entries and stored text either way, request by request, on every
path of both databases."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

import casewatch.audit as audit
import casewatch.audit.batch as batch_module
from casewatch.audit import Entry, record, record_many
from casewatch.audit.batch import AuditBatcher
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.migrate import upgrade
from tests import test_flags7_ride_along
from tests.support import T0, make_settings
from tests.test_bot import Bot, command_body, running_bot
from tests.test_flags7_autocommit import _never_alone
from tests.test_flags7_ride_along import _scenario, _tables
from tests.test_flags9_read_ahead import MORE, _entries_after, _post
from tests.test_flags_alone import REQUESTS, statements
from tests.test_sqlite_driver import DRIVERS, _make, trips

__all__ = ["trips"]  # the fixture, used here by name


@pytest.fixture
def ctx() -> Context:
    return Context(make_settings("sqlite+aiosqlite:///unused.db"), FixedClock(T0))


@pytest.fixture
async def four(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, AsyncEngine]]:
    """A fresh database for each driver, twice (the entry riding along, or not)."""
    engines = {
        (d, rides): _make(f"sqlite+aiosqlite:///{tmp_path}/{d}-{rides}.db", d, monkeypatch)
        for d in DRIVERS for rides in (True, False)
    }
    for engine in engines.values():
        await upgrade(engine)
    yield {f"{d}-{rides}": engine for (d, rides), engine in engines.items()}
    for engine in engines.values():
        await engine.dispose()


ride = partial(record, direct=True)


async def _more(engine: AsyncEngine, ctx: Context) -> list[Any]:
    """Entries of no nominal, one, several, back to back and between other statements."""
    seen: list[Any] = []
    sessions = make_sessionmaker(engine)
    async with sessions.begin() as session:
        await ride(session, ctx, actor="PC6", action="flags.lookup", subject="nobody", details={"n": 0})
        await ride(session, ctx, actor="PC6", action="flags.lookup", nominals=["VS-20"])
        await ride(session, ctx, actor="PC6", action="flags.lookup", nominals=["VS-21"])
        conn = await session.connection()
        # Another table's insert between entries: its rowid is not the next index row's.
        await conn.execute(text("CREATE TEMP TABLE IF NOT EXISTS scratch (id INTEGER PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO scratch (id) VALUES (424242)"))
        await ride(session, ctx, actor="PC6", action="flags.lookup", nominals=["VS-22", "VS-23"])
        await ride(session, ctx, actor="PC6", action="flags.lookup", nominals=["VS-24", "VS-24", ""])
        seen.append(("read back in the transaction", [tuple(r) for r in await conn.execute(text(
            "SELECT a.actor, n.visor_ref FROM audit_nominals n JOIN audit_log a ON a.id = n.audit_id "
            "ORDER BY n.audit_id, n.visor_ref"
        ))]))
    seen.append(("committed", await _tables(engine)))
    async with sessions.begin() as session:
        await record_many(session, ctx, [Entry("PC7", "alert.opened", nominals=("VS-25",))])
        await ride(session, ctx, actor="PC7", action="flags.lookup", nominals=["VS-26"])
    seen.append(("after a batch", await _tables(engine)))
    return seen


async def test_the_tables_are_the_same_with_the_entry_riding_along_or_not(
    four: dict[str, AsyncEngine], ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(test_flags7_ride_along, "record", ride)  # its scenario's entries ride too
    outcomes = {}
    for name, engine in four.items():
        monkeypatch.setattr(audit, "DIRECT_ENTRIES", name.endswith("True"))
        outcomes[name] = [*await _scenario(engine, ctx), *await _more(engine, ctx)]
    first = outcomes["one_trip-True"]
    assert all(outcome == first for outcome in outcomes.values())
    seen = dict(first)
    assert seen["refused"] == "IntegrityError"
    entries, index = seen["after a batch"]
    # Each index row names its own entry.
    by_id = {entry[0]: entry for entry in entries}
    assert all(ref in by_id[audit_id][3] for ref, audit_id in index)
    assert {f"VS-{n}" for n in range(20, 27)} <= {ref for ref, _ in index}


def test_the_held_entry_is_the_insert_sqlalchemy_sends_with_every_column_a_writer_gives() -> None:
    entry, index = audit._direct_statements(sqlite.dialect())
    assert entry[0] == "INSERT INTO audit_log (at, actor, action, subject, purpose, details, nominals, " \
        "content_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    assert entry[1] == audit._WRITTEN
    assert index[0] == "INSERT INTO audit_nominals (visor_ref, audit_id) VALUES (?, last_insert_rowid())"
    assert index[1] == ("visor_ref",)


async def test_a_refused_index_row_fails_the_commit_and_keeps_nothing(
    tmp_path: Path, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _make(f"sqlite+aiosqlite:///{tmp_path}/index.db", "one_trip", monkeypatch)
    await upgrade(engine)
    try:
        # An index row that the first entry's (id 1) will collide with, written without the
        # foreign key checked (plain sqlite3 leaves them off).
        with closing(sqlite3.connect(tmp_path / "index.db")) as plain, plain:
            plain.execute("INSERT INTO audit_nominals (visor_ref, audit_id) VALUES ('VS-1', 1)")
        sessions = make_sessionmaker(engine)
        with pytest.raises(IntegrityError):
            async with sessions.begin() as session:
                await record(session, ctx, actor="PC1", action="flags.lookup", nominals=["VS-1"])
        assert (await _tables(engine))[0] == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize("path", ["alone", "readers"])
async def test_flags_answers_and_entries_are_the_same_with_the_entry_direct_or_not(
    db_url: str, path: str, trips: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_bot(db_url) as bot:
        batcher = bot.service.audit_batcher
        if path == "readers":
            if batcher is None:
                pytest.skip("PostgreSQL has one path (the autocommit readers): compared under 'alone'")
            monkeypatch.setattr(batcher, "alone", _never_alone)
        engine = bot.service.engine if batcher is not None else bot.service.reader_engine
        assert engine is not None
        last, _ = await _entries_after(bot, 0)
        compared = 0
        for command, query, user in [*REQUESTS, *MORE]:
            body = command_body(command, query, user)
            answers, entries, index = [], [], []
            for direct in (True, False):
                monkeypatch.setattr(audit, "DIRECT_ENTRIES", direct)
                trips.clear()
                with statements(engine) as seen:
                    answers.append(await _post(bot, body, again=not direct))  # not a replay
                its_trips = list(trips)
                before = last
                last, written = await _entries_after(bot, last)
                entries.append(written)
                index.append(await _index_after(bot, before))
                one_or_none = engine.dialect.name != "sqlite" or all(len(e[0]) <= 1 for e in index[-1])
                if direct and written and command == "/flags" and one_or_none:
                    assert "INSERT" not in seen and "WITH" not in seen, body  # not through SQLAlchemy
                    if path == "alone" and batcher is not None:
                        assert "_commit_after" in its_trips, body  # the entry went with the COMMIT
            assert answers[0] == answers[1], body
            assert entries[0] == entries[1], body
            assert index[0] == index[1], body
            compared += len(entries[0])
        assert compared >= 18


async def _index_after(bot: Bot, last_id: int) -> list[tuple[Any, ...]]:
    """Each newer entry's index rows and its stored text (ids differ between the two runs)."""
    async with bot.service.engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT a.id, n.visor_ref FROM audit_log a LEFT JOIN audit_nominals n ON n.audit_id = a.id "
            "WHERE a.id > :last ORDER BY a.id, n.visor_ref"
        ), {"last": last_id})
        by_entry: dict[int, list[str]] = {}
        for entry_id, ref in rows:
            by_entry.setdefault(entry_id, []).extend([ref] if ref is not None else [])
        stored = await conn.execute(text(
            "SELECT CAST(at AS TEXT), CAST(details AS TEXT), CAST(nominals AS TEXT), content_hash "
            "FROM audit_log WHERE id > :last ORDER BY id"
        ), {"last": last_id})
        return [(tuple(refs), *raw) for refs, raw in zip(by_entry.values(), stored, strict=True)]


@pytest.mark.postgres
async def test_postgresql_sends_it_directly_only_on_a_begun_or_autocommit_connection(
    pg_url: str, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry as the transaction's first statement goes through SQLAlchemy (which begins the
    transaction); after a read it is sent by asyncpg, in that transaction; a statement asyncpg
    refuses is raised as SQLAlchemy's execution raises it (its DBAPIError, the adapter's error as
    `orig`: since the thirteenth session, store.direct_read.raise_as_executed; the adapter's own
    error before), and the transaction keeps nothing."""
    engine = make_engine(pg_url)
    sent: list[str] = []
    send = audit._send_pg

    async def noted(*args: Any) -> None:
        sent.append("direct")
        await send(*args)

    monkeypatch.setattr(audit, "_send_pg", noted)
    try:
        sessions = make_sessionmaker(engine)
        async with sessions.begin() as session:
            await ride(session, ctx, actor="PC1", action="flags.lookup", nominals=["VS-1"])
            assert sent == []
            await session.execute(text("SELECT 1"))
            await ride(session, ctx, actor="PC1", action="flags.lookup", nominals=["VS-2"])
            await ride(session, ctx, actor="PC1", action="flags.lookup")
            assert sent == ["direct", "direct"]
        entries, index = await _tables(engine)
        assert [(e[1], e[3]) for e in entries] == [("PC1", ["VS-1"]), ("PC1", ["VS-2"]), ("PC1", [])]
        assert [ref for ref, _ in index] == ["VS-1", "VS-2"]
        broken = ("SELECT * FROM no_such_table", (), ())
        monkeypatch.setattr(audit, "_direct_statements", lambda _dialect: (broken, broken))
        with pytest.raises(ProgrammingError) as raised:
            async with sessions.begin() as session:
                await session.execute(text("SELECT 1"))
                await ride(session, ctx, actor="PC2", action="flags.lookup", nominals=["VS-3"])
        assert isinstance(raised.value.orig, AsyncAdapt_asyncpg_dbapi.ProgrammingError)
        assert getattr(raised.value.orig, "sqlstate", None) == "42P01"  # undefined_table
        assert len((await _tables(engine))[0]) == 3
    finally:
        await engine.dispose()


async def test_a_group_commit_writes_the_same_tables_directly_as_through_record_many(
    tmp_path: Path, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's group commit (AuditBatcher): a batch's entries handed to the driver one by one,
    in the batch's order, or written by record_many: the same ids, entries and index rows."""
    batch = [
        Entry("PC1", "flags.lookup", "VS-1", nominals=("VS-1",)),
        Entry("PC2", "flags.lookup", "nobody"),
        Entry("PC3", "flags.lookup", "smith", nominals=("VS-3", "VS-2")),
        Entry("PC4", "slack.refused", "/flags"),
        Entry("PC5", "flags.reason_required", "VS-4", "", {"reason": "x' \\" + '"'}, ("VS-4",)),
    ]
    seen = []
    written: list[str] = []
    many = audit.record_many

    async def noted(*args: Any) -> None:
        written.append("record_many")
        await many(*args)

    monkeypatch.setattr(batch_module, "record_many", noted)
    for direct in (True, False):
        monkeypatch.setattr(audit, "DIRECT_ENTRIES", direct)
        engine = _make(f"sqlite+aiosqlite:///{tmp_path}/batch-{direct}.db", "one_trip", monkeypatch)
        await upgrade(engine)
        try:
            batcher = AuditBatcher(make_sessionmaker(engine), ctx)
            written.clear()
            await asyncio.gather(*(batcher.record(**vars(e)) for e in batch))
            assert written == ([] if direct else ["record_many"])  # one shared commit either way
            seen.append(await _tables(engine))
        finally:
            await engine.dispose()
    assert seen[0] == seen[1]
    assert len(seen[0][0]) == 5 and len(seen[0][1]) == 4
