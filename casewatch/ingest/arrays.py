"""PostgreSQL: a batch's rows of one table as one array a column, unnested, in one statement.

An executemany through asyncpg is one Bind/Execute a row on the server (a 1000-event batch's
visits, notifications, new actions and notification dates were ~1,300 executions); here each
table's rows are one execution. Only for columns of plain types (text, numbers, dates, instants,
booleans): anything else (JSON) keeps the executemany, but for the events' insert
(returning_insert_statement), whose JSON column goes as json[]. Each value goes through its column
type's bind processing (the ARRAY's item type), as in the executemany: an instant must be aware
(store.types.UTCDateTime), a JSON value is serialised by the dialect's serialiser."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    TextClause,
    bindparam,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import CTE, TextualSelect
from sqlalchemy.types import TypeDecorator, TypeEngine

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]
_PLAIN = (String, Integer, Date, DateTime, Boolean)  # Text is a String


def _plain(kind: TypeEngine[Any]) -> bool:
    impl = kind.impl_instance if isinstance(kind, TypeDecorator) else kind
    return isinstance(impl, _PLAIN)


def _item_type(kind: TypeEngine[Any]) -> TypeEngine[Any]:
    """An array item's type: a string column's without its length, since PostgreSQL cuts a value
    cast explicitly to varchar(n), silently (the asyncpg dialect casts each bound parameter to its
    type); the column's own length then refuses an over-long value, as in the executemany. Any
    other column's own type (its bind processing included)."""
    impl = kind.impl_instance if isinstance(kind, TypeDecorator) else kind
    return Text() if isinstance(impl, String) else kind


def _array_type(kind: TypeEngine[Any]) -> str:
    return f"{_item_type(kind).compile(_PG)}[]"


def insertable(table: Table, keys: Sequence[str], *, json: bool = False) -> bool:
    """Whether these columns of `table` can go as arrays (with `json`, JSON columns too)."""
    return all(_plain(table.c[key].type) or (json and _json(table.c[key].type)) for key in keys)


def _json(kind: TypeEngine[Any]) -> bool:
    impl = kind.impl_instance if isinstance(kind, TypeDecorator) else kind
    return isinstance(impl, JSON)


@cache
def insert_statement(table: Table, keys: tuple[str, ...]) -> TextClause:
    """INSERT INTO table (keys) SELECT * FROM unnest(:key::type[], ...), built once a key set."""
    sql, params = _insert_sql(table, keys, "")
    return text(sql).bindparams(*params)


@cache
def returning_insert_statement(
    table: Table, keys: tuple[str, ...], conflict: str, returning: str
) -> TextualSelect:
    """insert_statement's INSERT .. SELECT * FROM unnest(..) with ON CONFLICT (conflict) DO NOTHING
    RETURNING returning (the rows stored), built once a key set; JSON columns go as json[] (each
    item the text the dialect's serialiser makes, as the executemany binds it), stored as that text."""
    sql, params = _insert_sql(table, keys, "")
    sql += f" ON CONFLICT ({table.c[conflict].name}) DO NOTHING RETURNING {table.c[returning].name}"
    return text(sql).bindparams(*params).columns(table.c[returning])


def _insert_sql(table: Table, keys: tuple[str, ...], prefix: str) -> tuple[str, list[BindParameter[Any]]]:
    """insert_statement's SQL, its parameters named {prefix}{key}."""
    arrays = ", ".join(f"CAST(:{prefix}{key} AS {_array_type(table.c[key].type)})" for key in keys)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(table.c[key].name for key in keys)}) "  # noqa: S608 (model names)
        f"SELECT * FROM unnest({arrays})"
    )
    return sql, [
        bindparam(f"{prefix}{key}", type_=postgresql.ARRAY(_item_type(table.c[key].type))) for key in keys
    ]


def columns(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, list[Any]]:
    """The rows as one list a column (every row has every key)."""
    return {key: [row[key] for row in rows] for key in keys}


@cache
def update_statement(table: Table, key: str, column: str) -> TextClause:
    """UPDATE table SET column = v.value FROM unnest(:keys, :values) WHERE table.key = v.key: the
    keys must be distinct (each row is set once)."""
    sql, params = _update_sql(table, key, column, "")
    return text(sql).bindparams(*params)


