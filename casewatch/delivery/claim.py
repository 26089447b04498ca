"""Claiming outbox rows safely when several workers and processes run.

One statement: UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING the rows (and
what rendering them needs, so a message costs no read transaction of its own). On
PostgreSQL the row locks let concurrent claimers skip each other's rows; on SQLite the FOR UPDATE
is not emitted and the engine's BEGIN IMMEDIATE serialises claimers instead. A claim is a lease:
a row whose worker died mid-send becomes claimable again once `claimed_until` passes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, String, Update, and_, case, literal, literal_column, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.store.models import Delivery

LEASE_EXPIRED = "lease expired mid-send (worker stopped?); sending again"
# The start of a row's last_error when an attempt may have sent the message (Retryable.maybe_sent),
# kept by every later failed attempt until one sends it (worker.Worker._send).
MAYBE_SENT = "maybe sent: "


def was_maybe_sent(last_error: str | None) -> bool:
    """Whether an earlier attempt of the row may have sent its message."""
    return last_error == LEASE_EXPIRED or (last_error or "").startswith(MAYBE_SENT)


UNFINISHED = ("pending", "sending")  # as written in claim_rows' statement


@dataclass(frozen=True)
class ClaimedRow:
    """What sending a claimed row needs, read by the claim's own statement."""

    id: int
    channel: str
    target: str
    alert_id: str | None
    purpose: str
    payload: Any
    content_hash: str
    last_error: str | None
    claimed_until: datetime
    thread_ref: str | None
    # An earlier message of the same alert to the same destination was not finished when claimed
    # (it may be in this very batch): such a row is read again once the earlier one is recorded.
    after_earlier: bool


async def claim_rows(
    session: AsyncSession, worker_id: str, now: datetime, lease_until: datetime, limit: int,
    exclude: Collection[int] = (),
) -> list[ClaimedRow]:
    """Claim up to `limit` due rows, and in the same statement read what sending each needs: its
    message, its alert's thread at that destination and whether an earlier message there is
    unfinished. Ordered by id. Rows in `exclude` (this process's, still in flight, whose lease
    lapsed while they waited their turn or under a clock step) are left alone."""
    # Written out: SQLAlchemy renders columns in RETURNING unqualified, which would tie a
    # subquery's columns to its own table instead of the row being claimed.
    thread = literal_column(
        "(SELECT t.external_ref FROM alert_threads AS t WHERE t.alert_id = deliveries.alert_id"
        " AND t.channel = deliveries.channel AND t.target = deliveries.target)", String,
    )
    unfinished = literal_column(
        "EXISTS (SELECT 1 FROM deliveries AS e WHERE e.alert_id = deliveries.alert_id"
        " AND e.channel = deliveries.channel AND e.target = deliveries.target AND e.id < deliveries.id"
        " AND e.state IN ('pending', 'sending'))", Boolean,
    )
    result = await session.execute(
        _claim(worker_id, now, lease_until, limit, exclude).returning(
            Delivery.id, Delivery.channel, Delivery.target, Delivery.alert_id, Delivery.purpose,
            Delivery.payload, Delivery.content_hash, Delivery.last_error, Delivery.claimed_until,
            thread, unfinished,
        )
    )
    return sorted((ClaimedRow(*row) for row in result.all()), key=lambda r: r.id)


def _claim(
    worker_id: str, now: datetime, lease_until: datetime, limit: int, exclude: Collection[int]
) -> Update:
    due = (
        select(Delivery.id)
        .where(
            or_(
                and_(Delivery.state == "pending", Delivery.next_attempt_at <= now),
                and_(Delivery.state == "sending", Delivery.claimed_until < now),
            ),
            *([Delivery.id.not_in(sorted(exclude))] if exclude else []),
        )
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (
        update(Delivery)
        .where(Delivery.id.in_(due.scalar_subquery()))
        .values(
            state="sending", claimed_by=worker_id, claimed_until=lease_until,
            # SET sees the row as it was: a row still "sending" was taken over from a dead worker.
            last_error=case((Delivery.state == "sending", literal(LEASE_EXPIRED)), else_=Delivery.last_error),
        )
        .execution_options(synchronize_session=False)
    )


def holds(worker_id: str, claimed_until: datetime) -> Any:
    """The row is still under this claim: a claim is its worker *and* its lease, since a row in
    flight may be claimed again after its lease lapsed while it waited its turn."""
    return and_(
        Delivery.state == "sending", Delivery.claimed_by == worker_id, Delivery.claimed_until == claimed_until
    )


def holds_row(d: Delivery, worker_id: str, claimed_until: datetime) -> bool:
    """`holds`, for a row already loaded."""
    return d.state == "sending" and d.claimed_by == worker_id and d.claimed_until == claimed_until


async def release(
    session: AsyncSession, delivery_id: int, worker_id: str, claimed_until: datetime, at: datetime
) -> None:
    """Give a claimed row back, to be tried at `at` (not an attempt: nothing was sent), if it is
    still under that claim."""
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, holds(worker_id, claimed_until))
        .values(state="pending", next_attempt_at=at, claimed_by=None, claimed_until=None)
        .execution_options(synchronize_session=False)
    )
