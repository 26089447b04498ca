"""Review (tenth session) of audit.record_many's one statement (ninth session, ec65b0e): on SQLite a
multi-row INSERT .. RETURNING id (the ids sorted), on PostgreSQL the entries and their nominal
index in one statement (the index joined to the entries by the ids' rank). Attacked two ways:

- writers in flight at once (several transactions gathered, PostgreSQL's sequence drawn by each
  in turn) while a sealer works beside them: every entry's nominal index must name the entry's own
  nominals, never a neighbour's, every entry be sealed once, and the chain verify;
- hostile details and nominals (quotes, backslashes, NUL, invisible and astral characters, long
  text, JSON-special keys): the one statement stores what the plain path stores, raw JSON text
  included, and the chain verifies.

SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import casewatch.audit as audit
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
from tests.test_audit9_folds import backing, two_urls  # noqa: F401 (fixtures)

WRITERS = 6
ROUNDS = 4


Mismatch = tuple[int, list[str], list[str]]


async def index_mismatches(sessions: async_sessionmaker[AsyncSession]) -> list[Mismatch]:
    """Every audit entry whose nominal index (audit_nominals) is not the set of nominals the entry
    itself names: (id, its nominals, its index rows). Empty when every index row is its entry's
    (other review10 tests check it after their traffic, whatever path wrote the entries)."""
    async with sessions() as session:
        entries = (await session.execute(select(AuditEntry.id, AuditEntry.nominals))).all()
        index = (await session.execute(select(AuditNominal.audit_id, AuditNominal.visor_ref))).all()
    by_entry: dict[int, list[str]] = {}
    for audit_id, ref in index:
        by_entry.setdefault(audit_id, []).append(ref)
    known = {entry_id for entry_id, _ in entries}
    wrong = [(i, sorted(refs or []), sorted(by_entry.get(i, []))) for i, refs in entries
             if sorted(refs or []) != sorted(by_entry.get(i, []))]
    wrong += [(i, [], sorted(refs)) for i, refs in by_entry.items() if i not in known]
    return wrong


def _entries(writer: int, round_: int) -> list[Entry]:
    """A batch whose size walks round the one-statement bound; each entry names its own nominal
    (and, every third, a second one) and says which in its details."""
    size = 1 + (writer * 5 + round_ * 3) % (audit.ONE_STATEMENT_ROWS + 4)
    out = []
    for n in range(size):
        ref = f"VS-{writer:02d}{round_:02d}{n:03d}"
        extra = [f"VS-9{writer:02d}{n:04d}"] if n % 3 == 0 else []
        out.append(Entry(actor="system", action="alert.opened", subject=f"A-{writer}-{round_}-{n}",
                         purpose="review10", details={"ref": ref, "extra": extra}, nominals=[ref, *extra]))
    return out


@pytest.fixture
async def one_url(backing: Path | PgPool, tmp_path: Path) -> AsyncIterator[str]:  # noqa: F811
    if isinstance(backing, Path):
        shutil.copyfile(backing, tmp_path / "one.db")
        yield f"sqlite+aiosqlite:///{tmp_path / 'one.db'}"
        return
    pool: PgPool = backing
    name = await pool.take()
    try:
        yield pg_database_url(name)
    finally:
        await pool.give_back(name)


async def test_writers_in_flight_at_once_keep_each_entry_s_own_index(one_url: str) -> None:
    ctx = Context(make_settings(one_url), FixedClock(T0))
    engine = make_engine(one_url, pool_size=WRITERS)
    try:
        sessions = make_sessionmaker(engine)
        start = asyncio.Event()

        async def writer(w: int, r: int) -> None:
            async with sessions.begin() as session:
                await session.connection()
                await start.wait()  # every transaction open, then all write at once
                await record_many(session, ctx, _entries(w, r))

        sealed = [0]
        writing = True

        async def sealer() -> None:  # a sealer at work while the writers commit, late ids and all
            while writing:
                sealed[0] += await seal_pending(sessions, ctx)
                await asyncio.sleep(0.005)

        sealing = asyncio.create_task(sealer())
        for r in range(ROUNDS):
            start.clear()
            tasks = [asyncio.create_task(writer(w, r)) for w in range(WRITERS)]
            await asyncio.sleep(0.05)
            start.set()
            await asyncio.gather(*tasks)
        writing = False
        await sealing
        async with sessions() as session:
            entries = list((await session.execute(select(AuditEntry))).scalars())
            index = (await session.execute(select(AuditNominal.audit_id, AuditNominal.visor_ref))).all()
        by_entry: dict[int, set[str]] = {}
        for audit_id, ref in index:
            by_entry.setdefault(audit_id, set()).add(ref)
        expected = sum(len(_entries(w, r)) for w in range(WRITERS) for r in range(ROUNDS))
        assert len(entries) == expected
        wrong = [(e.id, e.details, sorted(by_entry.get(e.id, ()))) for e in entries
                 if by_entry.get(e.id, set()) != {e.details["ref"], *e.details["extra"]}
                 or set(e.nominals) != by_entry.get(e.id)]
        assert not wrong, wrong[:5]
        assert sealed[0] + await seal_pending(sessions, ctx) == expected
        assert (await verify(sessions, hasher_for(ctx))).intact
        async with sessions() as session:
            unsealed = (await session.execute(select(AuditEntry.id).where(AuditEntry.seq.is_(None)))).all()
        assert unsealed == []
    finally:
        await engine.dispose()


HOSTILE = [
    'quote " and \' apostrophe', "back\\slash \\u0000 written out", "nul \u0000 inside",
    "zero\u200bwidth\ufeffbom\u202eright-to-left", "astral \U0001f600 \U00010348", "Ação ß 漢字",
    "x" * 5000, "{\"not\": \"json\"}", "]", "null", "\n\r\t controls in text",
]


def _hostile(n: int) -> Entry:
    value = HOSTILE[n % len(HOSTILE)]
    return Entry(
        # PostgreSQL's text holds no NUL (nor do the chat commands' cleaned texts): only the JSON has it.
        actor=f"PC{n}\u00e9", action="flags.lookup", subject=value[:200].replace("\u0000", ""),
        purpose=value[:200].replace("\u0000", ""),
        details={"asked": value, value[:50]: n, "nested": {"list": [value, n, None, True, 1.5]}},
        nominals=[f"VS-{n:07d}", f"vs-{n:07d}"],
    )


async def _write_hostile(url: str, *, fast: bool, patch: pytest.MonkeyPatch) -> dict[str, Any]:
    ctx = Context(make_settings(url), FixedClock(T0))
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        patch.setattr(audit, "ONE_STATEMENT_ROWS", 16 if fast else 0)
        for size in (1, 3, len(HOSTILE), 16, 17):
            async with sessions.begin() as session:
                await record_many(session, ctx, [_hostile(n) for n in range(size)])
        assert (await seal_pending(sessions, ctx)) > 0
        assert (await verify(sessions, hasher_for(ctx))).intact
        async with engine.connect() as conn:
            return {
                "log": list(await conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.id))),
                "index": list(await conn.execute(
                    select(AuditNominal.__table__).order_by(AuditNominal.audit_id, AuditNominal.visor_ref)
                )),
                "raw": list(await conn.execute(text(
                    "SELECT id, CAST(details AS text), CAST(nominals AS text) FROM audit_log ORDER BY id"
                ))),
            }
    finally:
        await engine.dispose()


async def test_hostile_details_are_stored_as_the_plain_path_stores_them(
    two_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    plain_url, fast_url = two_urls
    with monkeypatch.context() as patch:
        plain = await _write_hostile(plain_url, fast=False, patch=patch)
    with monkeypatch.context() as patch:
        fast = await _write_hostile(fast_url, fast=True, patch=patch)
    assert fast["log"] == plain["log"]
    assert fast["index"] == plain["index"]
    assert fast["raw"] == plain["raw"]
    assert len(plain["log"]) == 1 + 3 + len(HOSTILE) + 16 + 17
