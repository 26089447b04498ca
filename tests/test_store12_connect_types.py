"""PostgreSQL connections learn the array types when they open, and the pools hand out the
connection returned last (store.engine.learn_array_types, pool_use_lifo; issue 17).

asyncpg learns an array type (varchar[], int8[], json[], timestamptz[] ...) by a catalogue query
the first time a statement on a connection binds or reads one, one type at a time: 3-11 ms each
here, and on a connection not yet used for that statement it landed inside a request (the
end-to-end bench's slowest events). Each connection now learns them all in one query when it
opens; a path that binds an array type not in store.engine.ARRAY_TYPES makes its connection query
the catalogue a second time, and fails the test of the service's paths below."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import BigInteger, Boolean, Date, DateTime, Integer, String, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB

from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.engine import ARRAY_TYPES, make_engine, make_reader_engine
from tests.support import envelope
from tests.test_bot import ALPHA, PC, Bot, command_body, running_bot, slack_headers

pytestmark = pytest.mark.postgres


@pytest.fixture
def catalogue_queries() -> Iterator[list[tuple[int, tuple[int, ...]]]]:
    """(id of the asyncpg connection, the type oids asked for) of each type query asyncpg makes."""
    seen: list[tuple[int, tuple[int, ...]]] = []
    original = asyncpg.connection.Connection._introspect_types

    async def noted(self: Any, typeoids: Any, *rest: Any) -> Any:
        seen.append((id(self), tuple(sorted(typeoids))))
        return await original(self, typeoids, *rest)

    asyncpg.connection.Connection._introspect_types = noted
    try:
        yield seen
    finally:
        asyncpg.connection.Connection._introspect_types = original


_EACH_ARRAY = text(
    "SELECT cardinality(:v) + cardinality(:t) + cardinality(:i4) + cardinality(:i8) + cardinality(:b)"
    " + cardinality(:j) + cardinality(:jb) + cardinality(:d) + cardinality(:ts)"
).bindparams(
    bindparam("v", type_=ARRAY(String(20))), bindparam("t", type_=ARRAY(String)),
    bindparam("i4", type_=ARRAY(Integer)), bindparam("i8", type_=ARRAY(BigInteger)),
    bindparam("b", type_=ARRAY(Boolean)), bindparam("j", type_=ARRAY(JSON)),
    bindparam("jb", type_=ARRAY(JSONB)), bindparam("d", type_=ARRAY(Date)),
    bindparam("ts", type_=ARRAY(DateTime(timezone=True))),
)


def _values() -> dict[str, Any]:
    from datetime import UTC, date, datetime

    return {
        "v": ["a"], "t": ["b"], "i4": [1], "i8": [2], "b": [True], "j": [{"k": 1}], "jb": [{"k": 2}],
        "d": [date(2026, 12, 1)], "ts": [datetime(2026, 12, 1, tzinfo=UTC)],
    }


@pytest.mark.parametrize("pool", ["writer", "readers"])
async def test_a_connection_learns_every_listed_array_type_when_it_opens(
    pg_url: str, pool: str, catalogue_queries: list[tuple[int, tuple[int, ...]]]
) -> None:
    assert len(ARRAY_TYPES) == 9
    writer = make_engine(pg_url)
    engine = writer if pool == "writer" else make_reader_engine(writer)
    try:
        async with engine.connect() as conn:
            assert len(catalogue_queries) == 1  # one query at connect, for all of them
            catalogue_queries.clear()
            assert (await conn.execute(_EACH_ARRAY, _values())).scalar_one() == 9
            assert catalogue_queries == []  # nothing left to learn inside a statement
    finally:
        if engine is not writer:
            await engine.dispose()
        await writer.dispose()


async def test_without_it_each_array_type_is_learned_inside_the_statement(
    pg_url: str, catalogue_queries: list[tuple[int, tuple[int, ...]]]
) -> None:
    """The cost learn_array_types moves: a plain asyncpg connection asks inside the statement."""
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        assert await conn.fetchval("SELECT cardinality($1::varchar[])", ["a"]) == 1
    finally:
        await conn.close()
    assert [oids for _, oids in catalogue_queries] == [(1015,)]  # varchar[]


async def test_the_pool_hands_out_the_connection_returned_last(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        first, second = await asyncio.gather(engine.connect(), engine.connect())
        pid_first = (await first.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        pid_second = (await second.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await first.close()
        await second.close()  # returned last
        for _ in range(3):
            async with engine.connect() as conn:
                assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() == pid_second
        assert pid_first != pid_second
    finally:
        await engine.dispose()


async def test_the_services_paths_learn_no_type_after_connect(
    pg_url: str, catalogue_queries: list[tuple[int, tuple[int, ...]]]
) -> None:
    """Ingest (events, border checks, alerts, the outbox, audit entries with their index) and
    /flags: each connection queries the catalogue once, when it opens. A second query names a type
    ARRAY_TYPES lacks. (The delivery worker's claims, sends and records: tests/test_review12_findings.)"""
    async with running_bot(pg_url) as bot:
        await ingest_a_border_check(bot, "evt-types-1")
        body = command_body("/flags", ALPHA, PC)
        answer = await bot.client.post("/slack/events", data=body, headers=slack_headers(body))
        assert answer.status == 200
    assert_once_a_connection(catalogue_queries)


async def ingest_a_border_check(bot: Bot, event_id: str) -> None:
    """A border check of ALPHA with no travel notified, stored through the ingest pipeline."""
    check = envelope("travel.border_alert", id=event_id, visor_ref=ALPHA, direction="outbound")
    envelopes, errors = parse_envelopes([check])
    assert not errors
    result = await ingest(bot.service.sessions, envelopes, bot.service.ctx, source="api")
    assert result.accepted == 1


def assert_once_a_connection(catalogue_queries: list[tuple[int, tuple[int, ...]]]) -> None:
    """Each connection opened queried the catalogue once (at connect), and some connection opened."""
    assert catalogue_queries, "no PostgreSQL connection was opened"
    per_connection: dict[int, int] = {}
    for conn, _ in catalogue_queries:
        per_connection[conn] = per_connection.get(conn, 0) + 1
    assert all(count == 1 for count in per_connection.values()), catalogue_queries
