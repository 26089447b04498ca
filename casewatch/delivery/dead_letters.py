"""Dead letters: listing the deliveries that were given up on, and putting them back in the
outbox once an admin has fixed the cause (a corrected channel id, a mailbox that is back).

A requeued row is pending again with a fresh start (attempts 0, due now, no claim, no error, and
`created_at` now, since the worker's give-up and fallback windows count from it); its payload is
kept, so the running service's delivery workers send exactly the message that was lost. Only
addresses still in the configuration are requeued: one the admin has since replaced would just
die again, and the replacement is where the message must go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.audit import record
from casewatch.config import Settings
from casewatch.context import Context
from casewatch.routing.purposes import nominals_of, receiver_words
from casewatch.routing.routing import allowed_emails, chat_enabled, configured_slack_ids
from casewatch.store.models import Alert, Delivery, DeliveryAttempt

DEAD = "dead"
REQUEUED = "delivery.requeued"


@dataclass(frozen=True)
class DeadLetter:
    """What an admin needs to judge a dead delivery; never its payload (it may carry names)."""

    id: int
    alert_id: str | None
    purpose: str
    channel: str
    target: str
    receiver: str
    attempts: int
    died_at: datetime | None  # the last attempt
    last_error: str


@dataclass(frozen=True)
class Selector:
    """Which dead deliveries to requeue. The parts narrow together: `ids` and `target` both
    apply when both are given; `everything` alone selects every dead delivery."""

    ids: tuple[int, ...] = ()
    target: str | None = None
    everything: bool = False

    @property
    def empty(self) -> bool:
        return not (self.ids or self.target or self.everything)


@dataclass(frozen=True)
class Skipped:
    delivery_id: int
    reason: str


@dataclass
class RequeueResult:
    requeued: list[int] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


async def list_dead(session: AsyncSession) -> list[DeadLetter]:
    last_attempt = (
        select(DeliveryAttempt.delivery_id, func.max(DeliveryAttempt.attempted_at).label("at"))
        .group_by(DeliveryAttempt.delivery_id)
        .subquery()
    )
    rows = await session.execute(
        select(
            Delivery.id, Delivery.alert_id, Delivery.purpose, Delivery.channel, Delivery.target,
            Delivery.receiver, Delivery.attempts, last_attempt.c.at, Delivery.last_error,
        )
        .outerjoin(last_attempt, last_attempt.c.delivery_id == Delivery.id)
        .where(Delivery.state == DEAD)
        .order_by(Delivery.id)
    )
    return [
        DeadLetter(
            id=r.id, alert_id=r.alert_id, purpose=r.purpose, channel=r.channel, target=r.target,
            receiver=r.receiver, attempts=r.attempts, died_at=r.at, last_error=r.last_error or "",
        )
        for r in rows
    ]


def address_problem(settings: Settings, channel: str, target: str) -> str | None:
    """Why a message to this address cannot be requeued under this configuration, or None."""
    if channel == "email":
        if target.lower() in allowed_emails(settings):
            return None
        return (
            f"email address {target} is no longer in the configuration; "
            "requeueing would fail again (the message must go to the address that replaced it)"
        )
    if channel == "slack":
        if not chat_enabled(settings):
            return "Slack is off in this configuration (slack.mode), so nothing would carry the message"
        if target in configured_slack_ids(settings):
            return None
        return (
            f"Slack id {target} is no longer in the configuration; "
            "requeueing would fail again (the message must go to the channel that replaced it)"
        )
    return f"unknown channel {channel!r}"


async def requeue(session: AsyncSession, ctx: Context, selector: Selector) -> RequeueResult:
    """Put the selected dead deliveries back to pending, with one audit entry each, in the
    caller's transaction. Rows not dead, unknown ids and addresses no longer configured are
    skipped with a reason."""
    if selector.empty:
        raise ValueError("requeue needs at least one selector (ids, a target, or everything)")
    stmt = select(Delivery).order_by(Delivery.id).with_for_update()
    if selector.ids:
        stmt = stmt.where(Delivery.id.in_(selector.ids))
    if selector.target:
        stmt = stmt.where(func.lower(Delivery.target) == selector.target.lower())
    if not selector.ids:
        stmt = stmt.where(Delivery.state == DEAD)  # a target or --all: only the dead are meant
    rows = list((await session.execute(stmt)).scalars())

    result = RequeueResult()
    found = {d.id for d in rows}
    for missing in sorted(set(selector.ids) - found):
        reason = "no such delivery" if not selector.target else "no such delivery to that target"
        result.skipped.append(Skipped(missing, reason))
    now = ctx.clock.now()
    refs = await _visor_refs(session, {d.alert_id for d in rows if d.alert_id})
    for d in rows:
        if d.state != DEAD:
            result.skipped.append(Skipped(d.id, f"is {d.state}, not dead"))
            continue
        if problem := address_problem(ctx.settings, d.channel, d.target):
            result.skipped.append(Skipped(d.id, problem))
            continue
        previous_error, created_at = d.last_error or "", d.created_at
        d.state, d.attempts, d.next_attempt_at = "pending", 0, now
        d.claimed_by, d.claimed_until, d.last_error = None, None, None
        d.created_at = now
        await record(
            session, ctx, actor="cli", action=REQUEUED, subject=str(d.id),
            purpose=f"requeued by an operator so {receiver_words(d.receiver)} is told: {d.purpose}",
            nominals=nominals_of(refs.get(d.alert_id or "")),
            details={
                "delivery": d.id, "alert": d.alert_id, "channel": d.channel, "target": d.target,
                "receiver": d.receiver, "previous_error": previous_error[:500],
                "created_at": created_at.isoformat(),
            },
        )
        result.requeued.append(d.id)
    result.skipped.sort(key=lambda s: s.delivery_id)
    return result


async def _visor_refs(session: AsyncSession, alert_ids: set[str]) -> dict[str, str]:
    """The nominal each alert is about, for the requeue audit entries."""
    if not alert_ids:
        return {}
    rows = await session.execute(select(Alert.id, Alert.visor_ref).where(Alert.id.in_(sorted(alert_ids))))
    return {alert_id: ref for alert_id, ref in rows}
