"""Loading the rules' snapshots from the case store: the only trigger code that reads tables."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Date,
    bindparam,
    case,
    exists,
    false,
    func,
    literal,
    null,
    select,
    union,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from casewatch.model.alerts import LIVE_STATES
from casewatch.model.clocks import local_date
from casewatch.model.facts import (
    FULL_NOTIFICATION_KINDS,
    ActionFacts,
    BorderCheckFacts,
    ChangeDetected,
    ChangeNotified,
    DetentionFacts,
    MeetingFacts,
    NominalFacts,
    NotificationHistory,
    OrderFacts,
    RecallFacts,
    RiskChangeFacts,
    TravelFacts,
)
from casewatch.model.results import LiveAlert
from casewatch.store.direct_read import fetch_in_transaction
from casewatch.store.lists import chunked, one_of
from casewatch.store.models import (
    Action,
    Alert,
    BorderCheck,
    ChangeDetection,
    Detention,
    Meeting,
    Nominal,
    NotificationReceived,
    Officer,
    Order,
    Recall,
    RiskChange,
    RmpReview,
    TravelCancellation,
    TravelNotification,
    Visit,
)

# Keys a scan handles in one transaction (reads use store.lists for their own statements).
CHUNK = 1000


_Item = TypeVar("_Item")


def chunks(items: Sequence[_Item], size: int = CHUNK) -> Iterable[Sequence[_Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


NOMINAL_COLUMNS = (
    Nominal.visor_ref, Nominal.team, Nominal.offender_manager, Nominal.registered,
    Nominal.no_fixed_abode, Nominal.release_date, Nominal.last_notification_on,
    Nominal.mappa_level, Nominal.area, Nominal.relevant_date, Nominal.notification_ends_on,
    Nominal.risk_level, Nominal.category, Nominal.visit_every_days,
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


@dataclass
class _Gathered:
    """One nominal's history as its rows come in, table by table."""

    last_full_on: date | None = None
    detentions: list[DetentionFacts] = field(default_factory=list)
    detected: list[ChangeDetected] = field(default_factory=list)
    changes: list[ChangeNotified] = field(default_factory=list)
    returns_notified: list[date] = field(default_factory=list)
    travels: list[TravelFacts] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)
    border_checks: list[BorderCheckFacts] = field(default_factory=list)
    at_liberty: list[date] = field(default_factory=list)

    def history(self) -> NotificationHistory:
        # Sorted, so that a history compares equal however its rows came back.
        travels = [
            replace(t, cancelled=True) if t.trip_id is not None and t.trip_id in self.cancelled else t
            for t in self.travels
        ]
        return NotificationHistory(
            last_full_on=self.last_full_on,
            # A return that closed two recalls is one custody start.
            detentions=tuple(sorted(dict.fromkeys(self.detentions), key=lambda d: (d.on, d.event_id))),
            detected=tuple(sorted(self.detected, key=lambda d: (d.changed_on, d.event_id))),
            changes=tuple(sorted(self.changes, key=lambda c: (c.notified_on, c.event_id))),
            returns_notified=tuple(sorted(self.returns_notified)),
            travels=tuple(sorted(travels, key=lambda t: (t.notified_at, t.event_id))),
            border_checks=tuple(sorted(self.border_checks, key=lambda c: (c.checked_at, c.event_id))),
            at_liberty=tuple(sorted(set(self.at_liberty))),
        )


Gathered = dict[str, _Gathered]
_FULL = "~full"  # the row of the union below that carries the newest full notification


