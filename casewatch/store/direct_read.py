"""PostgreSQL: a hot read sent by asyncpg itself, its rows made as SQLAlchemy would make them.

A /flags answer on PostgreSQL is two statements, the read of the requester with the nominal asked
for and the audit entry (which audit.record already hands to asyncpg). Through SQLAlchemy's
execution the read cost ~0.3 ms of the event loop more than asyncpg's own `fetch` of the same SQL
(the execution context, the cursor adapter's prepare, the result object: bench/README.md, "/flags
against the least work", eleventh session), a fifth of an answer's CPU. Here the statement is
compiled once for the dialect, each parameter goes through its bind processing, each column
through its result processing (the same type processing SQLAlchemy's execution applies; asyncpg
decodes JSON with the codecs SQLAlchemy's dialect set up on connect), and each row is a named tuple
of the statement's column keys: the same values under the same names.

Only on an asyncpg connection in autocommit (the lookups' readers: store.make_reader_engine),
where each statement is its own transaction; anywhere else, and for a statement whose keys are
not plain names, it goes through SQLAlchemy as before. Should asyncpg raise, the statement is
sent again through SQLAlchemy, whose error handling then applies: a lost connection is
invalidated and reported as such (store.engine.found_connection_gone), an error is translated.
A read in autocommit leaves nothing behind, so sending it twice is harmless.

`fetch_in_transaction` is the same for a statement of a session's transaction (a write, or a read
beside writes: the ingest's hot statements), its BEGIN first when it is the transaction's first
statement, as the adapter sends it: sent once, never again; should asyncpg raise,
the error goes through the adapter's translation and then SQLAlchemy's own handling of a failed
execution, as `session.execute` would have raised it (a DBAPIError whose `orig` carries the
SQLSTATE, a lost connection invalidated with the pool's others). Listeners of SQLAlchemy's
before_cursor_execute see it sent, as they see the statements SQLAlchemy sends.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NoReturn

from sqlalchemy import Select, TextClause
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

from casewatch.store.held import Processor, positional_binds

# Whether fetch() sends reads by asyncpg (a switch for the differential tests and the bench).
ENABLED = True


@dataclass(frozen=True)
class _Shape:
    sql: str
    names: tuple[str, ...]  # positional parameters, in order
    binds: tuple[Processor, ...]
    fixed: Mapping[str, Any]  # the statement's own values (literals bound as parameters)
    results: tuple[Processor, ...]
    row: type[tuple[Any, ...]]


async def fetch(connection: AsyncConnection, statement: Select[Any], params: Mapping[str, Any]) -> list[Any]:
    """The rows of `statement` with `params`, as `list(await connection.execute(statement,
    params))` gives them (attribute access by column key), by asyncpg where it may."""
    driver = _asyncpg(connection)
    shape = _shape(connection.dialect, statement) if driver is not None and ENABLED else None
    if driver is None or shape is None:
        return list(await connection.execute(statement, params))
    args = _bound(shape, params)
    try:
        records = await driver.driver_connection.fetch(shape.sql, *args)
    except Exception:  # noqa: BLE001 - sent again through SQLAlchemy, whose handling then applies
        return list(await connection.execute(statement, params))
    return [shape.row(*_processed(record, shape.results)) for record in records]


async def fetch_in_transaction(session: AsyncSession, statement: Any, params: Mapping[str, Any]) -> list[Any]:
    """The rows of `statement` (a SELECT, or a statement with RETURNING whose columns are plain
    names; a textual statement's as plain tuples) with `params`, in the session's transaction, as
    `list(await session.execute(statement, params))` gives them: by asyncpg where the transaction
    has begun on an asyncpg connection and the session has nothing to flush first, else through
    the session (which flushes), as before."""
    connection = await session.connection()
    driver = _in_transactions(connection)
    shape = _shape(connection.dialect, statement) if driver is not None and ENABLED else None
    if driver is None or shape is None or not session.sync_session._is_clean():
        return list(await session.execute(statement, params))
    try:
        args = _bound(shape, params)
    except Exception as error:  # noqa: BLE001 - a value its type refuses: a StatementError, as SQLAlchemy's
        await greenlet_spawn(_raise_unsent, connection, error, shape.sql, params)
        raise AssertionError("unreachable") from error
    _seen_by_listeners(connection, shape.sql, args)
    try:
        if driver._transaction is None:
            # The transaction's first statement: its BEGIN first, as the adapter sends it before
            # the first statement it executes (SQLAlchemy's transaction has begun: the session's).
            await driver._start_transaction()  # type: ignore[no-untyped-call]
        records = await driver.driver_connection.fetch(shape.sql, *args)
    except Exception as error:  # noqa: BLE001 - raised as SQLAlchemy's execution raises it
        await raise_as_executed(connection, driver, error, shape.sql, args)
    if shape.row is tuple:
        return [tuple(record) for record in records]
    return [shape.row(*_processed(record, shape.results)) for record in records]


def _seen_by_listeners(connection: AsyncConnection, sql: str, args: list[Any]) -> None:
    """SQLAlchemy's before_cursor_execute listeners see the statement, as they see each one it
    sends (no cursor and no execution context were made: both None)."""
    sync = connection.sync_connection
    if sync is not None and (sync._has_events or sync.engine._has_events):
        for listener in sync.dispatch.before_cursor_execute:
            listener(sync, None, sql, args, None, False)


async def raise_as_executed(
    connection: AsyncConnection, driver: AsyncAdapt_asyncpg_connection, error: Exception, sql: str,
    args: list[Any],
) -> NoReturn:
    """Raise `error`, which asyncpg raised running `sql` on `connection`, as SQLAlchemy's execution
    would have raised it: the adapter's translation, then the connection's handling of a failed
    execution (a DBAPIError; a lost connection invalidated, with the pool's others)."""
    await greenlet_spawn(_raise_as_executed, connection, driver, error, sql, args)
    raise AssertionError("unreachable") from error


def _raise_as_executed(
    connection: AsyncConnection, driver: AsyncAdapt_asyncpg_connection, error: Exception, sql: str,
    args: list[Any],
) -> None:
    """In SQLAlchemy's greenlet (invalidating a lost connection closes it)."""
    sync = connection.sync_connection
    assert sync is not None
    try:
        driver._handle_exception(error)
    except Exception as translated:  # noqa: BLE001 - the adapter's DBAPI error, handled as SQLAlchemy does
        # A DBAPI error is wrapped (a DBAPIError naming the statement); any other (an OSError) is
        # raised as it is, as SQLAlchemy's execution raises it once its context is made: with no
        # statement given, _handle_dbapi_exception does not wrap it (a StatementError would hide
        # an OSError from store.errors.is_unavailable).
        dbapi_error = isinstance(translated, sync.dialect.loaded_dbapi.Error)
        sync._handle_dbapi_exception(translated, sql if dbapi_error else None, tuple(args), None, None)


def _raise_unsent(connection: AsyncConnection, error: Exception, sql: str, params: Mapping[str, Any]) -> None:
    """Raise `error`, which processing the parameters of `sql` raised before it was sent, as
    SQLAlchemy's execution raises it (a StatementError whose `orig` is `error`)."""
    sync = connection.sync_connection
    assert sync is not None
    sync._handle_dbapi_exception(error, sql, dict(params), None, None)


def _bound(shape: _Shape, params: Mapping[str, Any]) -> list[Any]:
    """The shape's positional arguments: the statement's own values and `params`, each through
    its bind processing."""
    given = {**shape.fixed, **params}
    pairs = zip(shape.names, shape.binds, strict=True)
    return [given[name] if bind is None else bind(given[name]) for name, bind in pairs]


def _in_transactions(connection: AsyncConnection) -> AsyncAdapt_asyncpg_connection | None:
    """The asyncpg adapter under `connection`, where its statements run in transactions (not in
    autocommit: there `fetch` serves)."""
    driver = _adapter(connection)
    return driver if driver is not None and not driver.autocommit else None


def _adapter(connection: AsyncConnection) -> AsyncAdapt_asyncpg_connection | None:
    sync = connection.sync_connection
    driver = sync.connection.dbapi_connection if sync is not None else None
    return driver if isinstance(driver, AsyncAdapt_asyncpg_connection) else None


def _processed(record: Sequence[Any], results: tuple[Processor, ...]) -> Iterator[Any]:
    for value, result in zip(record, results, strict=True):
        yield value if result is None else result(value)


def _asyncpg(connection: AsyncConnection) -> AsyncAdapt_asyncpg_connection | None:
    driver = _adapter(connection)
    return driver if driver is not None and driver.autocommit else None


@lru_cache(maxsize=256)
def _shape(dialect: Dialect, statement: Any) -> _Shape | None:
    compiled = statement.compile(dialect=dialect)
    if isinstance(statement, TextClause):
        # Columns untyped: SQLAlchemy gives the driver's values as they are; rows as plain tuples.
        if compiled.post_compile_params:
            return None
        names, binds = positional_binds(compiled, dialect)
        return _Shape(compiled.string, names, binds, _fixed(compiled, names), (), tuple)
    columns = statement.selected_columns
    keys = [column.key for column in columns]
    names_ok = all(isinstance(k, str) and k.isidentifier() and not k.startswith("_") for k in keys)
    if not names_ok or len(set(keys)) != len(keys) or compiled.post_compile_params:  # IN lists: expanded
        return None
    names, binds = positional_binds(compiled, dialect)
    try:
        results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
    except (TypeError, InvalidRequestError):
        # A type whose result processing wants the column's type code from the cursor (asyncpg's
        # Numeric and Float): through SQLAlchemy, which has it.
        return None
    row: type[tuple[Any, ...]] = namedtuple("Row", [str(key) for key in keys])  # type: ignore[misc]  # noqa: PYI024
    return _Shape(compiled.string, names, binds, _fixed(compiled, names), results, row)


def _fixed(compiled: SQLCompiler, names: tuple[str, ...]) -> dict[str, Any]:
    """The statement's own values (literals, `bindparams(name=value)`), by parameter name."""
    return {name: compiled.binds[name].effective_value for name in names if not compiled.binds[name].required}

