"""record_many's few-entry path (ninth session) against the plain one, on SQLite and PostgreSQL: up
to audit.ONE_STATEMENT_ROWS entries go in one statement (SQLite: a multi-row INSERT .. RETURNING,
not max(id), the executemany and a read of the new ids; PostgreSQL: the entries and their
nominal index in one statement, not two). The same batches written both ways into two fresh
databases give the same audit_log and audit_nominals, row by row (ids, every column, the chain
the sealer then gives them), and verify finds both chains intact."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text

import casewatch.audit as audit
from casewatch.audit import Entry, hasher_for, record, record_many
from casewatch.audit.seal import seal_pending
from casewatch.audit.verify import verify
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import AuditEntry, AuditNominal
from tests.conftest import pg_database_url
from tests.support import T0, make_settings
from tests.support.pg_pool import PgPool


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backing(request: pytest.FixtureRequest) -> Path | PgPool:
    """The migrated SQLite template, or the PostgreSQL pool (built outside the event loop)."""
    name = "sqlite_template" if request.param == "sqlite" else "pg_pool"
    found: Path | PgPool = request.getfixturevalue(name)
    return found


@pytest.fixture
async def two_urls(backing: Path | PgPool, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """Two fresh, migrated databases of one kind."""
    if isinstance(backing, Path):
        urls = []
        for name in ("plain.db", "fast.db"):
            shutil.copyfile(backing, tmp_path / name)
            urls.append(f"sqlite+aiosqlite:///{tmp_path / name}")
        yield urls[0], urls[1]
        return
    pool: PgPool = backing
    names = [await pool.take(), await pool.take()]
    try:
        yield pg_database_url(names[0]), pg_database_url(names[1])
    finally:
        for name in names:
            await pool.give_back(name)


def _entry(i: int, refs: int) -> Entry:
    return Entry(
        actor="system", action="alert.opened", subject=f"A-{i:05d}", purpose="travel: border check",
        details={"visor_ref": f"VS-{i:07d}", "severity": "high", "n": i, "text": "Testperson's \"check\""},
        nominals=[f"VS-{(i * 7 + k) % 50:07d}" for k in range(refs)],
    )


# Batch sizes round the bound, with entries about no nominal, one, several, and a lone record().
BATCHES: list[list[tuple[int, int]]] = [
    [(1, 1)], [(2, 1), (3, 1)], [(4, 0)], [(5, 0), (6, 2), (7, 3)], [(8, 2), (9, 0)],
    [(10 + n, n % 3) for n in range(audit.ONE_STATEMENT_ROWS)],
    [(40 + n, n % 4) for n in range(audit.ONE_STATEMENT_ROWS + 1)],
    [(70, 1), (71, 1)],
]


async def _write(
    url: str, *, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], list[int]]:
    """The batches written (fast: as record_many does; else with the one-statement path off),
    sealed, verified; the tables and the statements each batch ran."""
    ctx = Context(make_settings(url), FixedClock(T0))
    engine = make_engine(url)
    counted = [0]

    def count(*_: Any) -> None:
        counted[0] += 1

    statements = []
    try:
        sessions = make_sessionmaker(engine)
        with monkeypatch.context() as patch:
            if not fast:
                patch.setattr(audit, "ONE_STATEMENT_ROWS", 0)
            event.listen(engine.sync_engine, "before_cursor_execute", count)
            for n, batch in enumerate(BATCHES):
                async with sessions.begin() as session:
                    await session.connection()  # BEGIN, counted apart from the batch
                    counted[0] = 0
                    await record_many(session, ctx, [_entry(i, refs) for i, refs in batch])
                    statements.append(counted[0])
                    if n == 3:  # a lone record() beside a batch, in the same transaction
                        await record(session, ctx, actor="PC1", action="flags.lookup",
                                     nominals=["VS-0000009"])
            event.remove(engine.sync_engine, "before_cursor_execute", count)
        assert await seal_pending(sessions, ctx) == sum(len(b) for b in BATCHES) + 1
        assert (await verify(sessions, hasher_for(ctx))).intact
        async with engine.connect() as conn:
            tables = {
                "log": list(await conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.id))),
                "index": list(await conn.execute(
                    select(AuditNominal.__table__).order_by(AuditNominal.audit_id, AuditNominal.visor_ref)
                )),
                # As stored (PostgreSQL's json keeps its text as sent).
                "raw": list(await conn.execute(text(
                    "SELECT id, CAST(details AS text), CAST(nominals AS text) FROM audit_log ORDER BY id"
                ))),
            }
        return tables, statements
    finally:
        await engine.dispose()


async def test_few_entries_in_one_statement_write_what_the_plain_path_writes(
    two_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_url, fast_url = two_urls
    plain, plain_statements = await _write(plain_url, fast=False, monkeypatch=monkeypatch)
    fast, fast_statements = await _write(fast_url, fast=True, monkeypatch=monkeypatch)
    assert fast == plain
    # The rows are what the batches asked for: every entry, in order, each indexed by its nominals.
    entries = [_entry(i, refs) for batch in BATCHES for i, refs in batch]
    log = [row for row in fast["log"] if row.actor == "system"]
    assert [row.subject for row in log] == [e.subject for e in entries]
    by_id = {row.id: row.subject for row in log}
    indexed = sorted((by_id[row.audit_id], row.visor_ref) for row in fast["index"] if row.audit_id in by_id)
    assert indexed == sorted((e.subject, ref) for e in entries for ref in sorted(set(e.nominals)))
    assert all(row.seq is not None and row.chain_hash for row in fast["log"])
    # Fewer statements for every batch within the bound; the same beyond it.
    sqlite = plain_url.startswith("sqlite")
    for batch, p, f in zip(BATCHES, plain_statements, fast_statements, strict=True):
        if len(batch) > audit.ONE_STATEMENT_ROWS:
            assert f == p
        elif sqlite:
            assert (p, f) == (3 + any(refs for _, refs in batch), 1 + any(refs for _, refs in batch))
        else:
            assert (p, f) == (1 + any(refs for _, refs in batch), 1)