async def _load_notifications(conn: AsyncConnection, where: ColumnElement[bool], found: Gathered) -> None:
    """Each nominal's newest full notification (FULL_NOTIFICATION_KINDS) and its change and return
    notifications, in one statement: the rows of the latter, then one aggregate row each."""
    n = NotificationReceived
    # The rows first: a compound select takes its result types from its first select.
    rows = select(n.visor_ref, n.kind, n.notified_on, n.what, n.changed_on, n.event_id).where(
        where, n.kind.in_(("change", "return"))
    )
    newest = (
        select(n.visor_ref, literal(_FULL), func.max(n.notified_on), null(), null(), null())
        .where(where, n.kind.in_(FULL_NOTIFICATION_KINDS))
        .group_by(n.visor_ref)
    )
    ref: str
    kind: str
    notified_on: date
    what: str | None
    changed_on: date | None
    event_id: str
    for ref, kind, notified_on, what, changed_on, event_id in await conn.execute(union_all(rows, newest)):
        mine = found.setdefault(ref, _Gathered())
        if kind == _FULL:
            mine.last_full_on = notified_on
        elif kind == "change":
            mine.changes.append(ChangeNotified(notified_on, what, changed_on, event_id))
        else:
            mine.returns_notified.append(notified_on)


async def _load_custody_and_travel(
    session: AsyncSession, conn: AsyncConnection, refs: Sequence[str], found: Gathered, tz: ZoneInfo
) -> None:
    """The rest of the history of `refs` (one chunk): one statement per table."""
    d, r, c = Detention, Recall, ChangeDetection
    detentions = select(d.visor_ref, d.started, d.kind, d.on_date, d.event_id)
    for ref, started, kind, on, event_id in await conn.execute(
        detentions.where(one_of(session, d.visor_ref, refs))
    ):
        held = DetentionFacts(on, started, kind or "", event_id)
        found.setdefault(ref, _Gathered()).detentions.append(held)
    # A recall return is custody serving a sentence (SOA 2003 s.85(4)(b)), from its local date;
    # a recall issued says the nominal was at liberty that day (rules.custody).
    for ref, issued_at, returned_at, return_event_id, event_id in await conn.execute(
        select(r.visor_ref, r.issued_at, r.returned_at, r.return_event_id, r.event_id).where(
            one_of(session, r.visor_ref, refs)
        )
    ):
        gathered = found.setdefault(ref, _Gathered())
        gathered.at_liberty.append(local_date(issued_at, tz))
        if returned_at is not None:
            gathered.detentions.append(
                DetentionFacts(local_date(returned_at, tz), True, "recall", return_event_id or event_id)
            )
    detections = select(c.visor_ref, c.what, c.changed_on, c.source, c.event_id)
    for ref, what, changed_on, source, event_id in await conn.execute(
        detections.where(one_of(session, c.visor_ref, refs))
    ):
        found.setdefault(ref, _Gathered()).detected.append(ChangeDetected(what, changed_on, event_id, source))
    await _load_travel(session, conn, refs, found)


async def _load_travel(
    session: AsyncSession, conn: AsyncConnection, refs: Sequence[str], found: Gathered
) -> None:
    t, b, x = TravelNotification, BorderCheck, TravelCancellation
    travel_columns = (
        t.event_id, t.visor_ref, t.departure_on, t.return_on, t.destination, t.notified_at,
        t.departure_at, t.trip_id,
    )
    for trip in await conn.execute(select(*travel_columns).where(one_of(session, t.visor_ref, refs))):
        found.setdefault(trip.visor_ref, _Gathered()).travels.append(TravelFacts(*trip))
    for ref, trip_id in await conn.execute(
        select(x.visor_ref, x.trip_id).where(one_of(session, x.visor_ref, refs))
    ):
        found.setdefault(ref, _Gathered()).cancelled.add(trip_id)
    check_columns = (b.event_id, b.visor_ref, b.port, b.direction, b.checked_at)
    for check in await conn.execute(select(*check_columns).where(one_of(session, b.visor_ref, refs))):
        found.setdefault(check.visor_ref, _Gathered()).border_checks.append(BorderCheckFacts(*check))


