"""audit.seal.sealing_beside (issue 17, seventh session): `casewatch scan` seals the entries its
pages commit while it runs, on PostgreSQL, so the chain's reads and updates overlap the scan
instead of following it. Every entry ends up sealed once, in one unbroken chain that verifies;
on SQLite (one writer, which the scan needs) nothing is sealed beside; a key that is not the
chain's stops it quietly (the command's last seal reports it); the body's error is the one raised."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.audit import Entry, hasher_for, record_many
from casewatch.audit.seal import seal_pending, sealing_beside
from casewatch.audit.verify import verify
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.store.models import AuditEntry
from tests.support import T0, make_settings

PAGES, PER_PAGE = 6, 400


def _ctx(url: str, key: str = "") -> Context:
    return Context(make_settings(url, **({"audit": {"key": key}} if key else {})), FixedClock(T0))


async def _sealed(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        stmt = select(func.count()).select_from(AuditEntry).where(AuditEntry.seq.is_not(None))
        return int((await session.execute(stmt)).scalar_one())


async def _write_pages(sessions: async_sessionmaker[AsyncSession], ctx: Context) -> list[int]:
    """Commit PAGES batches of entries as a scan's pages would; the sealed count after each."""
    seen = []
    for page in range(PAGES):
        async with sessions.begin() as session:
            await record_many(session, ctx, [
                Entry(actor="system", action="alert.opened", subject=f"A-{page}-{i}", purpose="scan",
                      details={"n": i}, nominals=[f"VS-T{page:03d}{i:04d}"])
                for i in range(PER_PAGE)
            ])
        await asyncio.sleep(0.3)  # more than the sealer's interval
        seen.append(await _sealed(sessions))
    return seen


async def test_entries_are_sealed_beside_on_postgresql_only_and_the_chain_verifies(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ctx = _ctx(db_url)
    async with sealing_beside(sessions, ctx, every=0.05):
        seen = await _write_pages(sessions, ctx)
    left = await seal_pending(sessions, ctx)
    total = PAGES * PER_PAGE
    if db_url.startswith("postgresql"):
        assert seen[-1] > 0 and seen == sorted(seen)  # sealed while the pages were written
        assert left < total
    else:
        assert seen == [0] * PAGES and left == total
    async with sessions() as session:
        seqs = list((await session.execute(select(AuditEntry.seq).order_by(AuditEntry.seq))).scalars())
    assert seqs == list(range(1, total + 1))  # each entry once, no gap
    result = await verify(sessions, hasher_for(ctx))
    assert result.intact


@pytest.mark.postgres
async def test_a_key_that_is_not_the_chains_stops_it_quietly(
    pg_url: str, pg_sessions: async_sessionmaker[AsyncSession]
) -> None:
    sessions = pg_sessions
    await _write_pages(sessions, _ctx(pg_url))
    assert await seal_pending(sessions, _ctx(pg_url)) == PAGES * PER_PAGE  # the chain's key: none
    wrong = _ctx(pg_url, key="not-the-chain-key")
    async with sealing_beside(sessions, wrong, every=0.05):
        async with sessions.begin() as session:
            await record_many(session, wrong, [Entry(actor="system", action="alert.opened")])
        await asyncio.sleep(0.2)
    assert await _sealed(sessions) == PAGES * PER_PAGE  # the new entry waits for the right key


@pytest.mark.postgres
async def test_the_bodys_error_is_raised(
    pg_url: str, pg_sessions: async_sessionmaker[AsyncSession]
) -> None:
    with pytest.raises(LookupError, match="the body's"):
        async with sealing_beside(pg_sessions, _ctx(pg_url), every=0.01):
            await asyncio.sleep(0.05)
            raise LookupError("the body's")
