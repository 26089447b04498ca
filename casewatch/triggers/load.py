"""Loading the rules' snapshots from the case store: the only trigger code that reads tables."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.model.alerts import LIVE_STATES
from casewatch.model.facts import (
    FULL_NOTIFICATION_KINDS,
    ActionFacts,
    BorderCheckFacts,
    NominalFacts,
    NotificationHistory,
    RecallFacts,
    TravelFacts,
)
from casewatch.model.results import LiveAlert
from casewatch.store.lists import chunked, one_of
from casewatch.store.models import (
    Action,
    Alert,
    BorderCheck,
    Nominal,
    NotificationReceived,
    Officer,
    Recall,
    TravelCancellation,
    TravelNotification,
)

# Keys a scan handles in one transaction (reads use store.lists for their own statements).
CHUNK = 1000


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


NOMINAL_COLUMNS = (
    Nominal.visor_ref, Nominal.team, Nominal.offender_manager, Nominal.registered,
    Nominal.no_fixed_abode, Nominal.release_date, Nominal.last_notification_on,
    Nominal.mappa_level, Nominal.area, Nominal.relevant_date, Nominal.notification_ends_on,
)


def nominal_from_columns(row: Sequence[object]) -> NominalFacts:
    return NominalFacts(*row)  # type: ignore[arg-type]


async def nominal(session: AsyncSession, visor_ref: str) -> NominalFacts | None:
    row = (await session.execute(select(*NOMINAL_COLUMNS).where(Nominal.visor_ref == visor_ref))).first()
    return nominal_from_columns(tuple(row)) if row is not None else None


async def nominals(session: AsyncSession, visor_refs: Sequence[str]) -> dict[str, NominalFacts]:
    found: dict[str, NominalFacts] = {}
    for part in chunked(session, visor_refs):
        rows = await session.execute(
            select(*NOMINAL_COLUMNS).where(one_of(session, Nominal.visor_ref, part))
        )
        for row in rows:
            facts = nominal_from_columns(tuple(row))
            found[facts.visor_ref] = facts
    return found


def _histories_by_ref(where: ColumnElement[bool]) -> Select[str, Any]:
    full = case(
        (NotificationReceived.kind.in_(FULL_NOTIFICATION_KINDS), NotificationReceived.notified_on),
        else_=None,
    )
    return (
        select(
            NotificationReceived.visor_ref,
            func.max(full).label("last_full"),
        )
        .where(where)
        .group_by(NotificationReceived.visor_ref)
    )


async def histories(session: AsyncSession, visor_refs: Sequence[str]) -> dict[str, NotificationHistory]:
    """Each nominal's newest full notification (FULL_NOTIFICATION_KINDS), one query per chunk."""
    found: dict[str, NotificationHistory] = {}
    for part in chunked(session, visor_refs):
        stmt = _histories_by_ref(one_of(session, NotificationReceived.visor_ref, part))
        for ref, last_full in await session.execute(stmt):
            found[ref] = NotificationHistory(last_full_on=last_full)
    return found


async def histories_between(session: AsyncSession, after: str, last: str) -> dict[str, NotificationHistory]:
    """histories() of every nominal with `after` < visor_ref <= `last`: for a scan reading
    nominals in pages by reference, a range over the index instead of a list of keys."""
    where = (NotificationReceived.visor_ref > after) & (NotificationReceived.visor_ref <= last)
    return {
        ref: NotificationHistory(last_full_on=last_full)
        for ref, last_full in await (await session.connection()).execute(_histories_by_ref(where))
    }


def may_owe_notification(quiet_after: date) -> ColumnElement[bool]:
    """A registered nominal who may owe a notification now or soon (rules.notifications):
    no fixed abode (the weekly clock), a release or relevant date (the initial clock, SOA 2003
    s.83(1), (6): a caution or community sentence has a relevant date and no release), or no full
    notification after `quiet_after` (rules.notifications.quiet_after: the periodic clock).
    A superset: the rule decides; this only leaves out nominals it would find nothing for."""
    newer_full = (
        select(NotificationReceived.id)
        .where(
            NotificationReceived.visor_ref == Nominal.visor_ref,
            NotificationReceived.kind.in_(FULL_NOTIFICATION_KINDS),
            NotificationReceived.notified_on > quiet_after,
        )
        .exists()
    )
    recent_on_visor = Nominal.last_notification_on.is_not(None) & (Nominal.last_notification_on > quiet_after)
    return or_(
        Nominal.no_fixed_abode.is_(True),
        Nominal.release_date.is_not(None),
        Nominal.relevant_date.is_not(None),
        ~recent_on_visor & ~newer_full,
    )


async def history(session: AsyncSession, visor_ref: str) -> NotificationHistory:
    return (await histories(session, [visor_ref])).get(visor_ref, NotificationHistory())


def travel_facts(row: TravelNotification, cancelled: Collection[str] = ()) -> TravelFacts:
    return TravelFacts(
        event_id=row.event_id, visor_ref=row.visor_ref, departure_on=row.departure_on,
        return_on=row.return_on, destination=row.destination, notified_at=row.notified_at,
        departure_at=row.departure_at, trip_id=row.trip_id,
        cancelled=row.trip_id is not None and row.trip_id in cancelled,
    )


