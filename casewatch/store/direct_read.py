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
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Select
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

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
    given = {**shape.fixed, **params}
    pairs = zip(shape.names, shape.binds, strict=True)
    args = [given[name] if bind is None else bind(given[name]) for name, bind in pairs]
    try:
        records = await driver.driver_connection.fetch(shape.sql, *args)
    except Exception:  # noqa: BLE001 - sent again through SQLAlchemy, whose handling then applies
        return list(await connection.execute(statement, params))
    return [shape.row(*_processed(record, shape.results)) for record in records]


def _processed(record: Sequence[Any], results: tuple[Processor, ...]) -> Iterator[Any]:
    for value, result in zip(record, results, strict=True):
        yield value if result is None else result(value)


def _asyncpg(connection: AsyncConnection) -> AsyncAdapt_asyncpg_connection | None:
    sync = connection.sync_connection
    driver = sync.connection.dbapi_connection if sync is not None else None
    if isinstance(driver, AsyncAdapt_asyncpg_connection) and driver.autocommit:
        return driver
    return None


@lru_cache(maxsize=64)
def _shape(dialect: Dialect, statement: Select[Any]) -> _Shape | None:
    compiled = statement.compile(dialect=dialect)
    columns = statement.selected_columns
    keys = [column.key for column in columns]
    names_ok = all(isinstance(k, str) and k.isidentifier() and not k.startswith("_") for k in keys)
    if not names_ok or len(set(keys)) != len(keys) or compiled.post_compile_params:  # IN lists: expanded
        return None
    names, binds = positional_binds(compiled, dialect)
    fixed = {
        name: compiled.binds[name].effective_value for name in names if not compiled.binds[name].required
    }
    results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns)
    row: type[tuple[Any, ...]] = namedtuple("Row", [str(key) for key in keys])  # type: ignore[misc]  # noqa: PYI024
    return _Shape(compiled.string, names, binds, fixed, results, row)

