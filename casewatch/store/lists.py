"""`column IN (values)` for long lists of keys, written the way each database handles best.

SQLAlchemy renders an IN list as one bound parameter per value; for thousands of keys that is a
few milliseconds of Python per statement (and PostgreSQL plans a long list). On PostgreSQL the
list is sent as one array parameter instead, `column = ANY($1)`; SQLite keeps the IN list, in
chunks that stay under its bound-parameter limit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

# Under SQLite's default limit of bound parameters (32766 since 3.32, 999 before) with room
# to spare for the rest of the statement.
SQLITE_CHUNK = 900
# PostgreSQL takes the whole array as one parameter; chunks only bound the size of one answer.
POSTGRES_CHUNK = 20_000


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def chunked(session: AsyncSession, values: Sequence[T]) -> Iterator[Sequence[T]]:
    """`values` in pieces that one_of can take in one statement on this session's database."""
    size = POSTGRES_CHUNK if is_postgres(session) else SQLITE_CHUNK
    for start in range(0, len(values), size):
        yield values[start : start + size]


def one_of(session: AsyncSession, column: Any, values: Sequence[Any]) -> ColumnElement[bool]:
    """`column IN values`: one array parameter on PostgreSQL, an IN list elsewhere."""
    if is_postgres(session):
        array = bindparam(None, list(values), type_=ARRAY(column.type))
        condition: ColumnElement[bool] = column == any_(array)
        return condition
    return column.in_(values)  # type: ignore[no-any-return]


def one_of_param(postgres: bool, column: Any, name: str) -> ColumnElement[bool]:
    """one_of for a statement built once and run many times: the values are the named parameter
    `name`, given at execution (one array parameter on PostgreSQL, an expanding IN list elsewhere)."""
    if postgres:
        condition: ColumnElement[bool] = column == any_(bindparam(name, type_=ARRAY(column.type)))
        return condition
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]