def _update_sql(table: Table, key: str, column: str, prefix: str) -> tuple[str, list[BindParameter[Any]]]:
    """update_statement's SQL, its parameters named {prefix}keys and {prefix}values."""
    key_type, value_type = table.c[key].type, table.c[column].type
    key_array, value_array = _array_type(key_type), _array_type(value_type)
    unnested = f"unnest(CAST(:{prefix}keys AS {key_array}), CAST(:{prefix}values AS {value_array}))"
    sql = (
        f"UPDATE {table.name} SET {table.c[column].name} = v.value FROM {unnested} AS v(key, value) "  # noqa: S608 (model names)
        f"WHERE {table.name}.{table.c[key].name} = v.key"
    )
    return sql, [
        bindparam(f"{prefix}keys", type_=postgresql.ARRAY(_item_type(key_type))),
        bindparam(f"{prefix}values", type_=postgresql.ARRAY(_item_type(value_type))),
    ]

Insert = tuple[Table, tuple[str, ...]]  # a table and the keys its rows have
Update = tuple[Table, str, str]  # a table, its key column, the column set


@lru_cache(maxsize=256)
def combined_statement(inserts: tuple[Insert, ...], update: Update | None) -> TextClause:
    """The inserts (insert_statement) and the update (update_statement) as one statement:
    `WITH w0 AS (INSERT ..), w1 AS (..) SELECT 1`; part i's parameters are named p{i}_{name}
    (combined_params). PostgreSQL runs every data-modifying part of a WITH once and to completion,
    on one snapshot: for writes to distinct rows that no part reads, what the statements one by one
    would do."""
    parts = _parts(inserts, update)
    sql = ", ".join(f"w{i} AS ({part})" for i, (part, _) in enumerate(parts))
    return text(f"WITH {sql} SELECT 1").bindparams(*(param for _, params in parts for param in params))


def combined_params(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each part's parameters (in combined_statement's order of parts), renamed p{i}_{name}."""
    return {f"p{i}_{name}": value for i, values in enumerate(parts) for name, value in values.items()}


@dataclass(frozen=True)
class Writes:
    """A batch's writes as combined_statement's parts, not sent yet: `run` sends them alone, or
    a reader sends them as parts of its own statement (ctes, params): ingest.apply.Batch.finish's
    writes riding with the rules' live-alert read (triggers.dispatch)."""

    inserts: tuple[Insert, ...]
    update: Update | None
    parts: tuple[dict[str, Any], ...]  # each part's parameters, in the parts' order

    def params(self) -> dict[str, Any]:
        return combined_params(self.parts)

    async def run(self, session: AsyncSession) -> None:
        await session.execute(combined_statement(self.inserts, self.update), self.params())


@lru_cache(maxsize=256)
def ctes(inserts: tuple[Insert, ...], update: Update | None) -> tuple[CTE, ...]:
    """combined_statement's parts as CTEs w0, w1, .. (for Select.add_cte), their parameters named
    as there: PostgreSQL runs each once and to completion, on the statement's snapshot, whether or
    not the statement reads it; the statement cannot see what they write (it must not read their
    tables). The snapshot is taken before any part waits for a lock, where the read used to come
    after the writes' waits: equal today, since the batch holds its nominals' rows (locked when it
    loaded) and the inserts can wait only on the batch's own new keys; a part that could wait on
    rows no one holds would let the read miss what commits meanwhile."""
    parts = enumerate(_parts(inserts, update))
    return tuple(text(sql).bindparams(*params).columns().cte(f"w{i}") for i, (sql, params) in parts)


def _parts(inserts: tuple[Insert, ...], update: Update | None) -> list[tuple[str, list[BindParameter[Any]]]]:
    """Each part's SQL and parameters, part i's named p{i}_{name}."""
    parts = [_insert_sql(table, keys, f"p{i}_") for i, (table, keys) in enumerate(inserts)]
    if update is not None:
        parts.append(_update_sql(*update, f"p{len(inserts)}_"))
    return parts
