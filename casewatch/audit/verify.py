"""Walking the audit chain: the first broken link, if any, and why.

Read only. Entries are read in `seq` order in pages (keyset, so a long log never sits in memory).
For each entry: its content must hash to its `content_hash` (else it was edited), its link must
follow from the previous link (else an entry was inserted, deleted or moved, or this one edited),
its place must follow the previous place (else entries are missing), and the nominal index must
agree with it. The walk begins at the retention checkpoint, whose signature is checked and which
the log itself must record (an `audit.checkpoint` entry), and must end at the head.

What it cannot see: someone who can write the database and deletes the newest entries and sets
the head back to match. Keep the head hash it prints somewhere else (it is logged at each run of
the retention job too) and compare.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.audit.chain import (
    GENESIS,
    Hasher,
    canonical_time,
    checkpoint_signature,
    content_hash_or_none,
    content_of,
    link_hash,
)
from casewatch.audit.seal import head, key_problem
from casewatch.store.models import AuditChain, AuditEntry, AuditNominal

PAGE = 5000
CHECKPOINT = "audit.checkpoint"
CLEARED_KEY_ID = "the chain's key fingerprint (audit_chain.key_id) was cleared after entries were sealed"
BAD_CHECKPOINT = "the retention checkpoint's signature does not match it"
UNRECORDED_CHECKPOINT = "the retention checkpoint is not recorded in the log (no audit.checkpoint entry)"
BAD_LINK = "its link does not follow from the entry before: an entry was inserted, moved or edited here"


@dataclass(frozen=True)
class Break:
    entry_id: int | None
    seq: int | None
    why: str

    def line(self) -> str:
        where = f"entry {self.entry_id}" if self.entry_id is not None else "the chain"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        return f"{where}: {self.why}"


@dataclass
class Verification:
    checked: int = 0
    unsealed: int = 0
    oldest_unsealed_at: datetime | None = None
    base_seq: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    broken: Break | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return self.broken is None


class KeyMismatch(Exception):
    """The configured key is not the chain's: nothing can be checked (exit 2, not 1)."""


_ENTRIES = AuditEntry.metadata.tables[AuditEntry.__tablename__].c
_INDEX = AuditNominal.metadata.tables[AuditNominal.__tablename__].c
_COLUMNS = (
    _ENTRIES.id, _ENTRIES.seq, _ENTRIES.at, _ENTRIES.actor, _ENTRIES.action, _ENTRIES.subject,
    _ENTRIES.purpose, _ENTRIES.details, _ENTRIES.nominals, _ENTRIES.content_hash, _ENTRIES.chain_hash,
)


