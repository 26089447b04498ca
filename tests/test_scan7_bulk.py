"""The scan's bulk writes (issue 17, seventh session): on PostgreSQL the outbox rows and the audit
entries go in as one statement a batch (unnest of arrays), and the sealer reads only ids and
hashes when no entry from before the chain is left. Each must write exactly what the plain way
wrote: two fresh databases scanned alike (same data, fixed clock, alert ids drawn from the live
key), one by the new statements and one by the old, hold the same rows, every column of every
row of alerts, deliveries, audit_log and audit_nominals, ids included (so each row took the id
the old way gave it, in the same order). Both databases; a first scan and a later one that
resolves and opens (other changes, other receivers)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

import casewatch.audit as audit
import casewatch.audit.seal as seal
from bench.dataset import NOW, Sizes, generate, make_settings
from casewatch.alerts import lifecycle
from casewatch.audit import hasher_for
from casewatch.audit.seal import seal_pending
from casewatch.audit.verify import verify
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.routing import outbox
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Alert, AuditEntry, AuditNominal, Delivery
from casewatch.triggers import scan
from tests.conftest import pg_database_url
from tests.support.pg_pool import PgPool

SIZES = Sizes(nominals=1_500, actions=8_000, officers=20, teams=3)
LATER = NOW + timedelta(days=3)  # due-soon actions now overdue: resolves, opens
TABLES = (Alert, Delivery, AuditEntry, AuditNominal)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def pool(request: pytest.FixtureRequest) -> PgPool | None:
    """None for SQLite; PostgreSQL's pool of fresh databases (set up outside the event loop)."""
    return request.getfixturevalue("pg_pool") if request.param == "postgres" else None


@pytest.fixture
async def two_urls(
    pool: PgPool | None, sqlite_template: Path, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """Two fresh, migrated databases of one kind."""
    if pool is None:
        paths = [tmp_path / "new.db", tmp_path / "old.db"]
        for path in paths:
            shutil.copyfile(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{paths[0]}", f"sqlite+aiosqlite:///{paths[1]}"
        return
    names = [await pool.take(), await pool.take()]
    try:
        yield pg_database_url(names[0]), pg_database_url(names[1])
    finally:
        for name in names:
            await pool.give_back(name)


def _ids_from_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Alert ids from the live key (not random), so both databases give an alert the same id."""
    drawn: list[str] = []
    original = lifecycle.open_alerts

    async def open_alerts(session: AsyncSession, specs: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        keys = list(dict.fromkeys(spec.live_key for spec in specs))
        drawn[:] = ["A-" + hashlib.sha256(key.encode()).hexdigest()[:12].upper() for key in keys]
        return await original(session, specs, *args, **kwargs)

    def draw(n: int) -> list[str]:
        assert n == len(drawn), "one draw a batch, no collision"
        return list(drawn)

    monkeypatch.setattr(lifecycle, "_draw_ids", draw)
    # reconcile imported the function itself
    monkeypatch.setattr("casewatch.triggers.reconcile.open_alerts", open_alerts)


def _old_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    """The statements before: an executemany of the outbox rows, SQLAlchemy's multi-row VALUES
    for the audit entries, the sealer reading every column."""

    async def insert_pending(session: AsyncSession, rows: list[dict[str, Any]], *_: Any) -> None:
        await session.execute(insert(outbox._DELIVERIES), rows)

    async def insert_entries(connection: AsyncConnection, rows: list[dict[str, Any]]) -> list[int]:
        entries = audit._ENTRIES
        statement = insert(entries).returning(entries.c.id, sort_by_parameter_order=True)
        return list((await connection.execute(statement, rows)).scalars())

    monkeypatch.setattr(outbox, "_insert_pending", insert_pending)
    monkeypatch.setattr(audit, "_insert_many_pg", insert_entries)
    monkeypatch.setattr(seal, "_UNSEALED_HASHES", seal._UNSEALED)


async def _scan_twice(url: str) -> dict[str, list[Any]]:
    engine = make_engine(url)
    try:
        await generate(engine, SIZES, make_settings(url, SIZES))
        sessions = make_sessionmaker(engine)
        for at in (NOW, LATER):
            ctx = Context(make_settings(url, SIZES), FixedClock(at))
            await scan.run_scan(sessions, ctx, at, batch_size=50)  # many pages, many batches
            await seal_pending(sessions, ctx)
            assert (await verify(sessions, hasher_for(ctx))).intact
        async with engine.connect() as conn:
            return {
                model.__tablename__: list(await conn.execute(
                    select(model.__table__).order_by(*model.__table__.primary_key.columns)  # type: ignore[attr-defined]
                ))
                for model in TABLES
            }
    finally:
        await engine.dispose()


async def test_bulk_writes_give_the_rows_the_plain_ways_gave(
    two_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    new_url, old_url = two_urls
    monkeypatch.setattr(scan, "WRITERS", 1)  # pages written in one order: the same ids each run
    _ids_from_keys(monkeypatch)
    new = await _scan_twice(new_url)
    with monkeypatch.context() as patch:
        _old_ways(patch)
        old = await _scan_twice(old_url)
    deliveries = new["deliveries"]
    assert len(new["alerts"]) > 100 and len(deliveries) > 100
    purposes = {row.purpose for row in deliveries}
    assert {"opened", "resolved"} <= purposes
    assert any(row.state == "resolved" for row in new["alerts"])
    for table in new:
        assert len(new[table]) == len(old[table]), table
        for new_row, old_row in zip(new[table], old[table], strict=True):
            assert new_row == old_row, table
