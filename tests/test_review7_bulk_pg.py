"""Review (seventh session, issue 17): the scan's bulk statements on PostgreSQL (unnest WITH
ORDINALITY, commit 5b67866) against what the ordinary statements write, with awkward values:
JSON with quotes, backslashes, escapes, non-ASCII, nested and empty structures; NULL alert ids;
empty nominals; a batch bigger than SQLAlchemy's parameter pages; two batches written at once
(their ids interleave in the sequence). The ids must come back in the rows' order, the rows must
read back as given, and the audit chain must seal and verify. Both databases. Fictional data.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.audit import Entry, hasher_for, record_many
from casewatch.audit.seal import seal_pending
from casewatch.audit.verify import verify
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.routing import outbox
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import AuditEntry, AuditNominal, Delivery
from tests.support import T0, make_settings

ODD_DETAILS: list[dict[str, Any]] = [
    {},
    {"q": 'a "quoted" word', "b": "back\\slash", "nl": "line\nbreak", "tab": "\t"},
    {"u": "Ünïcödé Testperson – ✓", "e": "\u2028\u2029", "braces": "{}[],:"},
    {"nested": {"list": [1, 2.5, None, True, False, "x"], "empty": {}, "deep": [[[]]]}},
    {"big": 2**62, "neg": -1, "zero": 0, "float": 1e-300},
    {"sql": "'); DROP TABLE audit_log; --", "array": "{1,2}", "null": "NULL", "cast": "::json"},
]


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], Context]]:
    engine = make_engine(db_url)
    try:
        yield make_sessionmaker(engine), Context(make_settings(db_url), FixedClock(T0))
    finally:
        await engine.dispose()


def _entries(tag: str, n: int) -> list[Entry]:
    return [
        Entry(
            actor="system", action="review7.bulk", subject=f"{tag}-{i:05d}", purpose="review",
            details={**ODD_DETAILS[i % len(ODD_DETAILS)], "i": i},
            nominals=[] if i % 4 == 0 else [f"VS-{(i * 7 + k) % 900:07d}" for k in range(1 + i % 3)],
        )
        for i in range(n)
    ]


async def test_odd_entries_read_back_as_given_in_order_and_the_chain_verifies(
    sessions: tuple[async_sessionmaker[AsyncSession], Context],
) -> None:
    maker, ctx = sessions
    async with maker.begin() as session:
        await record_many(session, ctx, [])  # an empty batch writes nothing and does not fail
    big = _entries("big", 1200)  # more than the sealer's batch (seal.BATCH, 1000): two rounds
    async with maker.begin() as session:
        await record_many(session, ctx, big)

    async def one_batch(tag: str) -> None:
        async with maker.begin() as session:
            await record_many(session, ctx, _entries(tag, 300))

    await asyncio.gather(one_batch("left"), one_batch("right"))
    async with maker() as session:
        rows = list((await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())
        index = list(await session.execute(select(AuditNominal.audit_id, AuditNominal.visor_ref)))
    ours = [r for r in rows if r.action == "review7.bulk"]
    assert len(ours) == 1800
    for tag, given in (("big", big), ("left", _entries("left", 300)), ("right", _entries("right", 300))):
        written = [r for r in ours if r.subject.startswith(tag + "-")]
        assert [r.subject for r in written] == [e.subject for e in given]  # ids in the rows' order
        assert [r.details for r in written] == [dict(e.details) for e in given]
        assert [r.nominals for r in written] == [sorted(set(e.nominals)) for e in given]
    assert sorted((int(a), str(v)) for a, v in index if a in {r.id for r in ours}) == sorted(
        (r.id, ref) for r in ours for ref in r.nominals
    )
    assert await seal_pending(maker, ctx) >= 1800
    result = await verify(maker, hasher_for(ctx))
    assert result.intact and result.unsealed == 0 and result.checked >= 1800


async def test_the_outbox_bulk_insert_writes_what_the_plain_insert_writes(
    sessions: tuple[async_sessionmaker[AsyncSession], Context],
) -> None:
    maker, _ctx = sessions
    now = T0 + timedelta(minutes=1)
    payloads = [*ODD_DETAILS, {"text": "\\u0000 as text, not a NUL"}]
    rows = [
        {
            "alert_id": None, "purpose": "opened", "receiver": f"team:north-{i}", "channel": "slack",
            "target": "C0NORTH" if i % 2 else "north.spoc@force.example", "payload": p,
            "content_hash": f"{i:064x}", "state": "pending", "attempts": 0, "next_attempt_at": now,
            "created_at": now,
        }
        for i, p in enumerate(payloads)
    ]
    table = Delivery.metadata.tables[Delivery.__tablename__]
    async with maker.begin() as session:
        await outbox._insert_pending(session, [dict(r) for r in rows], "opened", now)
    async with maker.begin() as session:
        await session.execute(insert(table), [dict(r) for r in rows])
    columns = [c for c in table.c if c.name != "id"]
    async with maker() as session:
        got = [tuple(r) for r in await session.execute(select(table.c.id, *columns).order_by(table.c.id))]
    bulk, plain = got[: len(rows)], got[len(rows):]
    assert [r[1:] for r in bulk] == [r[1:] for r in plain]
    assert [r[0] for r in bulk] == sorted(r[0] for r in bulk)
    assert [r[columns.index(table.c.receiver) + 1] for r in bulk] == [r["receiver"] for r in rows]
