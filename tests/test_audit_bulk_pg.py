"""record_many's nominal index and the sealer's seals on PostgreSQL go in one statement a batch
(unnest of arrays): the same rows, column by column, as the executemany they replace."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

import casewatch.audit as audit
import casewatch.audit.seal as seal
from casewatch.audit import Entry, hasher_for, record_many
from casewatch.audit.seal import seal_pending
from casewatch.audit.verify import verify
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import AuditEntry, AuditNominal
from tests.conftest import pg_database_url
from tests.support import T0, make_settings
from tests.support.pg_pool import PgPool

BATCH = 2100  # more than one sealing round (seal.BATCH)


def _entries() -> list[Entry]:
    return [
        Entry(
            actor="system", action="alert.opened", subject=f"A-{i:05d}", purpose="scan",
            details={"kind": "expiry", "n": i},
            nominals=[f"VIS{(i * 7 + k) % 500:06d}" for k in range(1 + i % 3)],
        )
        for i in range(BATCH)
    ]


async def _write_and_seal(url: str) -> tuple[list[Any], list[Any]]:
    ctx = Context(make_settings(url), FixedClock(T0))
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        entries = _entries()
        for start in range(0, len(entries), 700):
            async with sessions.begin() as session:
                await record_many(session, ctx, entries[start:start + 700])
        assert await seal_pending(sessions, ctx) == BATCH
        assert (await verify(sessions, hasher_for(ctx))).intact
        async with engine.connect() as conn:
            log = list(await conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.id)))
            index = list(
                await conn.execute(
                    select(AuditNominal.__table__).order_by(AuditNominal.audit_id, AuditNominal.visor_ref)
                )
            )
        return log, index
    finally:
        await engine.dispose()


def _plain_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    """The statements before: an executemany a row for the index and for the seals."""

    async def index(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        await connection.execute(audit._INSERT_NOMINALS, rows)

    async def seals(connection: AsyncConnection, sealed: list[dict[str, Any]]) -> None:
        await connection.execute(seal._SEAL, sealed)

    monkeypatch.setattr(audit, "_insert_index", index)
    monkeypatch.setattr(seal, "_write_seals", seals)


def _check(log: list[Any], index: list[Any]) -> None:
    assert len(log) == BATCH
    assert [row.seq for row in log] == list(range(1, BATCH + 1))
    assert all(row.chain_hash and row.content_hash for row in log)
    assert sorted((r.audit_id, r.visor_ref) for r in index) == sorted(
        (row.id, ref) for row in log for ref in row.nominals
    )
    assert len(index) == sum(1 + i % 3 for i in range(BATCH))


@pytest.mark.postgres
async def test_one_statement_writes_the_same_rows_as_the_executemany(
    pg_pool: PgPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = await pg_pool.take(), await pg_pool.take()
    try:
        new_log, new_index = await _write_and_seal(pg_database_url(first))
        with monkeypatch.context() as patch:
            _plain_ways(patch)
            old_log, old_index = await _write_and_seal(pg_database_url(second))
    finally:
        await pg_pool.give_back(first)
        await pg_pool.give_back(second)
    _check(new_log, new_index)
    assert [tuple(row) for row in new_log] == [tuple(row) for row in old_log]
    assert [tuple(row) for row in new_index] == [tuple(row) for row in old_index]


async def test_a_batch_is_indexed_sealed_and_intact(db_url: str) -> None:
    log, index = await _write_and_seal(db_url)
    _check(log, index)
