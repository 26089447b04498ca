"""The audit log's hash chain (issue 16): sealing, verification, tampering of every kind, two
writers at once, the retention checkpoint, and the key. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.audit import hasher_for, record
from casewatch.audit.chain import GENESIS, Hasher, checkpoint_signature, content_hash, link_hash
from casewatch.audit.seal import AuditKeyMismatch, seal_once, seal_pending
from casewatch.audit.verify import KeyMismatch, Verification, verify
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.retention import purge
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import AuditChain, AuditEntry, AuditNominal
from tests.support import make_settings

NOW = datetime(2026, 11, 23, 9, 0, 0, 123456, tzinfo=UTC)


def _ctx(key: str = "", at: datetime = NOW, **schedules: Any) -> Context:
    """The database is the test's own sessions; the settings' URL is not used here."""
    overrides: dict[str, Any] = {"audit": {"key": key}}
    if schedules:
        overrides["schedules"] = schedules
    return Context(make_settings("sqlite+aiosqlite:///unused.db", **overrides), FixedClock(at))


async def _write(sessions: async_sessionmaker[AsyncSession], ctx: Context, n: int, *, start: int = 0) -> None:
    """n entries, with and without nominals."""
    for i in range(start, start + n):
        async with sessions.begin() as session:
            await record(
                session, ctx, actor=f"PC{i:04d}", action="flags.lookup" if i % 3 else "delivery.sent",
                subject=f"VS-{i:07d}", purpose="control room: live incident",
                details={"outcome": "found", "n": i, "nested": {"b": [1, "zwei"], "a": None}, "é": "ü"},
                nominals=[f"VS-{i:07d}", "VS-0000001"] if i % 4 else [],
            )


async def _verify(sessions: async_sessionmaker[AsyncSession], ctx: Context) -> Verification:
    return await verify(sessions, hasher_for(ctx), page=4)  # small pages: the keyset paging is exercised


async def _ids(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    async with sessions() as s:
        return list((await s.execute(select(AuditEntry.id).order_by(AuditEntry.seq))).scalars())


async def test_entries_seal_into_one_chain_that_verifies(sessions: async_sessionmaker[AsyncSession]) -> None:
    ctx = _ctx()
    await _write(sessions, ctx, 10)
    before = await _verify(sessions, ctx)
    assert before.intact and before.checked == 0 and before.unsealed == 10  # written, not yet chained
    assert await seal_pending(sessions, ctx) == 10
    result = await _verify(sessions, ctx)
    assert result.intact, result.broken
    assert (result.checked, result.unsealed, result.head_seq) == (10, 0, 10)
    async with sessions() as s:
        rows = list((await s.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars())
        index = {(n.audit_id, n.visor_ref) for n in (await s.execute(select(AuditNominal))).scalars()}
    # Recomputed here from the definition (chain.py), not from the code under test's walk.
    hasher, previous = Hasher(), GENESIS
    for seq, row in enumerate(rows, start=1):
        assert row.seq == seq
        assert row.content_hash == content_hash(
            hasher, at=row.at, actor=row.actor, action=row.action, subject=row.subject,
            purpose=row.purpose, details=row.details, nominals=row.nominals,
        )
        previous = link_hash(hasher, previous, seq, row.id, row.content_hash)
        assert row.chain_hash == previous
    assert result.head_hash == previous
    assert rows[1].nominals == ["VS-0000001"]  # deduplicated
    assert rows[2].nominals == ["VS-0000001", "VS-0000002"]  # sorted
    assert rows[0].nominals == []
    assert {(r.id, ref) for r in rows for ref in r.nominals} == index
    assert await seal_pending(sessions, ctx) == 0  # nothing left: a second sealer finds nothing


async def test_the_same_entry_hashes_the_same_on_both_databases(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Canonical content (RFC 8785): the hash does not depend on how a database returns JSON
    (keys in another order, other spacing); each database's stored entry re-hashes to the value
    computed here from the literal content."""
    ctx = _ctx()
    await _write(sessions, ctx, 1, start=5)
    await seal_pending(sessions, ctx)
    async with sessions() as s:
        hashes = list((await s.execute(select(AuditEntry.content_hash))).scalars())
    expected = content_hash(
        Hasher(), at=NOW, actor="PC0005", action="flags.lookup", subject="VS-0000005",
        purpose="control room: live incident",
        details={"é": "ü", "nested": {"a": None, "b": [1, "zwei"]}, "outcome": "found", "n": 5},
        nominals=["VS-0000001", "VS-0000005"],
    )
    assert hashes == [expected]


