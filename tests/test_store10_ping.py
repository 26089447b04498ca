"""The writer pool's pre-ping on PostgreSQL in one trip (store.engine.ping_in_one_trip): the same
checkouts as SQLAlchemy's three-trip ping (BEGIN, `;`, ROLLBACK), two trips fewer. A connection
the server ended is found by the ping and replaced before the transaction begins, as before; a
ping that fails for another reason fails the checkout, as before."""

from __future__ import annotations

from asyncio import selector_events
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

import casewatch.store.engine as store_engine

pytestmark = pytest.mark.postgres


@pytest.fixture(params=[True, False], ids=["one_trip", "sqlalchemy"])
def one_trip(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def writer(one_trip: bool, pg_url: str) -> AsyncIterator[AsyncEngine]:
    saved = store_engine.ONE_TRIP_PING
    store_engine.ONE_TRIP_PING = one_trip
    try:
        engine = store_engine.make_engine(pg_url)
    finally:
        store_engine.ONE_TRIP_PING = saved
    yield engine
    await engine.dispose()


@pytest.fixture
def writes() -> Iterator[list[bytes]]:
    """The first byte (the message type) of each write to a socket of this process."""
    seen: list[bytes] = []
    transport: Any = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
    original = transport.write

    def counted(self: Any, data: Any) -> None:
        seen.append(bytes(data[:1]))
        original(self, data)

    transport.write = counted
    try:
        yield seen
    finally:
        transport.write = original


async def _pid(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_checkout_pings_once(writer: AsyncEngine, one_trip: bool, writes: list[bytes]) -> None:
    await _pid(writer)  # connected: a fresh connection is not pinged
    await _pid(writer)  # the statement prepared
    writes.clear()
    await _pid(writer)
    # BEGIN, the statement and COMMIT: 3 trips; the ping one (an extended-protocol ";") or three.
    assert writes == ([b"B"] if one_trip else [b"Q", b"B", b"Q"]) + [b"Q", b"B", b"Q"]


async def test_a_connection_the_server_ended_is_replaced_at_checkout(
    writer: AsyncEngine, pg_url: str
) -> None:
    pid = await _pid(writer)
    admin = store_engine.make_engine(pg_url)
    try:
        async with admin.begin() as conn:
            assert (await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})).scalar_one()
    finally:
        await admin.dispose()
    # The ping finds it gone: a new connection, and the transaction runs on it without an error.
    assert await _pid(writer) != pid
    async with writer.begin() as conn:
        assert (await conn.execute(text("SELECT 41 + 1"))).scalar_one() == 42


async def test_a_ping_that_fails_otherwise_fails_the_checkout(
    writer: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _pid(writer)
    original = asyncpg.Connection.fetchrow

    async def refusing(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if query == ";":
            raise asyncpg.exceptions.QueryCanceledError("canceled: not a disconnect")
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "fetchrow", refusing)
    with pytest.raises(DBAPIError) as raised:
        await _pid(writer)
    assert "not a disconnect" in str(raised.value)
    assert not raised.value.connection_invalidated
    monkeypatch.undo()
    assert await _pid(writer) > 0
