"""Escalation: an alert nobody acknowledges walks the chain snapshotted onto it when it opened.

Each step of `Alert.escalation_chain` is {"after_seconds": int, "receivers": [names]}: wait that
long (from the opening for step 0, from the previous step after that), then notify the receivers.
The tick advances an alert only with a conditional UPDATE on (state = "open", version), so an
acknowledgement, a resolution and two ticks racing each other leave one consistent state.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.audit import record
from casewatch.context import Context
from casewatch.routing.outbox import enqueue
from casewatch.routing.purposes import alert_purpose, nominals_of
from casewatch.store.models import Alert

log = logging.getLogger(__name__)


def chain_for(kind: str, severity: str, ctx: Context) -> list[dict[str, Any]]:
    """The escalation chain to snapshot onto a new alert of this kind and severity."""
    return [step.model_dump() for step in ctx.settings.routing.chain_for(kind, severity)]


async def escalate_due(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, *, limit: int = 200
) -> list[str]:
    """Advance every open alert whose next escalation time has passed by one step; return their
    ids. Each alert is advanced in its own transaction with its "escalated" deliveries."""
    now = ctx.clock.now()
    async with sessions() as session:
        due = (
            await session.execute(
                select(Alert.id)
                .where(Alert.state == "open", Alert.next_escalation_at <= now)
                .order_by(Alert.next_escalation_at)
                .limit(limit)
            )
        ).scalars().all()
    escalated = []
    for alert_id in due:
        # One alert that fails (a bad row, a routing error) must not hold up every alert due
        # after it: log it without data, go on, and try it again on the next tick.
        try:
            async with sessions.begin() as session:
                if await escalate_one(session, alert_id, ctx):
                    escalated.append(alert_id)
        except Exception as exc:  # noqa: BLE001
            log.error("escalation of %s failed (%s); retried next tick", alert_id, type(exc).__name__)
    return escalated


async def escalate_one(session: AsyncSession, alert_id: str, ctx: Context) -> bool:
    """Move the alert one step along its chain if it is still open and due. False if not (it was
    acknowledged, resolved or escalated by someone else meanwhile)."""
    now = ctx.clock.now()
    alert = await session.get(Alert, alert_id)
    if alert is None or alert.state != "open" or alert.next_escalation_at is None:
        return False
    if alert.next_escalation_at > now:
        return False
    chain = alert.escalation_chain or []
    step = alert.escalation_step
    reached = step + 1
    following = chain[reached]["after_seconds"] if reached < len(chain) else None
    result = await session.execute(
        update(Alert)
        .where(Alert.id == alert.id, Alert.state == "open", Alert.version == alert.version)
        .values(
            escalation_step=reached if step < len(chain) else step,
            next_escalation_at=now + timedelta(seconds=following) if following is not None else None,
            version=Alert.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await session.refresh(alert)
    if step >= len(chain):
        return False  # a chain shorter than its schedule (edited data): nothing more to do
    await enqueue(session, [alert], "escalated", ctx)
    receivers = chain[step].get("receivers", [])
    await record(
        session, ctx, actor="system", action="alert.escalated", subject=alert.id,
        purpose=alert_purpose("alert.escalated", alert.kind),
        details={"step": reached, "receivers": receivers}, nominals=nominals_of(alert.visor_ref),
    )
    log.info("alert %s (%s) escalated to step %d: %s", alert.id, alert.kind, reached, ",".join(receivers))
    return True