async def histories(
    session: AsyncSession, visor_refs: Sequence[str], tz: ZoneInfo
) -> dict[str, NotificationHistory]:
    """Each nominal's NotificationHistory (those with no history at all are left out), one
    statement per table per chunk. `tz`: the service's, for the local date of a recall return."""
    found: Gathered = {}
    conn = await session.connection()
    for part in chunked(session, visor_refs):
        await _load_notifications(conn, one_of(session, NotificationReceived.visor_ref, part), found)
        await _load_custody_and_travel(session, conn, part, found, tz)
    return {ref: gathered.history() for ref, gathered in found.items()}


def notification_clocks(quiet_after: date) -> list[ColumnElement[bool]]:
    """The conditions under which a registered nominal may owe a notification now or soon
    (rules.notifications), one a clock (the nominal's own columns in the first); any of them
    holding makes a candidate. A superset: the rule decides; this only leaves out nominals it
    would find nothing for. The clocks:
    - no fixed abode: the weekly clock (s.85(5)(a), SI 2012/1876);
    - a release or relevant date: the initial clock (SOA 2003 s.83(1), (6): a caution or
      community sentence has a relevant date and no release);
    - no full notification after `quiet_after` (rules.notifications.quiet_after): the periodic
      clock (s.85(1)). Custody and absence abroad only ever move its due date later
      (s.85(3)-(4)), so they add no one here;
    - a detention ended: a release owes a notification within 3 days (s.84(1)(d));
    - a change detected from another source: it owes a change notification (s.84(1));
    - an inbound border check and a travel notification: a return from a notified trip may owe
      a return notification (s.86, SI 2004/1220 as amended by SI 2012/1876)."""
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
    released = (
        select(Detention.id)
        .where(Detention.visor_ref == Nominal.visor_ref, Detention.started.is_(False))
        .exists()
    )
    detected = select(ChangeDetection.id).where(ChangeDetection.visor_ref == Nominal.visor_ref).exists()
    came_back = (
        select(BorderCheck.id)
        .where(BorderCheck.visor_ref == Nominal.visor_ref, BorderCheck.direction == "inbound")
        .exists()
    )
    travelled = (
        select(TravelNotification.id).where(TravelNotification.visor_ref == Nominal.visor_ref).exists()
    )
    return [
        Nominal.no_fixed_abode.is_(True)
        | Nominal.release_date.is_not(None)
        | Nominal.relevant_date.is_not(None),
        ~recent_on_visor & ~newer_full,
        released,
        detected,
        came_back & travelled,
    ]


async def notification_candidates(session: AsyncSession, quiet_after: date) -> list[str]:
    """The references of the registered nominals who may owe a notification (any of
    notification_clocks), in reference order. One statement, a UNION of one select a clock: each
    is then a join the planner can do in one pass (PostgreSQL: an anti-join of nominals and
    notifications for the periodic clock), where the OR of them was a filter evaluated row by
    row, its NOT EXISTS a hash of every notification built again for each page (~100 ms a page
    of 2,000 on the bench set, its 100k nominals; the union: ~150 ms in all)."""
    selects = [
        select(Nominal.visor_ref).where(Nominal.registered.is_(True), clock)
        for clock in notification_clocks(quiet_after)
    ]
    rows = await session.execute(union(*selects).order_by("visor_ref"))
    return list(rows.scalars())


async def history(session: AsyncSession, visor_ref: str, tz: ZoneInfo) -> NotificationHistory:
    return (await histories(session, [visor_ref], tz)).get(visor_ref, NotificationHistory())


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


_TRAVELS = TravelNotification.metadata.tables[TravelNotification.__tablename__]
_CANCELLATIONS = TravelCancellation.metadata.tables[TravelCancellation.__tablename__]
_TRAVELS_OF = select(
    _TRAVELS.c.event_id, _TRAVELS.c.visor_ref, _TRAVELS.c.departure_on, _TRAVELS.c.return_on,
    _TRAVELS.c.destination, _TRAVELS.c.notified_at, _TRAVELS.c.departure_at, _TRAVELS.c.trip_id,
    exists().where(
        _CANCELLATIONS.c.visor_ref == _TRAVELS.c.visor_ref, _CANCELLATIONS.c.trip_id == _TRAVELS.c.trip_id
    ).label("cancelled"),
).where(_TRAVELS.c.visor_ref == bindparam("ref"))


