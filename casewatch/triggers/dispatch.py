"""Event-driven rules, run inside the ingest transaction for each event just applied.

Border checks, travel notifications, MAPPA level changes and recalls open their alerts here.
The time-driven rules (notifications, actions) only resolve here, when an event satisfies them
(a notification received, an action done); they open on `casewatch scan`, so a bulk import of
history never opens and resolves the same alert in one breath. Stale events are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.context import Context
from casewatch.ingest.outcome import Applied
from casewatch.triggers import load
from casewatch.triggers.reconcile import Tally, apply
from casewatch.triggers.rules import (
    actions,
    border_travel,
    mappa_level,
    notifications,
    recall,
    travel_notice,
)
from casewatch.triggers.snapshot import BorderCheckFacts, LevelChangeFacts, RecallFacts, TravelFacts


async def on_applied(session: AsyncSession, applied: Sequence[Applied], ctx: Context) -> list[str]:
    """Run the event-driven rules for events just applied; return the ids of alerts opened."""
    tally = Tally()
    for item in applied:
        if not item.stale:
            await _dispatch(session, item, ctx, tally)
    return tally.opened_ids


async def _dispatch(session: AsyncSession, item: Applied, ctx: Context, tally: Tally) -> None:
    kind = item.envelope.type
    if item.level_change is not None:
        await _level_change(session, item, ctx, tally)
    if kind == "travel.border_alert":
        await _border_alert(session, item, ctx, tally)
    elif kind == "travel.notified":
        await _travel_notified(session, item, ctx, tally)
    elif kind in ("notification.received", "nominal.upsert"):
        await _notifications(session, item.envelope.visor_ref, ctx, tally)
    elif kind == "action.upsert":
        await _action(session, str(item.envelope.data["action_id"]), ctx, tally)
    elif kind == "recall.issued":
        await _recall_issued(session, item, ctx, tally)
    elif kind == "recall.returned":
        await _recall_returned(session, item, ctx, tally)


def _tz(ctx: Context) -> ZoneInfo:
    return ZoneInfo(ctx.settings.service.timezone)


def _aware(value: Any, fallback: datetime) -> datetime:
    return value if isinstance(value, datetime) and value.tzinfo is not None else fallback


async def _border_alert(session: AsyncSession, item: Applied, ctx: Context, tally: Tally) -> None:
    env = item.envelope
    check = BorderCheckFacts(
        event_id=env.id, visor_ref=env.visor_ref, port=str(env.data.get("port", "")),
        direction=str(env.data.get("direction", "inbound")),
        checked_at=_aware(env.data.get("checked_at"), env.occurred_at),
    )
    await _evaluate_check(session, check, ctx, tally, event_id=env.id)


async def _evaluate_check(
    session: AsyncSession, check: BorderCheckFacts, ctx: Context, tally: Tally, *, event_id: str
) -> None:
    nominal = await load.nominal(session, check.visor_ref)
    travels = await load.travels(session, check.visor_ref) if nominal is not None else []
    live = await load.live_alerts(
        session, border_travel.KINDS, visor_ref=check.visor_ref, subject=check.event_id
    )
    result = border_travel.evaluate(check, nominal, travels, live, ctx.settings.triggers, _tz(ctx))
    await apply(session, result, ctx, event_id=event_id, live=live, tally=tally)


async def _travel_notified(session: AsyncSession, item: Applied, ctx: Context, tally: Tally) -> None:
    env = item.envelope
    travel = await load.travel(session, env.id) or TravelFacts(
        event_id=env.id, visor_ref=env.visor_ref, departure_on=env.data["departure_on"],
        return_on=env.data.get("return_on"), destination=str(env.data.get("destination", "")),
        notified_at=env.occurred_at,
    )
    nominal = await load.nominal(session, env.visor_ref)
    result = travel_notice.evaluate(travel, nominal, ctx.settings.triggers, _tz(ctx))
    await apply(session, result, ctx, event_id=env.id, tally=tally)
    # A notification heard of after a border check it covers (events out of order).
    unnotified = await load.live_alerts(
        session, (border_travel.UNNOTIFIED,), visor_ref=env.visor_ref
    )
    for check in await load.border_checks(session, sorted({a.subject for a in unnotified})):
        await _evaluate_check(session, check, ctx, tally, event_id=env.id)


async def _notifications(session: AsyncSession, visor_ref: str, ctx: Context, tally: Tally) -> None:
    live = await load.live_alerts(session, notifications.KINDS, visor_ref=visor_ref)
    if not live:
        return
    result = notifications.evaluate(
        await load.nominal(session, visor_ref), await load.history(session, visor_ref), live,
        ctx.clock.now(), ctx.settings.triggers, _tz(ctx),
    )
    await apply(session, result, ctx, open_new=False, tally=tally)


async def _action(session: AsyncSession, action_id: str, ctx: Context, tally: Tally) -> None:
    live = await load.live_alerts(session, actions.KINDS, subject=action_id)
    if not live:
        return
    action = (await load.actions(session, [action_id])).get(action_id)
    result = actions.evaluate(action, live, ctx.clock.now(), ctx.settings.triggers, _tz(ctx))
    await apply(session, result, ctx, open_new=False, tally=tally)


async def _level_change(session: AsyncSession, item: Applied, ctx: Context, tally: Tally) -> None:
    row = item.level_change
    assert row is not None
    change = LevelChangeFacts(
        event_id=row.event_id, visor_ref=row.visor_ref, from_level=row.from_level,
        to_level=row.to_level, rationale=row.rationale or "", changed_at=row.changed_at,
        recorded_by=row.recorded_by or "",
    )
    nominal = await load.nominal(session, row.visor_ref)
    result = mappa_level.evaluate(change, nominal, ctx.settings.triggers, _tz(ctx))
    await apply(session, result, ctx, event_id=item.envelope.id, tally=tally)


async def _recall_issued(session: AsyncSession, item: Applied, ctx: Context, tally: Tally) -> None:
    env = item.envelope
    stored = (await load.recalls_by_event(session, [env.id])).get(env.id)
    recall_type = str(env.data.get("recall_type", stored.recall_type if stored else "standard"))
    issued_at = _aware(env.data.get("issued_at"), env.occurred_at)
    facts = RecallFacts(
        event_id=env.id, visor_ref=env.visor_ref, recall_type=recall_type, issued_at=issued_at,
        # The ingest pairs a return heard of before its recall with it (ingest.apply).
        returned_at=stored.returned_at if stored is not None else None,
        emergency=recall_type == "emergency" or env.data.get("emergency") is True,
    )
    nominal = await load.nominal(session, env.visor_ref)
    result = recall.on_issued(facts, nominal, ctx.settings.triggers)
    await apply(session, result, ctx, event_id=env.id, tally=tally)


async def _recall_returned(session: AsyncSession, item: Applied, ctx: Context, tally: Tally) -> None:
    env = item.envelope
    live = await load.live_alerts(session, recall.KINDS, visor_ref=env.visor_ref)
    if not live:
        return
    issued = await load.recalls_by_event(session, [a.subject for a in live])
    result = recall.on_returned(
        _aware(env.data.get("returned_at"), env.occurred_at),
        {event_id: r.issued_at for event_id, r in issued.items()},
        live,
    )
    await apply(session, result, ctx, tally=tally)
