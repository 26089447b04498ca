"""Retention: purging what the service no longer needs to keep, each by its own rule.

- Resolved alerts whose resolution is older than `schedules.alert_retention_days`, with everything
  recorded about them: deliveries, delivery attempts, message threads and acknowledgements.
  Open and acknowledged alerts are never purged, however old.
- Messages not about one alert (digests) that are sent or dead, older than
  `schedules.message_retention_days`, with their attempts.
- Audit entries older than `schedules.audit_retention_days` (default 7 years). The audit log is
  the record of what was shared with whom; it outlives the alerts it names, so it has its own,
  longer period (0: keep it for ever). The log is hash-chained, so only a prefix of the chain
  goes, and the purge first leaves a signed checkpoint (the link at the cut) in the chain's head
  and an `audit.checkpoint` entry in the log: what remains still verifies.
- Job run records older than `schedules.job_run_retention_days`.
- Items a feed kept (`casewatch inbound`), `schedules.inbound_retention_days` after a person
  recorded them as dealt with; an item nobody has dealt with is never purged.

Deletes go in batches, each in its own transaction, so SQLite's single writer is never held for
long. The purge itself is audited (counts only).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import ColumnElement, Delete, and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from casewatch.audit import hasher_for, record
from casewatch.audit.chain import canonical_time, checkpoint_signature
from casewatch.audit.seal import head as audit_head
from casewatch.audit.seal import seal_pending
from casewatch.context import Context
from casewatch.store.models import (
    Acknowledgement,
    Alert,
    AlertThread,
    AuditEntry,
    Delivery,
    DeliveryAttempt,
    InboundItem,
    JobRun,
)

log = logging.getLogger(__name__)
_Id = TypeVar("_Id", int, str)

BATCH = 500


@dataclass
class PurgeSummary:
    alerts: int = 0
    deliveries: int = 0
    attempts: int = 0
    threads: int = 0
    acknowledgements: int = 0
    messages: int = 0
    audit_entries: int = 0
    job_runs: int = 0
    inbound_items: int = 0

    def line(self) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in asdict(self).items())


def _cutoff(now: datetime, days: int) -> datetime | None:
    return now - timedelta(days=days) if days > 0 else None


async def purge(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, *, batch: int = BATCH
) -> PurgeSummary:
    """Purge everything past its retention period as of the context's clock."""
    config = ctx.settings.schedules
    now = ctx.clock.now()
    summary = PurgeSummary()
    alert_cutoff = _cutoff(now, config.alert_retention_days)
    if alert_cutoff is not None:
        await _purge_alerts(sessions, alert_cutoff, summary, batch)
    message_cutoff = _cutoff(now, config.message_retention_days)
    if message_cutoff is not None:
        await _purge_messages(sessions, message_cutoff, summary, batch)
    audit_cutoff = _cutoff(now, config.audit_retention_days)
    if audit_cutoff is not None:
        summary.audit_entries = await _purge_audit(sessions, ctx, audit_cutoff, batch)
    summary.job_runs = await _purge_simple(
        sessions,
        JobRun.id,
        (JobRun.started_at < now - timedelta(days=config.job_run_retention_days))
        & (JobRun.outcome != "running"),
        batch,
    )
    inbound_cutoff = _cutoff(now, config.inbound_retention_days)
    if inbound_cutoff is not None:
        summary.inbound_items = await _purge_simple(
            sessions,
            InboundItem.id,
            (InboundItem.state == "reviewed") & (InboundItem.reviewed_at < inbound_cutoff),
            batch,
        )
    async with sessions.begin() as session:
        await record(
            session,
            ctx,
            actor="system",
            action="retention.purged",
            purpose="retention: records past their retention periods purged (counts only)",
            details=asdict(summary),
        )
    log.info("retention: purged %s", summary.line())
    async with sessions() as session:
        chain = await audit_head(session)
    # An anchor outside the database: `casewatch audit verify` prints the same head.
    log.info("audit chain head: seq %d hash %s", chain.head_seq, chain.head_hash)
    return summary


