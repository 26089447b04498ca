"""Review of session 13's store.direct_read.fetch_in_transaction (0637b2a): where a statement sent
by asyncpg inside the transaction did not give what `session.execute` gives, or did not raise what
it raises. Each test runs the statement both ways (direct_read.ENABLED off and on) on PostgreSQL
and compares; each failed on 12c1450.

1. A textual statement's own values (`text(..).bindparams(n=..)`) were not sent: the direct path
   took only the caller's parameters and raised KeyError (a Select's own values were sent).
2. A Numeric or Float column made the statement's shape raise TypeError (asyncpg's numeric result
   processing wants the column's type code, which the shape has not): the statement failed
   instead of going through SQLAlchemy. `fetch` (the lookups' reads) shares the shape.
3. A value its type refuses (a naive datetime to UTCDateTime) was raised as the bare ValueError;
   SQLAlchemy's execution raises it as a StatementError (its `orig` the ValueError).
4. An error asyncpg raises that is no database error (an OSError: a connection reset) was wrapped
   as a StatementError, which store.errors.is_unavailable does not count as the database away
   (500, not 503); SQLAlchemy's execution raises it as it is (is_unavailable: an OSError).

What held (no test here beyond these): rows, names and value types of the events' insert, the
border checks' and travels' reads (NULLs, dates, aware datetimes with datetime.UTC, booleans,
unicode, empty results) alike both ways; the BEGIN the helper sends takes the engine's isolation
level (store.engine.reader's REPEATABLE READ); a rollback after a direct first statement keeps
nothing; a savepoint rolled back after a direct insert or a refused direct statement drops only
its own; a statement timeout (57014) is a DBAPIError, not invalidated, not unavailable; the ingest
retries 40001/40P01 raised under the direct events insert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import Float, Numeric, bindparam, cast, literal, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.store.direct_read import fetch_in_transaction
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.errors import is_unavailable
from casewatch.store.models import BorderCheck
from casewatch.store.types import UTCDateTime
from tests.test_store13_direct_writes import _direct

pytestmark = pytest.mark.postgres


@pytest.fixture
async def sessions(pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(pg_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def _both_ways(
    sessions: async_sessionmaker[AsyncSession], statement: Any, params: dict[str, Any]
) -> dict[bool, list[tuple[Any, ...]]]:
    rows = {}
    for on in (False, True):
        with _direct(on):
            async with sessions() as session, session.begin():
                await session.execute(select(1))  # the transaction begun
                rows[on] = [tuple(row) for row in await fetch_in_transaction(session, statement, params)]
    return rows


async def test_a_textual_statements_own_values_are_sent(sessions: async_sessionmaker[AsyncSession]) -> None:
    statement = text("SELECT CAST(:n AS int) + CAST(:m AS int)").bindparams(n=40)
    rows = await _both_ways(sessions, statement, {"m": 2})
    assert rows[True] == rows[False] == [(42,)]


async def test_numeric_and_float_columns_are_read_as_through_the_session(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    statement = select(
        cast(literal("1.5"), Numeric(4, 2)).label("amount"), cast(literal(2.5), Float).label("ratio")
    ).where(literal(1) == bindparam("one"))
    rows = await _both_ways(sessions, statement, {"one": 1})
    assert rows[True] == rows[False] == [(Decimal("1.50"), 2.5)]


async def test_a_value_its_type_refuses_is_raised_as_sqlalchemy_raises_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    at = bindparam("at", type_=UTCDateTime())
    statement = select(BorderCheck.event_id).where(BorderCheck.checked_at < at)
    raised = {}
    for on in (False, True):
        with _direct(on), pytest.raises(Exception) as caught:
            async with sessions() as session, session.begin():
                await session.execute(select(1))
                await fetch_in_transaction(session, statement, {"at": datetime(2026, 1, 1)})  # noqa: DTZ001 (naive: refused)
        raised[on] = caught.value
    assert type(raised[True]) is type(raised[False]) is StatementError
    assert isinstance(raised[True].orig, ValueError)  # type: ignore[attr-defined]


async def test_an_os_error_under_a_statement_is_raised_as_sqlalchemy_raises_it(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """By SQLAlchemy the statement runs as a prepared statement's fetch, by the helper as the
    connection's: each is made to raise a connection reset for the marked statement."""
    marked = "SELECT CAST(:n AS int) AS n /* reset */"

    def resetting(original: Any) -> Any:
        async def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
            query = args[0] if isinstance(self, asyncpg.Connection) else self.get_query()
            if "/* reset */" in query:
                raise ConnectionResetError("connection reset (a test's)")
            return await original(self, *args, **kwargs)

        return fetch

    monkeypatch.setattr(asyncpg.Connection, "fetch", resetting(asyncpg.Connection.fetch))
    prepared = asyncpg.prepared_stmt.PreparedStatement
    monkeypatch.setattr(prepared, "fetch", resetting(prepared.fetch))
    raised = {}
    for on in (False, True):
        with _direct(on), pytest.raises(Exception) as caught:
            async with sessions() as session, session.begin():
                await session.execute(select(1))
                await fetch_in_transaction(session, text(marked), {"n": 1})
        raised[on] = caught.value
    assert type(raised[True]) is type(raised[False]) is ConnectionResetError
    assert is_unavailable(raised[True])
