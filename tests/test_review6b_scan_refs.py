"""Review (sixth session, R2) of the scan's pages (911ccc9: the notification candidates in one
UNION, paged by key; a short page ends a pass): ViSOR references of every shape the contract
lets through (sent in upper and lower case, stored in capitals; '-', '/', digits first), paged 1,
2, 3, 7 and all at once:
every candidate is read once and wants the same alerts in the same order, on both databases.
Holds. The test PostgreSQL is made with C.UTF-8, SQLite's binary order; a database made with
en_GB.UTF-8 orders these references otherwise, which the passes do not depend on (each compares
keys only in SQL, its keyset `>` and ORDER BY in one collation; the candidates are paged by list),
but which this test does not exercise."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from tests.support import envelope, make_settings, nominal_data
from tests.test_scan_pages import _wanted
from tests.test_triggers_case_data import utc

NOW = utc("2026-11-20T09:00:00Z")
REFS = ("a-1", "A1", "A-1", "a/2", "Z9", "z9", "0-0", "A/1", "a1", "b", "B", "b-", "B/", "9z", "a-10", "a-2")
# Since the nineteenth session a reference is stored in capitals (model.events.canonical_ref):
# "a-1" and "A-1" are one nominal.
STORED = sorted({ref.upper() for ref in REFS})


async def test_review_odd_references_are_each_read_once_whatever_the_page(
    sessions: async_sessionmaker[AsyncSession], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = Context(make_settings(db_url), FixedClock(NOW))
    raws = [
        envelope("nominal.upsert", nominal_data(last_notification_on="2025-06-01"), id=f"review6b-ref-{i}",
                 visor_ref=ref, occurred_at="2026-07-01T00:00:00Z")
        for i, ref in enumerate(REFS)
    ]
    envelopes, errors = parse_envelopes(raws)
    assert errors == []
    assert (await ingest(sessions, envelopes, ctx, source="test")).accepted == len(REFS)
    everything = await _wanted(sessions, ctx, 10_000, monkeypatch)
    missed = [key for key in everything if key.startswith("notification.missed")]
    assert len(STORED) == 12 and len(missed) == len(STORED)  # each nominal owes one, found once
    for ref in STORED:
        assert sum(f"|{ref}|" in key for key in missed) == 1, ref
    for size in (1, 2, 3, 7, len(REFS) - 1, len(REFS), len(REFS) + 1):
        assert await _wanted(sessions, ctx, size, monkeypatch) == everything, size
