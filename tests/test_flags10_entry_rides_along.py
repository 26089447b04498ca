"""SQLite: a lookup's audit entry about at most one nominal rides with the transaction's next trip
(audit.record(ride_along=True), casewatch.audit.ENTRY_RIDES_ALONG, tenth session): the entry and
its index row, whose audit_id is last_insert_rowid(), are handed to the one-trip driver as the SQL
SQLAlchemy sends (ingest.held) and run with the COMMIT, so a lone /flags answer makes two trips to
the driver's thread, not three, and two statements fewer go through SQLAlchemy's execution. The
same scenarios written with it on and off, on SQLAlchemy's own adapter and on casewatch's driver,
give the same tables row by row (ids, index rows, what a statement after a held one sees,
rollbacks, savepoints, a refusal at the commit), and /flags gives the same answers and audit
entries either way, request by request, on the writer alone and through the group commit."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

import casewatch.audit as audit
from casewatch.audit import Entry, record, record_many
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.store.engine import make_sessionmaker
from casewatch.store.migrate import upgrade
from tests import test_flags7_ride_along
from tests.support import T0, make_settings
from tests.test_bot import Bot, command_body, running_bot
from tests.test_flags7_autocommit import _never_alone
from tests.test_flags7_ride_along import _scenario, _tables
from tests.test_flags9_read_ahead import MORE, _entries_after, _post
from tests.test_flags_alone import REQUESTS
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


ride = partial(record, ride_along=True)


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
        monkeypatch.setattr(audit, "ENTRY_RIDES_ALONG", name.endswith("True"))
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
    entry, index = audit._held_statements(sqlite.dialect())
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
async def test_flags_answers_and_entries_are_the_same_with_the_entry_riding_along_or_not(
    sqlite_url: str, path: str, trips: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_bot(sqlite_url) as bot:
        batcher = bot.service.audit_batcher
        assert batcher is not None
        if path == "readers":
            monkeypatch.setattr(batcher, "alone", _never_alone)
        last, _ = await _entries_after(bot, 0)
        compared = 0
        for command, query, user in [*REQUESTS, *MORE]:
            body = command_body(command, query, user)
            answers, entries, index = [], [], []
            for rides in (True, False):
                monkeypatch.setattr(audit, "ENTRY_RIDES_ALONG", rides)
                trips.clear()
                answers.append(await _post(bot, body))
                its_trips = list(trips)
                before = last
                last, written = await _entries_after(bot, last)
                entries.append(written)
                index.append(await _index_after(bot, before))
                if rides and written and path == "alone" and command == "/flags":
                    assert "_commit_after" in its_trips, body  # the entry went with the COMMIT
            assert answers[0] == answers[1], body
            assert entries[0] == entries[1], body
            assert index[0] == index[1], body
            compared += len(entries[0])
        assert compared >= 18


async def _index_after(bot: Bot, last_id: int) -> list[tuple[str, ...]]:
    """Each newer entry's index rows, by the entry's nominals (ids differ between the two runs)."""
    async with bot.service.engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT a.nominals, group_concat(n.visor_ref) FROM audit_log a "
            "LEFT JOIN audit_nominals n ON n.audit_id = a.id WHERE a.id > :last GROUP BY a.id ORDER BY a.id"
        ), {"last": last_id})
        return [tuple(r) for r in rows]
