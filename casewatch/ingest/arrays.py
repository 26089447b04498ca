"""PostgreSQL: a batch's rows of one table as one array a column, unnested, in one statement.

An executemany through asyncpg is one Bind/Execute a row on the server (a 1000-event batch's
visits, notifications, new actions and notification dates were ~1,300 executions); here each
table's rows are one execution. Only for columns of plain types (text, numbers, dates, instants,
booleans): anything else (JSON) keeps the executemany. Each value goes through its column type's
bind processing (the ARRAY's item type), as in the executemany: an instant must be aware
(store.types.UTCDateTime)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Boolean, Date, DateTime, Integer, String, Table, Text, TextClause, bindparam, text
from sqlalchemy.dialects import postgresql
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


def insertable(table: Table, keys: Sequence[str]) -> bool:
    """Whether these columns of `table` can go as arrays."""
    return all(_plain(table.c[key].type) for key in keys)


@cache
def insert_statement(table: Table, keys: tuple[str, ...]) -> TextClause:
    """INSERT INTO table (keys) SELECT * FROM unnest(:key::type[], ...), built once a key set."""
    arrays = ", ".join(f"CAST(:{key} AS {_array_type(table.c[key].type)})" for key in keys)
    statement = text(
        f"INSERT INTO {table.name} ({', '.join(table.c[key].name for key in keys)}) "  # noqa: S608 (model names)
        f"SELECT * FROM unnest({arrays})"
    )
    return statement.bindparams(
        *(bindparam(key, type_=postgresql.ARRAY(_item_type(table.c[key].type))) for key in keys)
    )


def columns(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, list[Any]]:
    """The rows as one list a column (every row has every key)."""
    return {key: [row[key] for row in rows] for key in keys}


@cache
def update_statement(table: Table, key: str, column: str) -> TextClause:
    """UPDATE table SET column = v.value FROM unnest(:keys, :values) WHERE table.key = v.key: the
    keys must be distinct (each row is set once)."""
    key_type, value_type = table.c[key].type, table.c[column].type
    key_array, value_array = _array_type(key_type), _array_type(value_type)
    unnested = f"unnest(CAST(:keys AS {key_array}), CAST(:values AS {value_array}))"
    statement = text(
        f"UPDATE {table.name} SET {table.c[column].name} = v.value FROM {unnested} AS v(key, value) "  # noqa: S608 (model names)
        f"WHERE {table.name}.{table.c[key].name} = v.key"
    )
    return statement.bindparams(
        bindparam("keys", type_=postgresql.ARRAY(_item_type(key_type))),
        bindparam("values", type_=postgresql.ARRAY(_item_type(value_type))),
    )