# --- tampering: every column of a sealed entry, and every way of adding or removing one -------

def _edit(column: str, value: Any) -> Any:
    return lambda row_id: update(AuditEntry).where(AuditEntry.id == row_id).values({column: value})


EDITS = {
    "at": _edit("at", NOW + timedelta(seconds=1)),
    "actor": _edit("actor", "PC9999"),
    "action": _edit("action", "tasks.list"),
    "subject": _edit("subject", "VS-0000999"),
    "purpose": _edit("purpose", "curiosity"),
    "details": _edit("details", {"outcome": "not_found"}),
    "nominals": _edit("nominals", ["VS-0000001"]),
    "content_hash": _edit("content_hash", "f" * 64),
    "chain_hash": _edit("chain_hash", "e" * 64),
}


@pytest.mark.parametrize("column", sorted(EDITS))
async def test_an_edit_to_any_column_is_found_at_that_entry(
    sessions: async_sessionmaker[AsyncSession], column: str
) -> None:
    ctx = _ctx()
    await _write(sessions, ctx, 9)
    await seal_pending(sessions, ctx)
    target = (await _ids(sessions))[4]  # seq 5: has nominals (i=5 -> i%4 == 1)
    async with sessions.begin() as s:
        await s.execute(EDITS[column](target))
    result = await _verify(sessions, ctx)
    assert not result.intact
    assert result.broken is not None
    assert result.broken.entry_id == target and result.broken.seq == 5
    assert result.checked == 4


async def test_an_edited_id_is_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    ctx = _ctx()
    await _write(sessions, ctx, 6)
    await seal_pending(sessions, ctx)
    target = (await _ids(sessions))[0]  # i=0: no nominals, so no index rows to follow the id
    async with sessions.begin() as s:
        await s.execute(update(AuditEntry).where(AuditEntry.id == target).values(id=10_000))
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.entry_id == 10_000 and result.broken.seq == 1


@pytest.mark.parametrize("position", [0, 3, 5])  # the first, a middle and the last entry
async def test_a_deleted_entry_is_found(sessions: async_sessionmaker[AsyncSession], position: int) -> None:
    ctx = _ctx()
    await _write(sessions, ctx, 6)
    await seal_pending(sessions, ctx)
    ids = await _ids(sessions)
    async with sessions.begin() as s:
        await s.execute(delete(AuditEntry).where(AuditEntry.id == ids[position]))
    result = await _verify(sessions, ctx)
    assert result.broken is not None
    if position == 5:
        assert "newest entries deleted" in result.broken.why and result.broken.seq == 5
    else:
        assert result.broken.entry_id == ids[position + 1]
        assert f"entries {position + 1} to {position + 1} are missing" in result.broken.why


