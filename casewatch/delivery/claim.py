"""Claiming outbox rows safely when several workers and processes run.

One statement: UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING id. On
PostgreSQL the row locks let concurrent claimers skip each other's rows; on SQLite the FOR UPDATE
is not emitted and the engine's BEGIN IMMEDIATE serialises claimers instead. A claim is a lease:
a row whose worker died mid-send becomes claimable again once `claimed_until` passes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.store.models import Delivery

LEASE_EXPIRED = "lease expired mid-send (worker stopped?); sending again"


async def claim(
    session: AsyncSession, worker_id: str, now: datetime, lease_until: datetime, limit: int
) -> list[int]:
    due = (
        select(Delivery.id)
        .where(
            or_(
                and_(Delivery.state == "pending", Delivery.next_attempt_at <= now),
                and_(Delivery.state == "sending", Delivery.claimed_until < now),
            )
        )
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        update(Delivery)
        .where(Delivery.id.in_(due.scalar_subquery()))
        .values(
            state="sending", claimed_by=worker_id, claimed_until=lease_until,
            # SET sees the row as it was: a row still "sending" was taken over from a dead worker.
            last_error=case((Delivery.state == "sending", literal(LEASE_EXPIRED)), else_=Delivery.last_error),
        )
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(result.scalars().all())


async def release(session: AsyncSession, delivery_id: int, worker_id: str, at: datetime) -> None:
    """Give a claimed row back, to be tried at `at` (not an attempt: nothing was sent)."""
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state == "sending", Delivery.claimed_by == worker_id)
        .values(state="pending", next_attempt_at=at, claimed_by=None, claimed_until=None)
        .execution_options(synchronize_session=False)
    )