async def _index_for(session: AsyncSession, ids: list[int]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = defaultdict(set)
    if ids:
        rows = await session.execute(
            select(_INDEX.audit_id, _INDEX.visor_ref).where(_INDEX.audit_id.in_(ids))
        )
        for audit_id, ref in rows:
            found[audit_id].add(ref)
    return found


def _entry_problem(hasher: Hasher, row: Any, index: set[str]) -> str | None:
    if content_hash_or_none(hasher, **content_of(row)) != row.content_hash:
        return "its content does not match its hash: the entry was edited"
    if set(row.nominals or []) != index:
        return "the nominal index (audit_nominals) does not match the entry: one of them was edited"
    return None


async def verify(
    sessions: async_sessionmaker[AsyncSession],
    hasher: Hasher,
    *,
    page: int = PAGE,
    progress: Callable[[int], None] | None = None,
) -> Verification:
    result = Verification()
    async with sessions() as session:
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            # One snapshot for the whole walk: entries sealed or purged meanwhile by a running
            # service are not half seen. (SQLite's read transaction is one snapshot already.)
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        chain = await head(session)
        if chain.key_id is None and chain.head_seq > 0:
            result.broken = Break(None, chain.head_seq, CLEARED_KEY_ID)
            return result
        problem = key_problem(chain, hasher)
        if problem is not None:
            raise KeyMismatch(problem)
        result.base_seq, result.head_seq, result.head_hash = chain.base_seq, chain.head_seq, chain.head_hash
        seq, previous = chain.base_seq, chain.base_hash
        if chain.base_seq and (
            chain.base_cut_at is None
            or checkpoint_signature(hasher, chain.base_seq, chain.base_hash, chain.base_cut_at)
            != chain.base_signature
        ):
            result.broken = Break(None, chain.base_seq, BAD_CHECKPOINT)
            return result
        checkpoint_recorded = chain.base_seq == 0
        while result.broken is None:
            rows = list(
                await session.execute(
                    select(*_COLUMNS).where(_ENTRIES.seq > seq).order_by(_ENTRIES.seq).limit(page)
                )
            )
            if not rows:
                break
            index = await _index_for(session, [r.id for r in rows])
            for row in rows:
                if row.seq != seq + 1:
                    missing = f"entries {seq + 1} to {row.seq - 1} are missing: deleted, or unsealed by hand"
                    result.broken = Break(row.id, row.seq, missing)
                    break
                problem = _entry_problem(hasher, row, index.get(row.id, set()))
                link = link_hash(hasher, previous, row.seq, row.id, row.content_hash)
                if problem is None and link != row.chain_hash:
                    problem = BAD_LINK
                if problem is not None:
                    result.broken = Break(row.id, row.seq, problem)
                    break
                if row.action == CHECKPOINT and _records(row.details, chain):
                    checkpoint_recorded = True
                seq, previous = row.seq, row.chain_hash
                result.checked += 1
            if progress is not None:
                progress(result.checked)
        if result.broken is not None:
            return result
        if (seq, previous) != (chain.head_seq, chain.head_hash):
            why = (
                f"the chain ends at seq {seq} but its head says {chain.head_seq}: newest entries deleted"
                if seq < chain.head_seq
                else f"entries after the head (seq {chain.head_seq}) were added outside the sealer"
                if seq > chain.head_seq
                else "the head's hash does not match the last entry's"
            )
            result.broken = Break(None, seq, why)
            return result
        await _check_unsealed(session, hasher, result, page, chain.legacy_through_id)
        if result.broken is None and not checkpoint_recorded:
            result.broken = Break(None, chain.base_seq, UNRECORDED_CHECKPOINT)
    return result


def _records(details: Any, chain: AuditChain) -> bool:
    """Whether an audit.checkpoint entry names the chain's checkpoint: place, link and time."""
    return (
        isinstance(details, dict)
        and chain.base_cut_at is not None
        and details.get("seq") == chain.base_seq
        and details.get("chain_hash") == chain.base_hash
        and details.get("cut_at") == canonical_time(chain.base_cut_at)
    )


async def _check_unsealed(
    session: AsyncSession, hasher: Hasher, result: Verification, page: int, legacy_through_id: int
) -> None:
    """Entries not yet sealed cannot break a link, but their content must still match its hash
    (with a key, nobody without it can make an edit match). Only entries from before the chain
    (up to legacy_through_id, until their first seal) may have no hash yet."""
    count, oldest = (
        await session.execute(select(func.count(), func.min(_ENTRIES.at)).where(_ENTRIES.seq.is_(None)))
    ).one()
    result.unsealed, result.oldest_unsealed_at = int(count), oldest
    last_id = 0
    while result.unsealed:
        rows = list(
            await session.execute(
                select(*_COLUMNS)
                .where(_ENTRIES.seq.is_(None), _ENTRIES.id > last_id)
                .order_by(_ENTRIES.id)
                .limit(page)
            )
        )
        if not rows:
            return
        index = await _index_for(session, [r.id for r in rows])
        for row in rows:
            legacy = not row.content_hash and row.id <= legacy_through_id
            problem = None if legacy else _entry_problem(hasher, row, index.get(row.id, set()))
            if problem is not None:
                result.broken = Break(row.id, None, f"not yet sealed, and {problem}")
                return
            last_id = row.id