async def test_an_inserted_entry_is_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A forged entry put into the chain: with a correct content hash, and the entries after it
    moved along, its link (which needs the previous link and its own place) does not follow."""
    ctx = _ctx()
    await _write(sessions, ctx, 5)
    await seal_pending(sessions, ctx)
    hasher = Hasher()
    async with sessions.begin() as s:
        await s.execute(update(AuditEntry).where(AuditEntry.seq > 2).values(seq=AuditEntry.seq + 100))
        await s.execute(update(AuditEntry).where(AuditEntry.seq > 100).values(seq=AuditEntry.seq - 99))
        forged: dict[str, Any] = dict(
            at=NOW, actor="PC0001", action="flags.lookup", subject="x", purpose="p", details={}, nominals=[]
        )
        s.add(AuditEntry(**forged, content_hash=content_hash(hasher, **forged), seq=3, chain_hash="a" * 64))
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.seq == 3 and "link" in result.broken.why


async def test_reordered_entries_are_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    ctx = _ctx()
    await _write(sessions, ctx, 5)
    await seal_pending(sessions, ctx)
    ids = await _ids(sessions)
    async with sessions.begin() as s:  # swap places 2 and 3
        await s.execute(update(AuditEntry).where(AuditEntry.id == ids[1]).values(seq=-2))
        await s.execute(update(AuditEntry).where(AuditEntry.id == ids[2]).values(seq=2))
        await s.execute(update(AuditEntry).where(AuditEntry.id == ids[1]).values(seq=3))
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.seq == 2 and result.broken.entry_id == ids[2]


@pytest.mark.parametrize("change", ["drop", "add"])
async def test_an_edited_nominal_index_is_found(
    sessions: async_sessionmaker[AsyncSession], change: str
) -> None:
    ctx = _ctx()
    await _write(sessions, ctx, 4)
    await seal_pending(sessions, ctx)
    target = (await _ids(sessions))[1]  # i=1: about VS-0000001 only
    async with sessions.begin() as s:
        if change == "drop":
            await s.execute(delete(AuditNominal).where(AuditNominal.audit_id == target))
        else:
            s.add(AuditNominal(audit_id=target, visor_ref="VS-0000777"))
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.entry_id == target and "index" in result.broken.why


async def test_an_entry_unsealed_by_hand_is_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    ctx = _ctx()
    await _write(sessions, ctx, 4)
    await seal_pending(sessions, ctx)
    ids = await _ids(sessions)
    async with sessions.begin() as s:
        await s.execute(update(AuditEntry).where(AuditEntry.id == ids[1]).values(seq=None, chain_hash=None))
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.entry_id == ids[2] and "missing" in result.broken.why


async def test_an_edit_before_sealing_is_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    """The window between writing and sealing: the content hash is written with the entry."""
    ctx = _ctx(key="k" * 32)
    await _write(sessions, ctx, 3)
    ids = await _ids(sessions)
    async with sessions.begin() as s:
        await s.execute(update(AuditEntry).where(AuditEntry.id == ids[2]).values(purpose="edited"))
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.entry_id == ids[2] and result.broken.seq is None
    await seal_pending(sessions, ctx)  # sealed as it is, the edit still shows
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.entry_id == ids[2] and "edited" in result.broken.why


async def test_a_keyed_chain_cannot_be_rebuilt_without_the_key(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Someone who can write the database edits an entry and recomputes every hash after it, but
    holds no key: verification under the key finds the first entry they recomputed."""
    ctx = _ctx(key="the-real-key-0123456789abcdef")
    await _write(sessions, ctx, 4)
    await seal_pending(sessions, ctx)
    guess = Hasher(b"a guess")
    async with sessions.begin() as s:
        rows = list((await s.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars())
        rows[1].purpose = "rewritten"
        previous = rows[0].chain_hash or ""
        for row in rows[1:]:
            row.content_hash = content_hash(
                guess, at=row.at, actor=row.actor, action=row.action, subject=row.subject,
                purpose=row.purpose, details=row.details, nominals=row.nominals,
            )
            row.chain_hash = previous = link_hash(guess, previous, row.seq or 0, row.id, row.content_hash)
        chain = (await s.execute(select(AuditChain))).scalar_one()
        chain.head_hash = previous
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.entry_id == rows[1].id
    assert "edited" in result.broken.why


async def test_an_unkeyed_chain_rebuilt_by_hand_still_verifies(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Why the key exists: without it, a rebuilt chain is indistinguishable (stated in docs/audit.md)."""
    ctx = _ctx()
    await _write(sessions, ctx, 3)
    await seal_pending(sessions, ctx)
    async with sessions.begin() as s:
        rows = list((await s.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars())
        rows[1].purpose = "rewritten"
        previous = rows[0].chain_hash or ""
        for row in rows[1:]:
            row.content_hash = content_hash(
                Hasher(), at=row.at, actor=row.actor, action=row.action, subject=row.subject,
                purpose=row.purpose, details=row.details, nominals=row.nominals,
            )
            previous = link_hash(Hasher(), previous, row.seq or 0, row.id, row.content_hash)
            row.chain_hash = previous
        (await s.execute(select(AuditChain))).scalar_one().head_hash = previous
    assert (await _verify(sessions, ctx)).intact


async def test_the_key_the_chain_began_with_is_required(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    keyed = _ctx(key="first-key-0123456789")
    await _write(sessions, keyed, 2)
    await seal_pending(sessions, keyed)
    for other in (_ctx(key="second-key-0123456789"), _ctx()):
        with pytest.raises(AuditKeyMismatch):
            await seal_once(sessions, other)
        with pytest.raises(KeyMismatch):
            await _verify(sessions, other)
    assert (await _verify(sessions, keyed)).intact


# --- two writers and two sealers at once ---------------------------------------------------


async def test_two_processes_writing_and_sealing_at_once_make_one_chain(db_url: str) -> None:
    """Two engines (as two `serve` processes), each writing entries in its own transactions and
    sealing as it goes, interleaved: one gapless chain that verifies, every entry in it once."""
    ctx = _ctx()
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        makers = [make_sessionmaker(e) for e in engines]

        async def process(index: int) -> None:
            sessions = makers[index]
            for i in range(30):
                await _write(sessions, ctx, 1, start=index * 1000 + i)
                if i % 3 == index:
                    await seal_once(sessions, ctx, batch=4)
                await asyncio.sleep(0)

        await asyncio.gather(process(0), process(1))
        await seal_pending(makers[0], ctx)
        result = await _verify(makers[1], ctx)
        assert result.intact, result.broken
        assert (result.checked, result.unsealed, result.head_seq) == (60, 0, 60)
        async with makers[0]() as s:
            actors = list((await s.execute(select(AuditEntry.actor))).scalars())
        assert len(set(actors)) == 60
    finally:
        for e in engines:
            await e.dispose()


# --- retention ------------------------------------------------------------------------------


async def test_a_purge_leaves_a_checkpoint_and_what_remains_verifies(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    old = _ctx(key="retention-key-0123", at=NOW - timedelta(days=400))
    await _write(sessions, old, 5)
    new = _ctx(key="retention-key-0123", at=NOW, audit_retention_days=365)
    await _write(sessions, new, 3, start=10)
    await seal_pending(sessions, new)
    summary = await purge(sessions, new)
    assert summary.audit_entries == 5
    async with sessions() as s:
        chain = (await s.execute(select(AuditChain))).scalar_one()
        left = list((await s.execute(select(AuditEntry.action).order_by(AuditEntry.id))).scalars())
        index_left = (await s.execute(select(AuditNominal.audit_id))).scalars().all()
    assert chain.base_seq == 5 and chain.base_signature
    assert "audit.checkpoint" in left and len([a for a in left if a != "retention.purged"]) == 4
    assert index_left and all(i > 0 for i in index_left)
    await seal_pending(sessions, new)
    result = await _verify(sessions, new)
    assert result.intact, result.broken
    assert result.base_seq == 5 and result.checked == 5  # 3 kept, the checkpoint, the purge's own entry
    # A second purge with nothing newly old moves nothing.
    assert (await purge(sessions, new)).audit_entries == 0


@pytest.mark.parametrize("tamper", ["signature", "base_seq", "checkpoint_entry"])
async def test_a_tampered_checkpoint_is_found(
    sessions: async_sessionmaker[AsyncSession], tamper: str
) -> None:
    old = _ctx(at=NOW - timedelta(days=400))
    await _write(sessions, old, 4)
    new = _ctx(at=NOW, audit_retention_days=365)
    await _write(sessions, new, 3, start=10)
    await purge(sessions, new)
    await seal_pending(sessions, new)
    async with sessions.begin() as s:
        chain = (await s.execute(select(AuditChain))).scalar_one()
        if tamper == "signature":
            chain.base_signature = "0" * 64
        elif tamper == "base_seq":  # hide more of the log behind the checkpoint
            hidden = select(AuditEntry).where(AuditEntry.seq == chain.base_seq + 2)
            row = (await s.execute(hidden)).scalar_one()
            chain.base_seq, chain.base_hash = row.seq or 0, row.chain_hash or ""
            chain.base_signature = checkpoint_signature(
                Hasher(), chain.base_seq, chain.base_hash, chain.base_cut_at or NOW
            )
        else:
            await s.execute(text("UPDATE audit_log SET action = 'x' WHERE action = 'audit.checkpoint'"))
    result = await _verify(sessions, new)
    assert result.broken is not None
    expected = {
        "signature": "signature does not match",
        "base_seq": "not recorded in the log",
        "checkpoint_entry": "does not match its hash",
    }[tamper]
    assert expected in result.broken.why


# --- migration 0009 ---------------------------------------------------------------------------


async def test_entries_from_before_the_chain_join_it_and_0009_is_reversible(
    engine: AsyncEngine,
) -> None:
    """Entries written before migration 0009 have no content hash: the first seal computes it and
    chains them in id order, and they verify like any other."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import Connection

    from casewatch.store.migrate import current_revision, head_revision, upgrade
    from tests.support import downgrade_to, insert_into

    def tables(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names())

    assert await current_revision(engine) == head_revision()
    async with engine.begin() as conn:
        await conn.run_sync(downgrade_to, str(engine.url), "0008")
    async with engine.connect() as conn:
        assert not {"audit_chain", "audit_nominals"} & await conn.run_sync(tables)
    old = [
        {
            "id": 10 * (i + 1), "at": NOW - timedelta(days=3 - i), "actor": "system",
            "action": "delivery.sent",
            "subject": f"A-OLD00{i}", "purpose": "alert delivered", "details": {"channel": "email"},
        }
        for i in range(3)
    ]
    async with engine.begin() as conn:
        await conn.execute(insert_into("audit_log", old), old)
    lookup = {
        "id": 40, "at": NOW - timedelta(days=1), "actor": "PC0002", "action": "flags.lookup",
        "subject": "smith", "purpose": "slack /flags",
        "details": {"outcome": "several", "visor_refs_shown": ["VS-0000002", "VS-0000003"]},
    }
    opened = {
        "id": 50, "at": NOW - timedelta(days=1), "actor": "system", "action": "alert.opened",
        "subject": "A-OLD009",
        "purpose": "travel.border_alert", "details": {"visor_ref": "VS-0000004", "severity": "high"},
    }
    async with engine.begin() as conn:
        await conn.execute(insert_into("audit_log", [lookup, opened]), [lookup, opened])
    await upgrade(engine)
    sessions = make_sessionmaker(engine)
    async with sessions() as s:  # the nominals the old entries recorded, indexed by the migration
        by_subject = {r.subject: r.nominals for r in (await s.execute(select(AuditEntry))).scalars()}
        index = set((await s.execute(select(AuditNominal.visor_ref, AuditNominal.audit_id))).all())
    assert by_subject["smith"] == ["VS-0000002", "VS-0000003"]
    assert by_subject["A-OLD009"] == ["VS-0000004"] and by_subject["A-OLD000"] == []
    assert {ref for ref, _ in index} == {"VS-0000002", "VS-0000003", "VS-0000004"}
    ctx = _ctx()
    await _write(sessions, ctx, 2)
    before_seal = await _verify(sessions, ctx)  # old entries awaiting their first seal are not broken
    assert before_seal.intact and before_seal.unsealed == 7
    assert await seal_pending(sessions, ctx) == 7
    result = await _verify(sessions, ctx)
    assert result.intact and result.checked == 7
    async with sessions() as s:
        first = (await s.execute(select(AuditEntry).where(AuditEntry.subject == "A-OLD000"))).scalar_one()
        chain = (await s.execute(select(AuditChain))).scalar_one()
    assert first.nominals == [] and len(first.content_hash) == 64 and first.seq is not None
    assert chain.legacy_through_id == 0  # from now on no entry without a hash is hashed for it
    # An id below the old entries' (so below what legacy_through_id was), with no hash: reported.
    forged = await _forge(sessions, id=15)
    broken = (await _verify(sessions, ctx)).broken
    assert broken is not None and broken.entry_id == forged and broken.seq is None


# --- what the review found (issue 16): hashes left empty, checkpoints without a time, verify
# beside a running sealer, rows no canonical form takes ---------------------------------------


async def _forge(sessions: async_sessionmaker[AsyncSession], **values: Any) -> int:
    """A row written by hand, as someone with database write access but not the key could."""
    row = dict(
        at=NOW, actor="PC0001", action="alert.acknowledged", subject="A-FORGED", purpose="forged",
        details={"outcome": "done"}, nominals=[], content_hash="",
    ) | values
    async with sessions.begin() as s:
        entry = AuditEntry(**row)
        s.add(entry)
        await s.flush()
        return entry.id


async def test_a_row_written_with_no_hash_is_reported_sealed_or_not(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ctx = _ctx(key="the-key-0123456789")
    await _write(sessions, ctx, 2)
    forged = await _forge(sessions)
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.entry_id == forged and result.broken.seq is None
    await seal_pending(sessions, ctx)  # sealed as it is: its hash is not made up for it
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.entry_id == forged and result.broken.seq == 3
    assert "does not match its hash" in result.broken.why


async def test_an_entry_edited_and_its_hash_blanked_before_sealing_is_reported(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ctx = _ctx(key="the-key-0123456789")
    await _write(sessions, ctx, 3)
    target = (await _ids(sessions))[1]
    async with sessions.begin() as s:
        await s.execute(
            update(AuditEntry).where(AuditEntry.id == target).values(purpose="edited", content_hash="")
        )
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.entry_id == target


@pytest.mark.parametrize("value", [2**60, float("nan")])
async def test_a_row_no_canonical_form_takes_neither_stalls_the_sealer_nor_crashes_verify(
    sessions: async_sessionmaker[AsyncSession], value: Any
) -> None:
    if value != value and sessions.kw["bind"].dialect.name == "postgresql":
        pytest.skip("PostgreSQL's json type refuses NaN: no such row can exist there")
    ctx = _ctx()
    forged = await _forge(sessions, details={"n": value})
    await _write(sessions, ctx, 2)
    assert await seal_pending(sessions, ctx) == 3  # the honest entries after it are sealed too
    result = await _verify(sessions, ctx)
    assert result.broken is not None and result.broken.entry_id == forged


async def test_a_checkpoint_without_its_time_is_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Moving the checkpoint forward (to hide the oldest entries) with its time cleared, so that
    its signature would not be checked: refused."""
    ctx = _ctx(key="the-key-0123456789")
    await _write(sessions, ctx, 5)
    await seal_pending(sessions, ctx)
    async with sessions.begin() as s:
        row = (await s.execute(select(AuditEntry).where(AuditEntry.seq == 2))).scalar_one()
        chain = (await s.execute(select(AuditChain))).scalar_one()
        chain.base_seq, chain.base_hash, chain.base_cut_at = 2, row.chain_hash or "", None
        await s.execute(delete(AuditEntry).where(AuditEntry.seq <= 2))
    result = await _verify(sessions, ctx)
    assert result.broken is not None and "checkpoint's signature" in result.broken.why


async def test_a_cleared_key_fingerprint_is_reported(sessions: async_sessionmaker[AsyncSession]) -> None:
    ctx = _ctx(key="the-key-0123456789")
    await _write(sessions, ctx, 2)
    await seal_pending(sessions, ctx)
    async with sessions.begin() as s:
        await s.execute(update(AuditChain).values(key_id=None))
    result = await _verify(sessions, ctx)
    assert result.broken is not None and "fingerprint" in result.broken.why
    with pytest.raises(AuditKeyMismatch):  # and no process binds its own key to the chain
        await seal_once(sessions, _ctx())


async def test_verify_is_intact_right_after_a_purge(sessions: async_sessionmaker[AsyncSession]) -> None:
    await _write(sessions, _ctx(at=NOW - timedelta(days=400)), 3)
    new = _ctx(at=NOW, audit_retention_days=365)
    await _write(sessions, new, 2, start=10)
    await purge(sessions, new)
    result = await _verify(sessions, new)  # no seal in between: purge sealed its checkpoint entry
    assert result.intact, result.broken
    assert result.unsealed == 1  # only the purge's own summary entry, written after it


async def test_verify_beside_a_running_sealer_never_reports_an_honest_log_broken(db_url: str) -> None:
    """Entries sealed while verify walks must not look like entries added outside the sealer."""
    ctx = _ctx()
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        writer, checker = (make_sessionmaker(e) for e in engines)
        done = asyncio.Event()

        async def write_and_seal() -> None:
            i = 0
            while not done.is_set():
                await _write(writer, ctx, 3, start=i)
                await seal_once(writer, ctx, batch=2)
                i += 3

        task = asyncio.create_task(write_and_seal())
        try:
            for _ in range(15):
                result = await verify(checker, hasher_for(ctx), page=2)
                assert result.intact, result.broken
        finally:
            done.set()
            await task
    finally:
        for e in engines:
            await e.dispose()
