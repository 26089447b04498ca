"""The ingest's hot statements sent by asyncpg inside the transaction (store.direct_read
.fetch_in_transaction, thirteenth session): the events' insert, a border check's other checks,
the rules' live-alert read (with the batch's writes) and the alerts' folded write. The same
traffic both ways (lone border checks of every kind, a group of mixed singles through the group
committer) stores the same rows, opens the same alerts with the same audit entries and
deliveries, and answers alike; SQLAlchemy's statement listeners see the same statements; on
PostgreSQL those statements did go by asyncpg, on SQLite nothing changes. A statement the
database refuses, or a connection lost under one, is raised as SQLAlchemy's execution raises it:
the ingest retries a deadlock, a lost connection is `is_unavailable` (503, retried by the sender),
and the pool connects afresh. With changes to flush first, the statement goes through the session,
which flushes them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError

import casewatch.store.direct_read as direct_read
from casewatch.audit import record
from casewatch.clock import FixedClock
from casewatch.ingest.group import GroupCommit
from casewatch.ingest.pipeline import ingest
from casewatch.store.direct_read import fetch_in_transaction
from casewatch.store.errors import is_unavailable
from casewatch.store.models import Officer
from casewatch.wiring import Service, stop
from tests.support import envelope, make_service, switched
from tests.test_ingest10_held import AT, _text_state
from tests.test_ingest12_deferred_writes import in_one_group, known_singles, lone_checks_both_ways
from tests.test_ingest_single_fast import NOW, _parsed, service_fixture  # noqa: F401 (fixture)
from tests.test_triggers_case_data import utc


def _direct(on: bool) -> AbstractContextManager[None]:
    return switched(direct_read, "ENABLED", on)


@contextmanager
def _sent(service: Service) -> Iterator[dict[str, list[str]]]:
    """Statements seen by SQLAlchemy's listeners ("seen"), and those SQLAlchemy itself executed
    ("executed": its after_cursor_execute, which a statement sent by asyncpg does not pass)."""
    found: dict[str, list[str]] = {"seen": [], "executed": []}

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        found["seen"].append(statement)

    def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        found["executed"].append(statement)

    sync = service.engine.sync_engine
    event.listen(sync, "before_cursor_execute", seen)
    event.listen(sync, "after_cursor_execute", executed)
    try:
        yield found
    finally:
        event.remove(sync, "before_cursor_execute", seen)
        event.remove(sync, "after_cursor_execute", executed)


def _by_asyncpg(found: dict[str, list[str]]) -> int:
    return len(found["seen"]) - len(found["executed"])


async def test_lone_border_checks_store_alike_by_asyncpg(service: Service) -> None:
    runs = await lone_checks_both_ways(service, _direct, _sent)
    plain, direct = runs["plain"][2], runs["short"][2]
    assert direct == plain
    assert plain["alerts"] and plain["audit"] and plain["deliveries"] and len(plain["checks"]) == 12
    counts = {
        tag: (answers, [len(found["seen"]) for found in caught], sum(_by_asyncpg(found) for found in caught))
        for tag, (answers, caught, _) in runs.items()
    }
    assert counts["short"][:2] == counts["plain"][:2]  # the same answers, the same statements seen
    assert counts["plain"][2] == 0
    if service.engine.dialect.name == "postgresql":
        # Each request's events insert, at least; the first (a lone check of a known nominal,
        # two alerts) its other checks, its live-alert read and its folded write too.
        assert counts["short"][2] >= len(counts["short"][0]) + 3
    else:
        assert counts["short"][2] == 0


async def test_a_group_of_singles_is_stored_alike_by_asyncpg(service: Service) -> None:
    committer = GroupCommit(service.sessions, service.ctx, source="test")
    answers, runs = {}, {}
    for base, tag, on in ((7000, "plain", False), (8000, "direct", True)):
        singles = await known_singles(service, base, tag)
        with _direct(on), _sent(service) as found:
            results = await in_one_group(committer, singles)
        answers[tag] = [(r.accepted, r.duplicates, len(r.alerts)) for r in results]
        runs[tag] = (len(found["seen"]), _by_asyncpg(found))
    assert answers["direct"] == answers["plain"] == [(1, 0, 0)] * 3
    assert await _text_state(service, 8000, "direct") == await _text_state(service, 7000, "plain")
    assert runs["direct"][0] == runs["plain"][0] and runs["plain"][1] == 0
    # The events' insert and the live-alert read (carrying the batch's writes) by asyncpg.
    assert runs["direct"][1] == (2 if service.engine.dialect.name == "postgresql" else 0)


@pytest.mark.postgres
async def test_a_refused_statement_is_raised_as_sqlalchemy_raises_it(pg_service: Service) -> None:
    with pytest.raises(DBAPIError) as raised:
        async with pg_service.sessions() as session, session.begin():
            await session.execute(select(1))  # the transaction begun
            await fetch_in_transaction(session, text("SELECT 1 / CAST(:zero AS int)"), {"zero": 0})
    assert raised.value.orig is not None
    assert getattr(raised.value.orig, "sqlstate", None) == "22012"  # division_by_zero
    assert not raised.value.connection_invalidated and not is_unavailable(raised.value)
    async with pg_service.sessions() as session:  # the connection went back clean
        assert (await session.execute(text("SELECT 41 + 1"))).scalar_one() == 42


@pytest.mark.postgres
async def test_a_connection_lost_under_a_statement_is_the_database_unavailable(pg_service: Service) -> None:
    with pytest.raises(DBAPIError) as raised:
        async with pg_service.sessions() as session, session.begin():
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with pg_service.sessions() as other, other.begin():
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await asyncio.sleep(0.05)
            await fetch_in_transaction(session, text("SELECT CAST(:n AS int)"), {"n": 1})
    assert raised.value.connection_invalidated and is_unavailable(raised.value)
    async with pg_service.sessions() as session:  # the pool connected afresh
        assert (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid


@pytest.mark.postgres
async def test_a_deadlock_under_the_events_insert_is_retried(
    pg_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = asyncpg.Connection.fetch
    refused: list[str] = []

    async def once_deadlocked(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if query.startswith("INSERT INTO events") and not refused:
            refused.append(query)
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected (a test's)")
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "fetch", once_deadlocked)
    raw = envelope("visit.recorded", id="direct-deadlock-1", visor_ref="VS-0009001", occurred_at=AT)
    result = await ingest(pg_service.sessions, _parsed([raw]), pg_service.ctx, source="test", sleep=_no_wait)
    assert refused and result.retries == 1 and result.accepted == 1


async def _no_wait(_seconds: float) -> None:
    return None


async def test_changes_to_flush_go_through_the_session(service: Service) -> None:
    async with service.sessions() as session, session.begin():
        await session.execute(select(1))
        session.add(Officer(id="OFF-DIRECT-1", name="Fictional Officer", team="north", slack_user_id=None))
        with _sent(service) as found:
            wanted = select(Officer.id).where(Officer.id == "OFF-DIRECT-1")
            rows = await fetch_in_transaction(session, wanted, {})
        await session.rollback()
    assert [tuple(r) for r in rows] == [("OFF-DIRECT-1",)]
    assert _by_asyncpg(found) == 0  # the flush's insert, then the read: both by SQLAlchemy


@pytest.fixture
async def pg_service(pg_url: str) -> AsyncIterator[Service]:
    svc = await make_service(pg_url, clock=FixedClock(utc(NOW)))
    try:
        yield svc
    finally:
        await stop(svc)


@pytest.mark.postgres
async def test_a_lookups_audit_entry_refused_is_raised_as_sqlalchemy_raises_it(
    pg_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """audit.record(direct=True) inside a transaction begun: by asyncpg, and its errors as
    SQLAlchemy's execution raises them (they were the adapter's own before)."""

    async def entry(session: Any) -> None:
        await record(session, pg_service.ctx, actor="OFF-DIRECT-2", action="flags.lookup",
                     subject="VS-0009002", nominals=["VS-0009002"], direct=True)

    original = asyncpg.Connection.execute

    async def refusing(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        if "audit_log" in query:
            raise asyncpg.exceptions.QueryCanceledError("canceled (a test's)")
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "execute", refusing)
    with _sent(pg_service) as found, pytest.raises(DBAPIError) as raised:
        async with pg_service.sessions() as session, session.begin():
            await session.execute(select(1))  # the transaction begun: the entry goes by asyncpg
            await entry(session)
    assert getattr(raised.value.orig, "sqlstate", None) == "57014"
    assert not is_unavailable(raised.value)
    assert len(found["executed"]) == 1  # SQLAlchemy executed the SELECT; the entry went by asyncpg
