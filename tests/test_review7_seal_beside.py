"""Review (seventh session, issue 17): `casewatch scan` on PostgreSQL seals beside its body
(audit.seal.sealing_beside, commit 0ca394d). Sealing there is a side task: the scan's own work is
committed page by page whatever the sealer does, and the command seals what is left at its end.
A single failed seal transaction beside the body (a lock timeout, a dropped connection: here a
trigger refusing the chain's first update, once) must not turn the scan, whose pages are all
committed, into an error: the old way sealed only after the body, so nothing beside it could fail
it. Real PostgreSQL. Fictional data only."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.audit import Entry, hasher_for, record_many
from casewatch.audit.seal import seal_pending, sealing_beside
from casewatch.audit.verify import verify
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.store.models import AuditEntry
from tests.support import T0, make_settings

pytestmark = pytest.mark.postgres

PAGES, PER_PAGE = 4, 50
_FAIL_ONCE = [
    "CREATE SEQUENCE review7_seal_tries",
    "CREATE FUNCTION review7_fail_once() RETURNS trigger AS $$ BEGIN "
    "IF nextval('review7_seal_tries') = 1 THEN RAISE EXCEPTION 'review7: a transient failure'; END IF; "
    "RETURN NEW; END $$ LANGUAGE plpgsql",
    "CREATE TRIGGER review7_fail_once BEFORE UPDATE ON audit_chain "
    "FOR EACH ROW EXECUTE FUNCTION review7_fail_once()",
]
_CLEAN = [
    "DROP TRIGGER review7_fail_once ON audit_chain", "DROP FUNCTION review7_fail_once()",
    "DROP SEQUENCE review7_seal_tries",
]


async def _run(sessions: async_sessionmaker[AsyncSession], statements: list[str]) -> None:
    async with sessions.begin() as session:
        for statement in statements:
            await session.execute(text(statement))


async def test_one_failed_seal_beside_does_not_fail_a_scan_whose_pages_committed(
    pg_url: str, pg_sessions: async_sessionmaker[AsyncSession]
) -> None:
    sessions = pg_sessions
    ctx = Context(make_settings(pg_url), FixedClock(T0))
    await _run(sessions, _FAIL_ONCE)
    try:
        body_done = False
        async with sealing_beside(sessions, ctx, every=0.05):
            for page in range(PAGES):
                async with sessions.begin() as session:
                    await record_many(session, ctx, [
                        Entry(actor="system", action="alert.opened", subject=f"A-{page}-{i}",
                              purpose="scan", details={"n": i}, nominals=[f"VS-R{page:03d}{i:04d}"])
                        for i in range(PER_PAGE)
                    ])
                await asyncio.sleep(0.2)
            body_done = True
        await seal_pending(sessions, ctx)
    finally:
        await _run(sessions, _CLEAN)
    assert body_done
    async with sessions() as session:
        unsealed = (await session.execute(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.seq.is_(None))
        )).scalar_one()
    assert unsealed == 0
    assert (await verify(sessions, hasher_for(ctx))).intact
