"""JSON built in SQL, the same on PostgreSQL and SQLite: a row's columns as one JSON array, and a
set of rows as an array of those. They let one lookup statement carry a nominal's markers, alerts
and latest recall beside the nominal's own columns, instead of a round trip each."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, ClauseList, Tuple, tuple_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


class json_row(FunctionElement[Any]):  # noqa: N801 - used like func.*
    """The columns of one row as a JSON array."""

    inherit_cache = True
    type = JSON()


class json_rows(FunctionElement[Any]):  # noqa: N801
    """An aggregate: one JSON array per row (as json_row), in an array; on PostgreSQL in the
    order given (SQLite 3.40 has no ordered aggregates: sort the result there, see sorts_in_sql).
    Over no rows: NULL on PostgreSQL, [] on SQLite."""

    inherit_cache = True
    type = JSON()

    def __init__(self, columns: Sequence[Any], order_by: Sequence[Any] = ()) -> None:
        # Two tuples (column elements, so that they pass as function arguments): compiled apart.
        super().__init__(tuple_(*columns), tuple_(*order_by))


@compiles(json_row)
def _row(element: json_row, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_array({compiler.process(element.clauses, **kw)})"


@compiles(json_row, "postgresql")
def _row_pg(element: json_row, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_build_array({compiler.process(element.clauses, **kw)})"


def _parts(element: json_rows) -> tuple[ClauseList, ClauseList]:
    columns, order_by = element.clauses.clauses
    assert isinstance(columns, Tuple) and isinstance(order_by, Tuple)
    return ClauseList(*columns.clauses), ClauseList(*order_by.clauses)


@compiles(json_rows)
def _rows(element: json_rows, compiler: SQLCompiler, **kw: Any) -> str:
    columns, _ = _parts(element)
    return f"json_group_array(json_array({compiler.process(columns, **kw)}))"


@compiles(json_rows, "postgresql")
def _rows_pg(element: json_rows, compiler: SQLCompiler, **kw: Any) -> str:
    columns, order_by = _parts(element)
    order = f" ORDER BY {compiler.process(order_by, **kw)}" if order_by.clauses else ""
    return f"json_agg(json_build_array({compiler.process(columns, **kw)}){order})"


def sorts_in_sql(dialect_name: str) -> bool:
    """Whether json_rows keeps its order_by on this database."""
    return dialect_name == "postgresql"


def utc_from_json(value: Any) -> datetime | None:
    """A timestamp column read back from JSON, as store.types.UTCDateTime would give it:
    PostgreSQL writes ISO 8601 with an offset, SQLite the stored UTC text without one."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