async def travels(session: AsyncSession, visor_ref: str) -> list[TravelFacts]:
    """The nominal's travel notifications, each marked cancelled if a travel.cancelled of the
    nominal names its trip (rules.border_travel and rules.travel_notice make trips of them), in
    one statement."""
    return [
        TravelFacts(
            event_id=r.event_id, visor_ref=r.visor_ref, departure_on=r.departure_on, return_on=r.return_on,
            destination=r.destination, notified_at=r.notified_at, departure_at=r.departure_at,
            trip_id=r.trip_id, cancelled=r.trip_id is not None and bool(r.cancelled),
        )
        for r in await fetch_in_transaction(session, _TRAVELS_OF, {"ref": visor_ref})
    ]


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


# --- supervision: risk changes, MAPP meetings, RMP reviews, visits, court orders (issue 15) ---------


def risk_change_facts(row: RiskChange) -> RiskChangeFacts:
    """The facts of a RiskChange row (Applied.risk_change, for the risk rule)."""
    return RiskChangeFacts(
        event_id=row.event_id, visor_ref=row.visor_ref, from_risk=row.from_risk, to_risk=row.to_risk,
        from_category=row.from_category, to_category=row.to_category, from_area=row.from_area,
        to_area=row.to_area, changed_at=row.changed_at,
    )


_MEETING_COLUMNS = (
    Meeting.meeting_id, Meeting.visor_ref, Meeting.held_on, Meeting.level, Meeting.minutes_on_visor_on,
)


async def _meetings_where(session: AsyncSession, where: ColumnElement[bool]) -> list[MeetingFacts]:
    rows = await session.execute(select(*_MEETING_COLUMNS).where(where))
    return [MeetingFacts(*row) for row in rows]


def _by_ref_meetings(found: Iterable[MeetingFacts]) -> dict[str, list[MeetingFacts]]:
    by_ref: dict[str, list[MeetingFacts]] = {}
    for meeting in sorted(found, key=lambda m: (m.visor_ref, m.held_on, m.meeting_id)):
        by_ref.setdefault(meeting.visor_ref, []).append(meeting)
    return by_ref


async def meetings(session: AsyncSession, visor_refs: Sequence[str]) -> dict[str, list[MeetingFacts]]:
    """Each nominal's MAPP meetings (meeting.held, as last updated), oldest first; nominals with
    none are left out. One query per chunk."""
    found: list[MeetingFacts] = []
    for part in chunked(session, visor_refs):
        found.extend(await _meetings_where(session, one_of(session, Meeting.visor_ref, part)))
    return _by_ref_meetings(found)


async def meetings_between(session: AsyncSession, after: str, last: str) -> dict[str, list[MeetingFacts]]:
    """meetings() for a scan reading nominals in pages by reference: the meetings of every
    nominal with `after` < visor_ref <= `last`, in one query."""
    where = (Meeting.visor_ref > after) & (Meeting.visor_ref <= last)
    return _by_ref_meetings(await _meetings_where(session, where))


async def _newest(
    session: AsyncSession,
    ref: InstrumentedAttribute[str],
    day: InstrumentedAttribute[date],
    refs: Sequence[str],
) -> dict[str, date]:
    """The newest `day` of each reference in `refs` that has one."""
    found: dict[str, date] = {}
    for part in chunked(session, refs):
        stmt = select(ref, func.max(day)).where(one_of(session, ref, part)).group_by(ref)
        for visor_ref, newest in await session.execute(stmt):
            found[visor_ref] = newest
    return found