async def _purge_audit(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, cutoff: datetime, batch: int
) -> int:
    await seal_pending(sessions, ctx)
    async with sessions.begin() as session:
        chain = await audit_head(session, lock=True)
        first_kept = (
            await session.execute(
                select(func.min(AuditEntry.seq)).where(AuditEntry.seq.is_not(None), AuditEntry.at >= cutoff)
            )
        ).scalar_one()
        cut = chain.head_seq if first_kept is None else first_kept - 1
        if cut > chain.base_seq:
            cut_hash = (
                await session.execute(select(AuditEntry.chain_hash).where(AuditEntry.seq == cut))
            ).scalar_one()
            cut_at = ctx.clock.now()
            chain.base_seq, chain.base_hash, chain.base_cut_at = cut, cut_hash or "", cut_at
            chain.base_signature = checkpoint_signature(hasher_for(ctx), cut, chain.base_hash, cut_at)
            await record(
                session, ctx, actor="system", action="audit.checkpoint",
                purpose="retention: audit entries before this point purged; the chain verifies from here",
                details={"seq": cut, "chain_hash": chain.base_hash, "cut_at": canonical_time(cut_at)},
            )
        base = chain.base_seq
    # Also finishes a purge that was interrupted after its checkpoint.
    purged = await _purge_simple(sessions, AuditEntry.id, AuditEntry.seq <= base, batch)
    await seal_pending(sessions, ctx)  # the checkpoint's own entry: verify looks for it in the chain
    return purged


async def _purge_alerts(
    sessions: async_sessionmaker[AsyncSession], cutoff: datetime, summary: PurgeSummary, batch: int
) -> None:
    while True:
        async with sessions.begin() as session:
            resolved_before = and_(Alert.state == "resolved", Alert.resolved_at < cutoff)
            ids = await _next_ids(session, Alert.id, resolved_before, batch)
            if not ids:
                return
            delivery_ids = list(
                (await session.execute(select(Delivery.id).where(Delivery.alert_id.in_(ids)))).scalars()
            )
            summary.attempts += await _delete_attempts(session, delivery_ids)
            summary.deliveries += await _count(session, delete(Delivery).where(Delivery.alert_id.in_(ids)))
            summary.threads += await _count(session, delete(AlertThread).where(AlertThread.alert_id.in_(ids)))
            summary.acknowledgements += await _count(
                session, delete(Acknowledgement).where(Acknowledgement.alert_id.in_(ids))
            )
            summary.alerts += await _count(
                session, delete(Alert).where(Alert.id.in_(ids), Alert.state == "resolved")
            )


async def _purge_messages(
    sessions: async_sessionmaker[AsyncSession], cutoff: datetime, summary: PurgeSummary, batch: int
) -> None:
    while True:
        async with sessions.begin() as session:
            unlinked = and_(
                Delivery.alert_id.is_(None),
                Delivery.state.in_(("sent", "dead")),
                Delivery.created_at < cutoff,
            )
            ids = await _next_ids(session, Delivery.id, unlinked, batch)
            if not ids:
                return
            summary.attempts += await _delete_attempts(session, ids)
            summary.messages += await _count(session, delete(Delivery).where(Delivery.id.in_(ids)))


async def _purge_simple(
    sessions: async_sessionmaker[AsyncSession],
    id_column: InstrumentedAttribute[int],
    condition: ColumnElement[bool],
    batch: int,
) -> int:
    table = id_column.class_
    total = 0
    while True:
        async with sessions.begin() as session:
            ids = await _next_ids(session, id_column, condition, batch)
            if not ids:
                return total
            total += await _count(session, delete(table).where(id_column.in_(ids)))


async def _next_ids(
    session: AsyncSession, id_column: InstrumentedAttribute[_Id], condition: ColumnElement[bool], batch: int
) -> list[_Id]:
    """The first `batch` ids that match, in id order: each purge deletes in bounded transactions."""
    stmt = select(id_column).where(condition).order_by(id_column).limit(batch)
    return list((await session.execute(stmt)).scalars())


async def _delete_attempts(session: AsyncSession, delivery_ids: Sequence[int]) -> int:
    if not delivery_ids:
        return 0
    return await _count(session, delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(delivery_ids)))


async def _count(session: AsyncSession, stmt: Delete) -> int:
    result = await session.execute(stmt.execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]
