"""The sealer: gives new audit entries their place in the one chain.

Writers only insert entries (with their content hash), so a request never waits on the chain.
A sealer locks the chain's head row for one short transaction, takes the entries not yet sealed
in id order, links each to the one before and moves the head. Several processes may each run a
sealer: the head row's lock (SELECT ... FOR UPDATE on PostgreSQL, the write lock on SQLite)
serialises them, and each finds only what the last one left. An entry whose transaction
committed late (a lower id after a higher one was sealed) simply takes the next place: the chain's
order is `seq`, the order of sealing. (Certificate Transparency logs work the same way: entries
are accepted at once and sequenced into the tree within a bounded delay.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from casewatch.audit import hasher_for
from casewatch.audit.chain import Hasher, content_hash_or_none, content_of, link_hash
from casewatch.audit.quiet import Quiet
from casewatch.bell import Bell
from casewatch.context import Context
from casewatch.store.models import AuditChain, AuditEntry

log = logging.getLogger(__name__)

CHAIN_ID = "main"
BATCH = 1000
# sealing_beside's tick (a command's sealer on PostgreSQL).
BURST_SECONDS = 0.2
# The running service's sealer (start_sealer): after a commit rang its bell, it seals once nothing
# has been in flight for QUIET_GAP_SECONDS (longer than a new alert's sends between its commit and
# the transaction that records them: ~3-10 ms here, bench/README); after DEFER_SECONDS once nothing
# is in flight; after DEFER_LIMIT_SECONDS in any case. Under steady work that is a round every
# 0.2-0.3 s, as the fixed 0.2 s wait after a bell gave before (the same batch sizes).
QUIET_GAP_SECONDS = 0.025
DEFER_SECONDS = 0.2
DEFER_LIMIT_SECONDS = 0.3


class AuditKeyMismatch(RuntimeError):
    """The configured [audit] key is not the one the chain was begun with."""


def key_problem(chain: AuditChain, hasher: Hasher) -> str | None:
    if chain.key_id is None and chain.head_seq > 0:
        return "the audit chain's key fingerprint (audit_chain.key_id) was cleared after entries were sealed"
    if chain.key_id is None or chain.key_id == hasher.key_id:
        return None
    if hasher.key_id == "none":
        return "the audit chain is keyed, but no [audit] key is configured (CASEWATCH_AUDIT__KEY)"
    if chain.key_id == "none":
        return "the audit chain was begun without a key, but an [audit] key is configured"
    return "the configured [audit] key is not the key the audit chain was begun with"


async def head(session: AsyncSession, *, lock: bool = False) -> AuditChain:
    statement = select(AuditChain).where(AuditChain.id == CHAIN_ID)
    if lock:
        statement = statement.with_for_update()
    chain = (await session.execute(statement)).scalar_one_or_none()
    if chain is None:
        raise RuntimeError("the audit chain's head row is missing: run `casewatch db upgrade`")
    return chain


_ENTRIES = AuditEntry.metadata.tables[AuditEntry.__tablename__].c
_UNSEALED = (
    select(
        _ENTRIES.id, _ENTRIES.at, _ENTRIES.actor, _ENTRIES.action, _ENTRIES.subject,
        _ENTRIES.purpose, _ENTRIES.details, _ENTRIES.nominals, _ENTRIES.content_hash,
    )
    .where(_ENTRIES.seq.is_(None))
    .order_by(_ENTRIES.id)
    .limit(bindparam("batch"))
)
# What sealing reads when no entry from before the chain is left to hash (the usual case): the
# id and content hash alone, not the content (two JSON columns to decode a row).
_UNSEALED_HASHES = (
    select(_ENTRIES.id, _ENTRIES.content_hash)
    .where(_ENTRIES.seq.is_(None))
    .order_by(_ENTRIES.id)
    .limit(bindparam("batch"))
)
_SEAL = (
    update(AuditEntry.metadata.tables[AuditEntry.__tablename__])
    .where(_ENTRIES.id == bindparam("entry_id"))
    .values(seq=bindparam("seq"), chain_hash=bindparam("chain_hash"), content_hash=bindparam("content"))
)

# PostgreSQL: the batch's seals as arrays, unnested: one execution, where an executemany of _SEAL ran
# one a row (~0.33 s of server time in the bench's first scan).
_SEAL_PG = text(
    f"UPDATE {AuditEntry.__tablename__} SET seq = v.seq, chain_hash = v.chain_hash, "  # noqa: S608
    "content_hash = v.content "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:seqs AS bigint[]), CAST(:chain_hashes AS varchar[]), "
    "CAST(:contents AS varchar[])) AS v(id, seq, chain_hash, content) "
    f"WHERE {AuditEntry.__tablename__}.id = v.id"
)


async def _write_seals(conn: AsyncConnection, sealed: list[dict[str, Any]]) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(_SEAL_PG, {
            "ids": [s["entry_id"] for s in sealed], "seqs": [s["seq"] for s in sealed],
            "chain_hashes": [s["chain_hash"] for s in sealed], "contents": [s["content"] for s in sealed],
        })
    else:
        await conn.execute(_SEAL, sealed)


async def seal_once(sessions: async_sessionmaker[AsyncSession], ctx: Context, *, batch: int = BATCH) -> int:
    """Seal up to `batch` entries in one transaction; how many were sealed."""
    hasher = hasher_for(ctx)
    async with sessions.begin() as session:
        chain = await head(session, lock=True)
        problem = key_problem(chain, hasher)
        if problem is not None:
            raise AuditKeyMismatch(problem)
        if chain.key_id is None:
            chain.key_id = hasher.key_id
        conn = await session.connection()
        legacy = chain.legacy_through_id
        rows = list(await conn.execute(_UNSEALED if legacy else _UNSEALED_HASHES, {"batch": batch}))
        if not rows:
            return 0
        seq, previous = chain.head_seq, chain.head_hash
        sealed = []
        for row in rows:
            seq += 1
            content = row.content_hash
            if not content and row.id <= legacy:
                # Written before the chain existed (migration 0009): hashed now, as it stands.
                content = content_hash_or_none(hasher, **content_of(row)) or ""
            # Anything else is sealed as it is, even a row written by hand with no hash or a wrong
            # one: its place in the chain is then fixed, and verify reports it there.
            previous = link_hash(hasher, previous, seq, row.id, content)
            sealed.append({"entry_id": row.id, "seq": seq, "chain_hash": previous, "content": content})
        await _write_seals(conn, sealed)
        chain.head_seq, chain.head_hash = seq, previous
        if chain.legacy_through_id and rows[-1].id >= chain.legacy_through_id:
            chain.legacy_through_id = 0  # every entry from before the chain is in it now
        return len(sealed)


async def seal_pending(sessions: async_sessionmaker[AsyncSession], ctx: Context) -> int:
    """Seal every entry written so far; how many. Commands call it before they exit."""
    total = 0
    while True:
        count = await seal_once(sessions, ctx)
        total += count
        if count < BATCH:
            return total


@asynccontextmanager
async def sealing_beside(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, *, every: float = BURST_SECONDS
) -> AsyncIterator[None]:
    """Seal what is committed while the body runs (a command that writes many entries: the
    chain's reads and updates overlap its work instead of following it), on PostgreSQL; on
    SQLite, whose one writer the body needs, nothing. The caller still seals what is left after
    (seal_pending). A key that is not the chain's stops it quietly, and a failed round (a lock
    timeout, a dropped connection) is logged and tried again at the next tick: sealing is a side
    task, which never fails the body's committed work; the caller's last seal reports what
    persists."""
    bind = sessions.kw.get("bind")
    if bind is None or bind.dialect.name != "postgresql":
        yield
        return
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            try:
                await seal_pending(sessions, ctx)
            except AuditKeyMismatch:
                return
            except Exception as exc:  # noqa: BLE001 (a side task: retried, the last seal reports)
                log.warning("audit: sealing beside failed (%s); will retry", type(exc).__name__)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    task = asyncio.create_task(loop(), name="audit-sealer-beside")
    try:
        yield
    except BaseException:
        task.cancel()
        with suppress(BaseException):
            await task
        raise
    stop.set()
    await task


async def check_key(sessions: async_sessionmaker[AsyncSession], ctx: Context) -> str | None:
    """Why this process cannot seal with its configured key, or None."""
    async with sessions() as session:
        return key_problem(await head(session), hasher_for(ctx))


class SealerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.sealed = Counter(
            "casewatch_audit_sealed", "Audit entries sealed into the hash chain by this process",
            registry=registry,
        )
        self.failures = Counter(
            "casewatch_audit_seal_failures",
            "Sealing rounds that failed (database unreachable, or the [audit] key is not the chain's)",
            registry=registry,
        )
        self.seconds = Histogram(
            "casewatch_audit_seal_seconds",
            "One sealing transaction: how long the chain's head row is locked",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=registry,
        )


def start_sealer(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    bell: Bell,
    registry: CollectorRegistry | None = None,
    *,
    quiet: Quiet | None = None,
) -> Callable[[], Awaitable[None]]:
    """Seal in the background: after each ring of the bell (a commit wrote audit entries), and
    every `audit.seal_interval_seconds` anyway (other processes' entries). Not at once: at the
    first quiet moment (`quiet`: nothing in flight for QUIET_GAP_SECONDS), so that a round, a
    write transaction, does not run beside an event's ingest or its alerts' sends, and a burst of
    commits is sealed in one round; after DEFER_SECONDS, at the first moment nothing is in flight;
    after DEFER_LIMIT_SECONDS (or the interval, if shorter) in any case, so steady work never
    starves it. Without `quiet`, the transactions of `sessions` alone are watched.
    Returns the stop function, which seals what is left before returning."""
    stop = asyncio.Event()
    interval = ctx.settings.audit.seal_interval_seconds
    metrics = SealerMetrics(registry)
    unwatch: Callable[[], None] | None = None
    if quiet is None:
        quiet = Quiet()
        unwatch = quiet.watch(sessions)
    settling = quiet

    async def round_() -> None:
        while True:
            started = time.perf_counter()
            count = await seal_once(sessions, ctx)
            metrics.seconds.observe(time.perf_counter() - started)
            metrics.sealed.inc(count)
            if count < BATCH:
                return

    async def loop() -> None:
        while not stop.is_set():
            rings = bell.rings
            try:
                await round_()
            except AuditKeyMismatch as exc:
                metrics.failures.inc()
                log.error("audit: cannot seal: %s", exc)
            except Exception:  # a database hiccup: the entries wait for the next round
                metrics.failures.inc()
                log.exception("audit: sealing failed; will retry")
            if bell.rings == rings:  # nothing committed since this round began: wait for a commit
                await bell.wait(interval, stop)
            if not stop.is_set():
                # Read at each round, so a tool may change them for a run (bench.e2e_trace).
                hard = min(interval, DEFER_LIMIT_SECONDS)
                await settling.settled(
                    stop, gap=QUIET_GAP_SECONDS, soft=min(hard, DEFER_SECONDS), hard=hard
                )

    task = asyncio.create_task(loop(), name="audit-sealer")

    async def stop_sealer() -> None:
        stop.set()
        await task
        if unwatch is not None:
            unwatch()
        try:
            await seal_pending(sessions, ctx)
        except Exception:
            log.exception("audit: final sealing failed; the entries wait for the next process")

    return stop_sealer
