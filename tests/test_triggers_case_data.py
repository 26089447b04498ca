"""Case data for the trigger tests, written straight to the store as the ingest would.
(Helpers only: this module holds no tests.)"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.clock import FixedClock
from casewatch.config import Settings
from casewatch.context import Context
from casewatch.model.events import ENVELOPE, Envelope
from casewatch.store.models import (
    Action,
    Alert,
    BorderCheck,
    Event,
    LevelChange,
    Nominal,
    NotificationReceived,
    Recall,
    TravelNotification,
)
from casewatch.triggers.applied import Applied

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def context(at: str, **settings: Any) -> Context:
    return Context(Settings(**settings), FixedClock(utc(at)))


def nominal(ref: str, **changes: Any) -> Nominal:
    fields: dict[str, Any] = dict(
        visor_ref=ref,
        surname="Testperson",
        surname_key="testperson",
        forenames="Alex",
        date_of_birth=date(1980, 1, 1),
        pnc_id=None,
        category="1",
        mappa_level=1,
        registered=True,
        risk_level="medium",
        lead_agency="police",
        team="north",
        offender_manager="PC1234",
        area="N1",
        on_licence=False,
        no_fixed_abode=False,
        last_notification_on=None,
        release_date=None,
        licence_expiry=None,
        aliases=[],
        state_as_of=LONG_AGO,
        level_as_of=None,
        updated_at=LONG_AGO,
    )
    fields.update(changes)
    return Nominal(**fields)


def action(action_id: str, ref: str, due_on: date, status: str = "open", owner: str = "PC1234") -> Action:
    return Action(
        action_id=action_id,
        visor_ref=ref,
        summary="Fictional action",
        owner=owner,
        due_on=due_on,
        status=status,
        source="mapp_meeting",
        state_as_of=LONG_AGO,
        done_at=None,
    )


def notification(ref: str, kind: str, notified_on: date, event_id: str) -> NotificationReceived:
    return NotificationReceived(visor_ref=ref, kind=kind, notified_on=notified_on, event_id=event_id)


def envelope(event_id: str, type_: str, ref: str, occurred_at: str, data: dict[str, Any]) -> Envelope:
    raw = {
        "id": event_id,
        "type": type_,
        "occurred_at": occurred_at,
        "visor_ref": ref,
        "data": {k: v.isoformat() if isinstance(v, (date, datetime)) else v for k, v in data.items()},
    }
    return ENVELOPE.validate_python(raw)


async def event(
    session: AsyncSession,
    event_id: str,
    type_: str,
    ref: str,
    occurred_at: str,
    data: dict[str, Any],
    *,
    stale: bool = False,
    level_change: LevelChange | None = None,
) -> Applied:
    """Store the event row and the case row the ingest would write; return what it applied."""
    env = envelope(event_id, type_, ref, occurred_at, data)
    row = Event(
        id=event_id,
        type=type_,
        visor_ref=ref,
        occurred_at=env.occurred_at,
        received_at=env.occurred_at,
        source="api",
        data=env.raw,
    )
    session.add(row)
    if type_ == "travel.border_alert":
        session.add(
            BorderCheck(
                visor_ref=ref,
                port=data["port"],
                direction=data["direction"],
                checked_at=data["checked_at"],
                event_id=event_id,
            )
        )
    elif type_ == "travel.notified":
        session.add(
            TravelNotification(
                visor_ref=ref,
                departure_on=data["departure_on"],
                return_on=data.get("return_on"),
                destination=data["destination"],
                notified_at=env.occurred_at,
                event_id=event_id,
            )
        )
    elif type_ == "notification.received":
        session.add(notification(ref, data["kind"], data["notified_on"], event_id))
    elif type_ == "recall.issued":
        session.add(
            Recall(
                visor_ref=ref,
                recall_type=data["recall_type"],
                issued_at=data["issued_at"],
                returned_at=None,
                event_id=event_id,
            )
        )
    elif type_ == "recall.returned":
        for r in (
            await session.execute(select(Recall).where(Recall.visor_ref == ref, Recall.returned_at.is_(None)))
        ).scalars():
            r.returned_at = data["returned_at"]
            r.return_event_id = event_id
    elif type_ == "action.upsert":
        existing = await session.get(Action, data["action_id"])
        if existing is None:
            session.add(action(data["action_id"], ref, data["due_on"], data["status"], data["owner"]))
        else:
            existing.status, existing.due_on = data["status"], data["due_on"]
    elif type_ == "mappa.level_changed":
        level_change = LevelChange(
            visor_ref=ref,
            from_level=data["from_level"],
            to_level=data["to_level"],
            rationale=data.get("rationale", ""),
            changed_at=env.occurred_at,
            recorded_at=env.occurred_at,
            recorded_by="test",
            event_id=event_id,
        )
        session.add(level_change)
    await session.flush()
    return Applied(envelope=env, stale=stale, level_change=level_change)


async def alerts(session: AsyncSession) -> list[tuple[str, str, str, str]]:
    """(kind, visor_ref, subject, state) of every alert, sorted."""
    rows = await session.execute(select(Alert.kind, Alert.visor_ref, Alert.subject, Alert.state))
    return sorted((k, v, s, st) for k, v, s, st in rows)


async def live(session: AsyncSession) -> list[tuple[str, str, str]]:
    return [(k, v, s) for k, v, s, st in await alerts(session) if st != "resolved"]
