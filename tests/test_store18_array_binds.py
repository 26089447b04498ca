"""The arrays bound by the statements store.held and store.direct_read compile once (ingest.arrays,
store.lists, audit): each item goes through its own type's bind processing, as SQLAlchemy's ARRAY
does, without SQLAlchemy's guess at dimensions (store.held.array_binder). Against SQLAlchemy's own
processing for every item type the arrays carry, and on PostgreSQL for a JSON item that is a list
(SQLAlchemy's guess took it for a second dimension). Fictional data."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Boolean, Date, Integer, String, Text, bindparam, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.types import TypeEngine

from casewatch.store.direct_read import fetch_in_transaction
from casewatch.store.held import positional_binds
from casewatch.store.types import UTCDateTime

DIALECT = postgresql.asyncpg.dialect()
BERLIN = timezone(timedelta(hours=1))

CASES: list[tuple[TypeEngine[Any], list[Any]]] = [
    (Text(), ["VS-0000001", None, ""]),
    (String(40), ["bench-visit.recorded-1", "ünïcode"]),
    (Integer(), [1, None, -7]),
    (Boolean(), [True, False, None]),
    (Date(), [date(2026, 11, 30), None]),
    (UTCDateTime(), [datetime(2026, 11, 30, 9, tzinfo=UTC), datetime(2026, 11, 30, 10, tzinfo=BERLIN), None]),
    (JSON(), [{"kind": "weekly"}, None, {"nested": {"a": [1, 2]}}, "text", 3]),
]


def _ours(kind: TypeEngine[Any]) -> Any:
    compiled = text("SELECT :items").bindparams(bindparam("items", type_=postgresql.ARRAY(kind))).compile(
        dialect=DIALECT
    )
    names, binds = positional_binds(compiled, DIALECT)
    assert names == ("items",)
    return binds[0]


@pytest.mark.parametrize(("kind", "items"), CASES, ids=[type(k).__name__ for k, _ in CASES])
def test_each_item_is_processed_as_sqlalchemy_processes_it(kind: TypeEngine[Any], items: list[Any]) -> None:
    theirs = postgresql.ARRAY(kind).dialect_impl(DIALECT).bind_processor(DIALECT)
    ours = _ours(kind)
    for value in (items, tuple(items), [], items[:1]):
        expected = theirs(value) if theirs is not None else list(value)
        assert ours(value) == expected and type(ours(value)) is list
    assert ours(None) is None


def test_an_aware_instant_of_another_zone_goes_as_utc_and_a_naive_one_is_refused() -> None:
    ours = _ours(UTCDateTime())
    [sent] = ours([datetime(2026, 11, 30, 10, 0, tzinfo=BERLIN)])
    assert sent == datetime(2026, 11, 30, 9, 0, tzinfo=UTC) and sent.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="naive"):
        ours([datetime(2026, 11, 30, 10, 0)])  # noqa: DTZ001 (the value refused)


def test_a_json_item_that_is_a_list_is_serialised_whole() -> None:
    lists = [["VS-0000001", "VS-0000002"], ["VS-0000003"]]
    assert _ours(JSON())(lists) == ['["VS-0000001", "VS-0000002"]', '["VS-0000003"]']
    # SQLAlchemy's ARRAY without dimensions takes the first list item for a second dimension:
    theirs = postgresql.ARRAY(JSON()).dialect_impl(DIALECT).bind_processor(DIALECT)
    assert theirs(lists) == [['"VS-0000001"', '"VS-0000002"'], ['"VS-0000003"']]


@pytest.mark.postgres
async def test_on_postgresql_json_items_come_back_as_they_were_sent(
    pg_sessions: async_sessionmaker[AsyncSession],
) -> None:
    """One trip by asyncpg (direct_read): the lists, a dict and a JSON null each one item."""
    items: list[Any] = [["VS-0000001", "VS-0000002"], ["VS-0000003"], {"kind": "weekly"}, None]
    statement = text(
        "SELECT x::text FROM unnest(CAST(:items AS json[])) WITH ORDINALITY AS u(x, n) ORDER BY n"
    ).bindparams(bindparam("items", type_=postgresql.ARRAY(JSON())))
    async with pg_sessions() as session, session.begin():
        rows = await fetch_in_transaction(session, statement, {"items": items})
    assert [row[0] for row in rows] == [
        '["VS-0000001", "VS-0000002"]', '["VS-0000003"]', '{"kind": "weekly"}', "null",
    ]
