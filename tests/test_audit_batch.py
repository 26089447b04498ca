"""Group commit for the audit entries of lookups (casewatch.audit.batch), and the read-only engine
beside SQLite's one writer (store.engine.make_reader_engine): issue 17's "audit rows of
concurrent answers can share one commit, each answer only after the commit that holds its row"."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.audit.batch import AuditBatcher
from casewatch.audit.chain import Hasher
from casewatch.audit.seal import seal_pending
from casewatch.audit.verify import verify
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.store.engine import commits_each_statement, make_engine, make_reader_engine, make_sessionmaker
from casewatch.store.errors import is_unavailable
from casewatch.store.models import AuditEntry, AuditNominal
from tests.support import T0, make_settings


def _ctx() -> Context:
    return Context(make_settings("sqlite+aiosqlite:///unused.db"), FixedClock(T0))


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


async def test_concurrent_entries_share_commits_and_each_returns_after_its_own(
    engine: AsyncEngine, db_url: str
) -> None:
    commits: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda conn: commits.append(1))
    batcher = AuditBatcher(make_sessionmaker(engine), _ctx())
    observer = make_engine(db_url)  # another connection: sees only what is committed
    try:
        async def lookup(i: int) -> None:
            await batcher.record(
                actor=f"PC{i:04d}", action="flags.lookup", subject=f"VS-{i:07d}", purpose="test",
                details={"i": i}, nominals=[f"VS-{i:07d}"],
            )
            async with observer.connect() as conn:  # committed before the answer may go out
                seen = select(AuditEntry.id).where(AuditEntry.actor == f"PC{i:04d}")
                assert (await conn.execute(seen)).scalar_one_or_none() is not None

        await asyncio.gather(*(lookup(i) for i in range(40)))
        assert await _count(engine) == 40
        assert 1 <= len(commits) < 40  # shared: far fewer commits than entries
        async with observer.connect() as conn:
            index = (await conn.execute(select(func.count()).select_from(AuditNominal))).scalar_one()
        assert index == 40
        # Each entry's nominal index row is its own (verify checks the index against every entry).
        sessions = make_sessionmaker(engine)
        await seal_pending(sessions, _ctx())
        result = await verify(sessions, Hasher())
        assert result.intact and result.checked == 40, result.broken
    finally:
        await observer.dispose()


async def test_a_failed_commit_fails_every_answer_in_it(engine: AsyncEngine) -> None:
    batcher = AuditBatcher(make_sessionmaker(engine), _ctx())
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE audit_nominals"))
        await conn.execute(text("DROP TABLE audit_log"))
    results = await asyncio.gather(
        *(batcher.record(actor="PC0001", action="flags.lookup", purpose="test") for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, Exception) for r in results)


async def test_a_caller_that_goes_away_does_not_take_the_others_commit(engine: AsyncEngine) -> None:
    batcher = AuditBatcher(make_sessionmaker(engine), _ctx())
    first = asyncio.create_task(batcher.record(actor="PC0001", action="flags.lookup", purpose="gone"))
    others = [asyncio.create_task(batcher.record(actor=f"PC{i}", action="flags.lookup")) for i in range(2, 6)]
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(*others)
    await batcher.close()
    assert await _count(engine) == 5  # the cancelled caller's entry too: the share was made


async def test_sqlite_readers_read_beside_a_writer_and_cannot_write(sqlite_url: str) -> None:
    writer = make_engine(sqlite_url)
    readers = make_reader_engine(writer, pool_size=3)
    try:
        path = sqlite_url.split("///", 1)[1]
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the writer's lock, held (another process)
        try:
            sessions: async_sessionmaker[AsyncSession] = make_sessionmaker(readers)

            async def read() -> int:
                async with sessions() as s:
                    return int((await s.execute(select(func.count()).select_from(AuditEntry))).scalar_one())

            assert await asyncio.wait_for(asyncio.gather(*(read() for _ in range(6))), 5) == [0] * 6
        finally:
            other.execute("ROLLBACK")
            other.close()
        with pytest.raises(OperationalError, match="readonly"):
            async with make_sessionmaker(readers).begin() as s:
                await s.execute(text("DELETE FROM audit_log"))
    finally:
        await readers.dispose()
        await writer.dispose()


@pytest.mark.postgres
async def test_postgres_readers_are_a_pool_of_their_own_in_autocommit(pg_url: str) -> None:
    """(Seventh session: tests/test_flags7_autocommit.py.) Each statement commits on its own."""
    writer = make_engine(pg_url)
    readers = make_reader_engine(writer, pool_size=2)
    try:
        assert readers.pool is not writer.pool and commits_each_statement(readers)
        async with readers.connect() as conn:
            assert not conn.sync_connection.connection.driver_connection.is_in_transaction()
            await conn.execute(text("SELECT 1"))
            assert not conn.sync_connection.connection.driver_connection.is_in_transaction()
    finally:
        await readers.dispose()
        await writer.dispose()


async def test_one_entry_the_database_refuses_fails_only_its_own_answer(engine: AsyncEngine) -> None:
    """(Review of issue 17.) A shared commit that fails is retried entry by entry."""
    batcher = AuditBatcher(make_sessionmaker(engine), _ctx())
    good = [batcher.record(actor=f"PC{i}", action="flags.lookup", purpose="ok") for i in range(4)]
    bad = batcher.record(actor="PC9", action="flags.lookup", details={"unhashable": {1, 2}})
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert results[:4] == [None] * 4 and isinstance(results[4], Exception)  # rfc8785 refuses a set
    assert await _count(engine) == 4


async def test_an_unreachable_database_fails_every_answer_at_once() -> None:
    # Nothing listens on port 1 of loopback: the connection is refused at once. (A SQLite file that
    # cannot be opened would leave aiosqlite's thread behind the test's event loop.)
    unreachable = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        batcher = AuditBatcher(make_sessionmaker(unreachable), _ctx())
        attempts: list[int] = []
        insert = batcher._insert

        async def counted(entries: list[Any]) -> None:
            attempts.append(len(entries))
            await insert(entries)

        batcher._insert = counted  # type: ignore[method-assign]
        results = await asyncio.gather(
            *(batcher.record(actor=f"PC{i}", action="flags.lookup") for i in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, Exception) and is_unavailable(r) for r in results), results
        assert sum(attempts) <= 5 and len(attempts) <= 2  # never retried one by one
    finally:
        await unreachable.dispose()