async def last_rmp_reviews(session: AsyncSession, visor_refs: Sequence[str]) -> dict[str, date]:
    """Each nominal's newest rmp.reviewed `reviewed_on`; nominals never reviewed are left out."""
    return await _newest(session, RmpReview.visor_ref, RmpReview.reviewed_on, visor_refs)


async def last_visits(session: AsyncSession, visor_refs: Sequence[str]) -> dict[str, date]:
    """Each nominal's newest visit.recorded `visited_on`; nominals never visited are left out."""
    return await _newest(session, Visit.visor_ref, Visit.visited_on, visor_refs)


# The frequencies (days) may_owe_visit steps through for an RMP's visit_every_days (1-730).
_VISIT_STEPS = (1, 7, 14, 28, 30, 42, 56, 60, 84, 90, 120, 180, 270, 365, 548, 730)


def may_owe_visit(
    horizon: date, every_by_risk: Mapping[str, int], recorded_from: date | None
) -> ColumnElement[bool]:
    """A nominal who may owe a home visit by `horizon` (today + visit_reminder_days; rules.visits).
    A superset: the rule decides (custody, the notification period). A nominal with a frequency
    `every` owes one by the horizon when last visit + every <= horizon, so when last visit <=
    horizon - every. For a risk band, `every` is that band's, exactly; for an RMP's own
    visit_every_days the test uses the largest step s <= every (_VISIT_STEPS starts at the
    event's minimum, 1), and horizon - every <= horizon - s: never too few. A nominal never
    visited counts from the latest of its relevant and release dates and `recorded_from`
    (visits_recorded_from), the same way; with `recorded_from` None it owes none."""
    last = select(func.max(Visit.visited_on)).where(Visit.visor_ref == Nominal.visor_ref).scalar_subquery()
    every = Nominal.visit_every_days
    whens: list[tuple[ColumnElement[bool], ColumnElement[date]]] = [
        (every.is_(None) & (Nominal.risk_level == level), literal(horizon - timedelta(days=days), Date))
        for level, days in sorted(every_by_risk.items())
    ]
    whens.extend(
        (every >= step, literal(horizon - timedelta(days=step), Date)) for step in reversed(_VISIT_STEPS)
    )
    has_frequency = every.is_not(None) | Nominal.risk_level.in_(sorted(every_by_risk))
    latest = case(*whens, else_=null())
    relevant, release = Nominal.relevant_date, Nominal.release_date
    never: ColumnElement[bool] = false()
    if recorded_from is not None:
        never = (
            last.is_(None)
            & (literal(recorded_from, Date) <= latest)
            & (relevant.is_(None) | (relevant <= latest))
            & (release.is_(None) | (release <= latest))
        )
    return (Nominal.registered.is_(True) | every.is_not(None)) & has_frequency & (never | (last <= latest))


_ORDER_COLUMNS = (
    Order.order_id, Order.visor_ref, Order.kind, Order.made_on, Order.expires_on, Order.status,
    Order.prohibitions,
)


async def orders(session: AsyncSession, visor_refs: Sequence[str]) -> dict[str, list[OrderFacts]]:
    """Each nominal's court orders (order.upsert, as last updated, any status), by made_on then
    order id; nominals with none are left out. One query per chunk."""
    found: list[OrderFacts] = []
    for part in chunked(session, visor_refs):
        rows = await session.execute(select(*_ORDER_COLUMNS).where(one_of(session, Order.visor_ref, part)))
        for order_id, visor_ref, kind, made_on, expires_on, status, prohibitions in rows:
            found.append(
                OrderFacts(order_id, visor_ref, kind, made_on, expires_on, status, tuple(prohibitions or ()))
            )
    by_ref: dict[str, list[OrderFacts]] = {}
    for order in sorted(found, key=lambda o: (o.visor_ref, o.made_on, o.order_id)):
        by_ref.setdefault(order.visor_ref, []).append(order)
    return by_ref
