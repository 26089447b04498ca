"""SQLite: a batch's fixed writes handed to the driver's connection, to run at the start of its next
trip (store.sqlite_driver.OneTripConnection.hold), instead of each through SQLAlchemy's execution.

The records (visits, notifications, ...), the new actions and the notification dates Batch.finish
writes are plain inserts and one update whose outcome nothing reads. Through `session.execute`
each cost ~0.2-0.25 ms of the event loop (the execution context, the parameters, a result, a trip
to the driver's thread): at 8 requesters a group's four writes were ~1 ms of ~4.5. Here each is its
statement compiled once for the dialect (the SQL SQLAlchemy sends for the same insert or update),
its rows given as tuples in the compiled order through each parameter's own bind processing (the
dialect's, UTCDateTime's): the same SQL and the same values reach sqlite3. They run, in order,
before the transaction's next statement (the rules' read of live alerts) or its COMMIT; a rollback
drops them; a write that fails fails the statement whose trip ran it, so the transaction fails as
it would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import ARRAY, Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeEngine

from casewatch.store.sqlite_driver import OneTripConnection

Processor = Callable[[Any], Any] | None
Compiled = tuple[str, tuple[str, ...], tuple[Processor, ...]]


async def holder(session: AsyncSession) -> OneTripConnection | None:
    """The session's one-trip SQLite connection, or None (PostgreSQL, another driver). The
    session's transaction has begun (the batch's events are stored)."""
    connection = await session.connection()
    dbapi_connection = connection.sync_connection.connection.dbapi_connection  # type: ignore[union-attr]
    return dbapi_connection if isinstance(dbapi_connection, OneTripConnection) else None


def hold_insert(
    connection: OneTripConnection, dialect: Dialect, table: Table, rows: Sequence[dict[str, Any]]
) -> bool:
    """Hold INSERT INTO table (keys) VALUES (...) for these rows (each with the first's keys).
    False, nothing held, when the insert SQLAlchemy would send has parameters other than the
    rows' keys (a column default): the caller then runs it as before."""
    keys = tuple(rows[0])
    compiled = _compiled_insert(dialect, table, keys)
    if compiled is None or any(row.keys() != set(keys) for row in rows):
        return False
    hold(connection, compiled, rows)
    return True


def hold(connection: OneTripConnection, compiled: Compiled, rows: Sequence[dict[str, Any]]) -> None:
    """Hold `compiled` (compiled_statement) for these rows, as one executemany."""
    sql, names, processors = compiled
    pairs = tuple(zip(names, processors, strict=True))
    parameters = [
        tuple(row[name] if process is None else process(row[name]) for name, process in pairs) for row in rows
    ]
    connection.hold(sql, parameters, many=True)


@lru_cache(maxsize=128)
def _compiled_insert(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> Compiled | None:
    compiled = compiled_statement(dialect, insert(table), keys)
    return compiled if compiled[1] == keys else None


def compiled_statement(dialect: Dialect, statement: UpdateBase, keys: Sequence[str] = ()) -> Compiled:
    """`statement`'s SQL for `dialect`, its positional parameters' names and each one's bind
    processor (None for none): what SQLAlchemy's execution does with them, done once."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    names, processors = positional_binds(compiled, dialect)
    return compiled.string, names, processors


def positional_binds(
    compiled: SQLCompiler, dialect: Dialect
) -> tuple[tuple[str, ...], tuple[Processor, ...]]:
    """A compiled statement's positional parameters' names, in order, and each one's bind
    processor (None for none); an array's as array_binder's."""
    names = tuple(compiled.positiontup or ())
    processors = tuple(_binder(compiled.binds[name].type, dialect) for name in names)
    return names, processors


def _binder(kind: TypeEngine[Any], dialect: Dialect) -> Processor:
    impl = kind.dialect_impl(dialect)
    if isinstance(impl, ARRAY) and impl.dimensions in (None, 1):
        return array_binder(impl.item_type.dialect_impl(dialect).bind_processor(dialect))
    return impl.bind_processor(dialect)


def array_binder(item: Processor) -> Callable[[Any], list[Any] | None]:
    """A one-dimensional array's bind processing: each item through `item` (its type's own), the
    array a list. SQLAlchemy's ARRAY without `dimensions` takes an array whose first item is a list
    for an array of more than one dimension and processes that list's items one by one (a JSON
    item that is a list then goes as its items, each serialised), and looks that up again at every
    execution: the arrays bound here (ingest.arrays, store.lists, audit) are one-dimensional, each
    item a value of its column, whatever that value is."""
    if item is None:
        return lambda value: None if value is None else list(value)
    process = item
    return lambda value: None if value is None else [process(x) for x in value]
