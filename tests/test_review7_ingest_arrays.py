"""Review (seventh session, issue 17): ingest's array inserts on PostgreSQL (casewatch/ingest/
arrays.py, commit 1456293) cast each array to its column's type, e.g. CAST(:event_id AS
VARCHAR(200)[]). PostgreSQL truncates a value cast explicitly to varchar(n), silently, where the
executemany's INSERT refuses it ("value too long"). The column's length is the database's last
check on an outside value (an event id that decides, through its UNIQUE index, whether an event
is a duplicate): it must still refuse, not cut. Today the event models cap these fields at the
columns' lengths, so this is defence in depth (severity low). Real PostgreSQL; fictional data."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.ingest import apply
from casewatch.store.models import Visit

pytestmark = pytest.mark.postgres

VISITS = Visit.metadata.tables[Visit.__tablename__]


def _rows(event_id: str) -> list[dict[str, object]]:
    return [{"visor_ref": "VS-0009001", "visited_on": date(2026, 11, 20), "event_id": event_id}]


async def test_the_executemany_refuses_an_over_long_value(
    pg_sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apply.Batch, "array_writes", False)
    with pytest.raises(DBAPIError, match="too long"):
        async with pg_sessions.begin() as session:
            await apply._insert(session, VISITS, _rows("E" * 201))


async def test_the_array_insert_refuses_an_over_long_value_as_the_executemany_does(
    pg_sessions: async_sessionmaker[AsyncSession],
) -> None:
    assert apply.Batch.array_writes
    refused = False
    try:
        async with pg_sessions.begin() as session:
            await apply._insert(session, VISITS, _rows("E" * 201))
    except DBAPIError as error:
        refused = "too long" in str(error)
    async with pg_sessions() as session:
        stored = list((await session.execute(select(VISITS.c.event_id))).scalars())
    assert stored == [] and refused, f"stored {[len(s) for s in stored]} characters, refused: {refused}"