async def cancelled_trips(session: AsyncSession, visor_ref: str) -> set[str]:
    rows = await session.execute(
        select(TravelCancellation.trip_id).where(TravelCancellation.visor_ref == visor_ref)
    )
    return set(rows.scalars())


async def travels(session: AsyncSession, visor_ref: str) -> list[TravelFacts]:
    """The nominal's travel notifications, each marked cancelled if a travel.cancelled names its
    trip (rules.border_travel and rules.travel_notice make trips of them)."""
    cancelled = await cancelled_trips(session, visor_ref)
    rows = await session.execute(
        select(TravelNotification).where(TravelNotification.visor_ref == visor_ref)
    )
    return [travel_facts(t, cancelled) for t in rows.scalars()]


async def travel(session: AsyncSession, event_id: str) -> TravelFacts | None:
    row = (
        await session.execute(select(TravelNotification).where(TravelNotification.event_id == event_id))
    ).scalar_one_or_none()
    if row is None:
        return None
    return travel_facts(row, await cancelled_trips(session, row.visor_ref))


async def checks_of(session: AsyncSession, visor_ref: str) -> list[BorderCheckFacts]:
    """The nominal's border checks (a leg one of them matches is not free for another)."""
    rows = await session.execute(select(BorderCheck).where(BorderCheck.visor_ref == visor_ref))
    return [
        BorderCheckFacts(
            event_id=r.event_id, visor_ref=r.visor_ref, port=r.port, direction=r.direction,
            checked_at=r.checked_at,
        )
        for r in rows.scalars()
    ]


async def border_checks(session: AsyncSession, event_ids: Sequence[str]) -> list[BorderCheckFacts]:
    found: list[BorderCheckFacts] = []
    for part in chunked(session, event_ids):
        rows = await session.execute(select(BorderCheck).where(one_of(session, BorderCheck.event_id, part)))
        found.extend(
            BorderCheckFacts(
                event_id=b.event_id, visor_ref=b.visor_ref, port=b.port, direction=b.direction,
                checked_at=b.checked_at,
            )
            for b in rows.scalars()
        )
    return found


ACTION_COLUMNS = (
    Action.action_id, Action.visor_ref, Action.owner, Action.due_on, Action.status,
    Nominal.team, Officer.team,
)


def action_from_columns(row: Sequence[object]) -> ActionFacts:
    return ActionFacts(*row)  # type: ignore[arg-type]


async def actions(session: AsyncSession, action_ids: Sequence[str]) -> dict[str, ActionFacts]:
    found: dict[str, ActionFacts] = {}
    for part in chunked(session, action_ids):
        stmt = (
            select(*ACTION_COLUMNS)
            .select_from(Action)
            .outerjoin(Nominal, Nominal.visor_ref == Action.visor_ref)
            .outerjoin(Officer, Officer.id == Action.owner)
            .where(one_of(session, Action.action_id, part))
        )
        for row in await session.execute(stmt):
            facts = action_from_columns(tuple(row))
            found[facts.action_id] = facts
    return found


async def recalls_by_event(session: AsyncSession, event_ids: Sequence[str]) -> dict[str, RecallFacts]:
    found: dict[str, RecallFacts] = {}
    for part in chunked(session, event_ids):
        rows = await session.execute(select(Recall).where(one_of(session, Recall.event_id, part)))
        for r in rows.scalars():
            found[r.event_id] = recall_facts(r)
    return found


def recall_facts(row: Recall) -> RecallFacts:
    return RecallFacts(
        event_id=row.event_id, visor_ref=row.visor_ref, recall_type=row.recall_type,
        issued_at=row.issued_at, returned_at=row.returned_at,
        emergency=row.recall_type == "emergency",
    )


async def live_alerts(
    session: AsyncSession,
    kinds: Collection[str],
    *,
    visor_ref: str | None = None,
    subject: str | None = None,
) -> list[LiveAlert]:
    stmt = select(Alert.kind, Alert.visor_ref, Alert.subject, Alert.severity).where(
        Alert.kind.in_(list(kinds)), Alert.state.in_(LIVE_STATES)
    )
    if visor_ref is not None:
        stmt = stmt.where(Alert.visor_ref == visor_ref)
    if subject is not None:
        stmt = stmt.where(Alert.subject == subject)
    return [LiveAlert(k, v, s, sev) for k, v, s, sev in await session.execute(stmt)]


async def live_alerts_of(
    session: AsyncSession,
    kinds: Collection[str],
    *,
    visor_refs: Sequence[str] = (),
    subjects: Sequence[str] = (),
) -> list[LiveAlert]:
    """live_alerts for many nominals (or many subjects) at once, one query per chunk."""
    column, values = (Alert.visor_ref, visor_refs) if visor_refs else (Alert.subject, subjects)
    found: list[LiveAlert] = []
    for part in chunked(session, sorted(set(values))):
        stmt = select(Alert.kind, Alert.visor_ref, Alert.subject, Alert.severity).where(
            Alert.kind.in_(list(kinds)), Alert.state.in_(LIVE_STATES), one_of(session, column, part)
        )
        found.extend(LiveAlert(k, v, s, sev) for k, v, s, sev in await session.execute(stmt))
    return found
