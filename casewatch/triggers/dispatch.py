"""Event-driven rules, run inside the ingest transaction for each event just applied.

Border checks, travel notifications, MAPPA level changes and recalls open their alerts here, and
so do late change notifications (notifications.late, on a change notification or a detected
change).
The time-driven rules (notifications, actions) only resolve here, when an event satisfies them
(a notification received, an action done); they open on `casewatch scan`, so a bulk import of
history never opens and resolves the same alert in one breath. Stale events are skipped.

Opens are deferred and made in batches (reconcile.Tally.flush): a batch of a thousand level
changes opens its alerts in a few statements. Before live alerts of some kinds are read, the
deferred opens of those kinds are flushed, so every rule sees what the events before it opened.
The nominals and the live notification, visit and action alerts the batch's events need are
read up front, one query per table rather than one per event: rules run after every event of the
batch is applied, so each nominal is read in its final state either way, and notification, visit
and action alerts only open on a scan (here they only resolve, and the cache drops what they resolve).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache, lru_cache
from typing import Any, ClassVar, assert_never
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, and_, inspect, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.context import Context
from casewatch.ingest.arrays import Insert, Update, Writes, ctes
from casewatch.model.alerts import LIVE_STATES
from casewatch.model.events import (
    ActionUpsert,
    BorderAlert,
    ChangeDetectedData,
    DetentionEnded,
    DetentionStarted,
    Envelope,
    LevelChanged,
    MeetingHeld,
    NominalUpsert,
    NotificationReceivedData,
    OrderUpsert,
    RecallIssued,
    RecallReturned,
    RmpReviewed,
    TravelCancelled,
    TravelNotified,
    VisitRecorded,
)
from casewatch.model.facts import (
    BorderCheckFacts,
    LevelChangeFacts,
    NominalFacts,
    NotificationHistory,
    RecallFacts,
    TravelFacts,
)
from casewatch.model.results import LiveAlert
from casewatch.store.direct_read import fetch_in_transaction
from casewatch.store.lists import is_postgres, one_of_param
from casewatch.store.models import Alert, LevelChange, Nominal, Recall
from casewatch.triggers import load
from casewatch.triggers.applied import Applied
from casewatch.triggers.reconcile import Tally, apply
from casewatch.triggers.rules import (
    actions,
    border_travel,
    mappa_level,
    minutes,
    notifications,
    orders,
    recall,
    risk,
    rmp_review,
    travel_notice,
    visits,
)

# Events after which the notification rule runs again for the nominal (resolve only): a
# notification or new case state, a custody change or a recall return (time held is disregarded,
# SOA 2003 s.83(6), s.85(3)-(4)), a change detected (s.84(1)), a border check (time abroad, and
# the return a return notification counts from).
_NOTIFICATION_INPUTS = (
    NotificationReceivedData, NominalUpsert, DetentionStarted, DetentionEnded, ChangeDetectedData,
    RecallReturned, BorderAlert,
)


@dataclass
class _Run(Tally):
    """The tally of one on_applied call, and what it read up front for the whole batch."""

    nominals: dict[str, NominalFacts | None] = field(default_factory=dict)
    notification_live: dict[str, list[LiveAlert]] = field(default_factory=dict)  # by visor_ref
    action_live: dict[str, list[LiveAlert]] = field(default_factory=dict)  # by action id
    visit_live: dict[str, list[LiveAlert]] = field(default_factory=dict)  # by visor_ref
    # Each nominal's history, read once: rules run after the batch's events are all applied.
    histories: dict[str, NotificationHistory] = field(default_factory=dict)
    # Border checks: the live travel alerts about each new check (by its event id), read with the
    # others in prefetch and taken once, by the check's own evaluation (fold_border_reads)...
    border_live: dict[str, list[LiveAlert]] = field(default_factory=dict)
    # ... and each reference's border checks as the ingest holds them (Batch.checks), or read.
    checks: Mapping[str, list[BorderCheckFacts]] = field(default_factory=dict)
    # Whether prefetch takes the nominals the ingest holds and reads the three kinds of live
    # alerts in one statement; off only where a test compares with the plain reads.
    reuse_reads: ClassVar[bool] = True
    # Whether a border check's reads are folded: its live travel alerts into prefetch's one
    # statement and its other checks taken from the ingest's Batch.checks; off only where a test
    # compares with the plain reads.
    fold_border_reads: ClassVar[bool] = True

    async def prefetch(
        self, session: AsyncSession, items: Sequence[Applied], held: Mapping[str, Nominal | None],
        writes: Writes | None = None,
    ) -> None:
        refs = sorted({i.envelope.visor_ref for i in items})
        self.nominals = _held_facts(held, refs) if self.reuse_reads else {}
        unread = [ref for ref in refs if ref not in self.nominals]
        notified = [
            i.envelope.visor_ref
            for i in items
            if isinstance(i.envelope.data, _NOTIFICATION_INPUTS)
        ]
        visited = [i.envelope.visor_ref for i in items if isinstance(i.envelope.data, VisitRecorded)]
        action_ids = [i.envelope.data.action_id for i in items if isinstance(i.envelope.data, ActionUpsert)]
        checked = (
            [i.envelope.id for i in items if isinstance(i.envelope.data, BorderAlert)]
            if self.fold_border_reads else []
        )
        keys = len(notified) + len(visited) + len(action_ids) + len(checked)
        if writes is not None and (unread or not (self.reuse_reads and 0 < keys <= _ONE_READ_KEYS)):
            await writes.run(session)  # the one live-alert read is not the next statement
            writes = None
        if unread:
            found = await load.nominals(session, unread)
            self.nominals.update({ref: found.get(ref) for ref in unread})
        self.notification_live = {ref: [] for ref in notified}
        self.visit_live = {ref: [] for ref in visited}
        self.action_live = {action_id: [] for action_id in action_ids}
        self.border_live = {event_id: [] for event_id in checked}
        if self.reuse_reads and keys <= _ONE_READ_KEYS:
            for a in await _live_of_three(session, notified, visited, action_ids, checked, writes):
                if a.kind in notifications.KINDS and a.visor_ref in self.notification_live:
                    self.notification_live[a.visor_ref].append(a)
                elif a.kind in visits.KINDS and a.visor_ref in self.visit_live:
                    self.visit_live[a.visor_ref].append(a)
                elif a.kind in actions.KINDS and a.subject in self.action_live:
                    self.action_live[a.subject].append(a)
                elif a.kind in border_travel.KINDS and a.subject in self.border_live:
                    self.border_live[a.subject].append(a)
            return
        self.border_live = {}
        if notified:
            for a in await load.live_alerts_of(session, notifications.KINDS, visor_refs=notified):
                self.notification_live[a.visor_ref].append(a)
        if visited:
            for a in await load.live_alerts_of(session, visits.KINDS, visor_refs=visited):
                self.visit_live[a.visor_ref].append(a)
        if action_ids:
            for a in await load.live_alerts_of(session, actions.KINDS, subjects=action_ids):
                self.action_live.setdefault(a.subject, []).append(a)

    async def nominal(self, session: AsyncSession, visor_ref: str) -> NominalFacts | None:
        if visor_ref not in self.nominals:
            self.nominals[visor_ref] = await load.nominal(session, visor_ref)
        return self.nominals[visor_ref]

    async def history(self, session: AsyncSession, visor_ref: str, tz: ZoneInfo) -> NotificationHistory:
        if visor_ref not in self.histories:
            self.histories[visor_ref] = await load.history(session, visor_ref, tz)
        return self.histories[visor_ref]


def _held_facts(held: Mapping[str, Nominal | None], refs: Sequence[str]) -> dict[str, NominalFacts | None]:
    """The rule facts of the nominals among `refs` that the caller holds with every fact column
    loaded and flushed, as load.nominals would read them. A reference held as None (no nominal
    when the batch was loaded) is read all the same: its first upsert may have been written in
    bulk since, beside the session."""
    found: dict[str, NominalFacts | None] = {}
    for ref in refs:
        nominal = held.get(ref)
        if nominal is None:
            continue
        state = inspect(nominal)
        # Every fact column in the instance's dict, and nothing changed since the flush: the dict
        # holds what a read would give (stricter than "none unloaded", and without building the
        # unloaded set or going through each attribute's descriptor).
        values = state.dict
        if not state.persistent or state.modified or not values.keys() >= _FACT_KEYS:
            continue
        found[ref] = load.nominal_from_columns(_fact_values(values))
    return found


_FACT_ORDER = tuple(column.key for column in load.NOMINAL_COLUMNS)
_fact_values = operator.itemgetter(*_FACT_ORDER)
_FACT_KEYS = frozenset(_FACT_ORDER)

# Up to this many keys, prefetch reads the live notification, visit and action alerts in one
# statement (a request's or a group commit's few events); a large batch reads them kind by kind,
# in chunks (load.live_alerts_of).
_ONE_READ_KEYS = 500
_LIVE_COLUMNS = (Alert.kind, Alert.visor_ref, Alert.subject, Alert.severity)


@cache
def _live_read(
    postgres: bool, notified: bool, visited: bool, acted: bool, checked: bool = False
) -> Select[str, str, str, str]:
    """The statement reading the live alerts of the kinds prefetch needs, built once a shape:
    (kind IN notification kinds AND visor_ref IN :notified) OR (visit kinds, :visited) OR
    (action kinds, subject IN :actions) OR (border travel kinds, subject IN :checked). Keys are
    one array parameter on PostgreSQL (store.lists.one_of_param), an expanding IN list on SQLite."""
    wanted = [
        and_(_one_of_these(Alert.kind, kinds), one_of_param(postgres, column, name))
        for kinds, column, name, asked in (
            (notifications.KINDS, Alert.visor_ref, "notified", notified),
            (visits.KINDS, Alert.visor_ref, "visited", visited),
            (actions.KINDS, Alert.subject, "actions", acted),
            (border_travel.KINDS, Alert.subject, "checked", checked),
        )
        if asked
    ]
    return select(*_LIVE_COLUMNS).where(_one_of_these(Alert.state, LIVE_STATES), or_(*wanted))


def _one_of_these(column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """`column IN (fixed values)` as one plain parameter a value: `in_(values)` makes them one
    expanding parameter, which renders the whole statement again at each execution (on PostgreSQL
    the statement's only one, its keys being arrays)."""
    return column.in_([literal(value, column.type) for value in sorted(values)])  # type: ignore[no-any-return]


async def _live_of_three(
    session: AsyncSession, notified: Sequence[str], visited: Sequence[str], action_ids: Sequence[str],
    checked: Sequence[str] = (),
    writes: Writes | None = None,
) -> list[LiveAlert]:
    """What load.live_alerts_of gives for notification kinds by `notified`, visit kinds by
    `visited`, action kinds by `action_ids` (subjects) and border travel kinds by `checked`
    (subjects: border check event ids), in one statement; with `writes` as its parts (they write
    no alert, so what it reads is the same)."""
    if not (notified or visited or action_ids or checked):
        if writes is not None:
            await writes.run(session)
        return []
    shape = (is_postgres(session), bool(notified), bool(visited), bool(action_ids), bool(checked))
    params = {
        name: sorted(set(values))
        for name, values in (
            ("notified", notified), ("visited", visited), ("actions", action_ids), ("checked", checked)
        )
        if values
    }
    if writes is None:
        stmt = _live_read(*shape)
    else:
        stmt = _live_read_with(shape, writes.inserts, writes.update)
        params.update(writes.params())
    return [LiveAlert(k, v, s, sev) for k, v, s, sev in await fetch_in_transaction(session, stmt, params)]


@lru_cache(maxsize=256)
def _live_read_with(
    shape: tuple[bool, bool, bool, bool, bool], inserts: tuple[Insert, ...], update: Update | None
) -> Select[str, str, str, str]:
    """_live_read with the writes' parts (arrays.ctes) in its WITH, built once a shape."""
    return _live_read(*shape).add_cte(*ctes(inserts, update))


def _still_live(live: list[LiveAlert], resolved: Sequence[LiveAlert]) -> list[LiveAlert]:
    return [a for a in live if a not in resolved]


async def on_applied(
    session: AsyncSession,
    applied: Sequence[Applied],
    ctx: Context,
    held: Mapping[str, Nominal | None] | None = None,
    checks: Mapping[str, list[BorderCheckFacts]] | None = None,
    *,
    writes: Writes | None = None,
) -> list[str]:
    """Run the event-driven rules for events just applied; return the ids of alerts opened.
    `held`: nominals the caller holds in this session, flushed (the ingest's Batch.nominals);
    their rule facts are taken from them instead of read again. `checks`: references' border
    checks as stored now (the ingest's Batch.checks), taken instead of read again. `writes`: the
    caller's writes not sent yet (the ingest's Batch.finish, PostgreSQL), sent before anything is
    read: as parts of the first statement when that is the live-alert read, which reads none of
    their tables, else on their own first."""
    tally = _Run(checks=checks if checks is not None and _Run.fold_border_reads else {})
    fresh = [item for item in applied if not item.stale]
    await tally.prefetch(session, fresh, held or {}, writes)
    for item in fresh:
        await _dispatch(session, item, ctx, tally)
    await tally.flush(session, ctx)
    return tally.opened_ids


async def _live(
    session: AsyncSession,
    ctx: Context,
    tally: _Run,
    kinds: Sequence[str],
    *,
    visor_ref: str | None = None,
    subject: str | None = None,
) -> list[LiveAlert]:
    """load.live_alerts, after opening whatever of those kinds is still deferred."""
    await tally.flush_for(session, ctx, kinds)
    return await load.live_alerts(session, kinds, visor_ref=visor_ref, subject=subject)


async def _dispatch(session: AsyncSession, item: Applied, ctx: Context, tally: _Run) -> None:
    if item.level_change is not None:  # from a mappa.level_changed or a nominal.upsert
        await _level_change(session, item, ctx, tally)
    if item.rationale_for is not None:
        await _rationale_given(session, item.rationale_for, ctx, tally)
    if item.risk_change is not None:  # a nominal.upsert's new risk level, category or area
        await _risk_change(session, item, ctx, tally)
    env = item.envelope
    match env.data:
        case BorderAlert() as data:
            check = BorderCheckFacts(
                event_id=env.id, visor_ref=env.visor_ref, port=data.port, direction=data.direction,
                checked_at=data.checked_at,
            )
            await _evaluate_check(session, check, ctx, tally, event_id=env.id, own=True)
            await _notifications(session, env.visor_ref, ctx, tally)
        case TravelNotified() as data:
            await _travel_notified(session, env, data, ctx, tally)
        case NotificationReceivedData() as data:
            await _notifications(session, env.visor_ref, ctx, tally)
            if data.kind == "change":
                await _late(session, env, ctx, tally)
        case ChangeDetectedData():
            await _notifications(session, env.visor_ref, ctx, tally)
            await _late(session, env, ctx, tally)
        case DetentionStarted() as data:
            await _notifications(session, env.visor_ref, ctx, tally)
            await _recall_custody(session, env.visor_ref, data.started_on, ctx, tally)
        case NominalUpsert() | DetentionEnded():
            await _notifications(session, env.visor_ref, ctx, tally)
        case ActionUpsert() as data:
            await _action(session, data.action_id, ctx, tally)
        case RecallIssued() as data:
            await _recall_issued(session, env, data, ctx, tally)
        case RecallReturned() as data:
            await _recall_returned(session, env, data.returned_at, ctx, tally)
            await _notifications(session, env.visor_ref, ctx, tally)
        case VisitRecorded():
            await _visits(session, env.visor_ref, ctx, tally)
        case LevelChanged() | TravelCancelled():
            # a level change is item.level_change; a
            # cancelled trip matches no later check (rules.border_travel) and is flagged no
            # further, but what it already matched or flagged stays for a person to look at
            pass
        case OrderUpsert() as data:
            await _order(session, env.visor_ref, data.order_id, ctx, tally)
        case MeetingHeld() as data:
            await _minutes(session, env.visor_ref, data.meeting_id, ctx, tally)
        case RmpReviewed():
            await _rmp_review(session, env.visor_ref, ctx, tally)
        case _:
            assert_never(env.data)


async def _order(session: AsyncSession, visor_ref: str, order_id: str, ctx: Context, tally: _Run) -> None:
    """An order discharged, expired or renewed resolves its `order.expiring` (rules.orders);
    resolve only: the alert opens on a scan."""
    live = [
        a for a in await _live(session, ctx, tally, orders.KINDS, visor_ref=visor_ref)
        if orders.order_id_of(a.subject) == order_id
    ]
    if not live:
        return
    recorded = (await load.orders(session, [visor_ref])).get(visor_ref, [])
    order = next((o for o in recorded if o.order_id == order_id), None)
    result = orders.evaluate(
        order, await tally.nominal(session, visor_ref), live, ctx.clock.now(), ctx.settings.triggers, _tz(ctx)
    )
    await apply(session, result, ctx, open_new=False, tally=tally, defer=True)


def _tz(ctx: Context) -> ZoneInfo:
    return ZoneInfo(ctx.settings.service.timezone)


async def _evaluate_check(
    session: AsyncSession, check: BorderCheckFacts, ctx: Context, tally: _Run, *, event_id: str,
    own: bool = False,
) -> None:
    """`own`: the check's own event's evaluation, which may take the live alerts prefetch read
    for it; any other (a later travel notification's) reads them, and the prefetched ones are
    dropped: they may be out of date once the check's alerts have been evaluated."""
    prefetched = tally.border_live.pop(check.event_id, None)
    nominal = await tally.nominal(session, check.visor_ref)
    travels = others = []
    if nominal is not None:
        travels = await load.travels(session, check.visor_ref)
        carried = tally.checks.get(check.visor_ref)
        others = carried if carried is not None else await load.checks_of(session, check.visor_ref)
    if own and prefetched is not None:
        live = [a for a in prefetched if a.visor_ref == check.visor_ref]
    else:
        live = await _live(
            session, ctx, tally, border_travel.KINDS, visor_ref=check.visor_ref, subject=check.event_id
        )
    result = border_travel.evaluate(
        check, nominal, travels, live, ctx.settings.triggers, _tz(ctx), others
    )
    await apply(session, result, ctx, event_id=event_id, live=live, tally=tally, defer=True)


async def _travel_notified(
    session: AsyncSession, env: Envelope, data: TravelNotified, ctx: Context, tally: _Run
) -> None:
    travel = await load.travel(session, env.id) or TravelFacts(
        event_id=env.id, visor_ref=env.visor_ref, departure_on=data.departure_on,
        return_on=data.return_on, destination=data.destination,
        notified_at=data.notified_at or env.occurred_at, departure_at=data.departure_at,
        trip_id=data.trip_id,
    )
    nominal = await tally.nominal(session, env.visor_ref)
    trip = (
        [t for t in await load.travels(session, env.visor_ref) if t.event_id != env.id]
        if travel.trip_id is not None
        else []
    )
    result = travel_notice.evaluate(travel, nominal, ctx.settings.triggers, _tz(ctx), trip)
    await apply(session, result, ctx, event_id=env.id, tally=tally, defer=True)
    # A notification heard of after a border check it covers (events out of order).
    unnotified = await _live(
        session, ctx, tally, (border_travel.UNNOTIFIED,), visor_ref=env.visor_ref
    )
    for check in await load.border_checks(session, sorted({a.subject for a in unnotified})):
        await _evaluate_check(session, check, ctx, tally, event_id=env.id)


async def _notifications(session: AsyncSession, visor_ref: str, ctx: Context, tally: _Run) -> None:
    if visor_ref in tally.notification_live:
        live = tally.notification_live[visor_ref]
    else:
        live = await _live(session, ctx, tally, notifications.KINDS, visor_ref=visor_ref)
    if not live:
        return
    result = notifications.evaluate(
        await tally.nominal(session, visor_ref), await tally.history(session, visor_ref, _tz(ctx)), live,
        ctx.clock.now(), ctx.settings.triggers, _tz(ctx),
    )
    await apply(session, result, ctx, open_new=False, tally=tally, defer=True)
    tally.notification_live[visor_ref] = _still_live(live, [r.alert for r in result.resolves])


async def _visits(session: AsyncSession, visor_ref: str, ctx: Context, tally: _Run) -> None:
    """A visit recorded: the live visit alerts it answers resolve (rules.visits; they open on a
    scan only)."""
    if visor_ref in tally.visit_live:
        live = tally.visit_live[visor_ref]
    else:
        live = await _live(session, ctx, tally, visits.KINDS, visor_ref=visor_ref)
    if not live:
        return
    last = (await load.last_visits(session, [visor_ref])).get(visor_ref)
    result = visits.evaluate(
        await tally.nominal(session, visor_ref), last, await tally.history(session, visor_ref, _tz(ctx)),
        live, ctx.clock.now(), ctx.settings.triggers, _tz(ctx),
    )
    await apply(session, result, ctx, open_new=False, tally=tally, defer=True)
    tally.visit_live[visor_ref] = _still_live(live, [r.alert for r in result.resolves])


async def _late(session: AsyncSession, env: Envelope, ctx: Context, tally: _Run) -> None:
    """A change notification or a detected change: the event-driven rule that flags a change
    notified late, or a detected change never notified in time (s.84(1); rules.notifications)."""
    nominal = await tally.nominal(session, env.visor_ref)
    if nominal is None:  # nothing is owed by a nominal casewatch does not know (yet)
        return
    history = await tally.history(session, env.visor_ref, _tz(ctx))
    result = notifications.late(nominal, history, ctx.settings.triggers, _tz(ctx), env.id)
    await apply(session, result, ctx, event_id=env.id, open_new=True, tally=tally, defer=True)


async def _action(session: AsyncSession, action_id: str, ctx: Context, tally: _Run) -> None:
    if action_id in tally.action_live:
        live = tally.action_live[action_id]
    else:
        live = await _live(session, ctx, tally, actions.KINDS, subject=action_id)
    if not live:
        return
    action = (await load.actions(session, [action_id])).get(action_id)
    result = actions.evaluate(action, live, ctx.clock.now(), ctx.settings.triggers, _tz(ctx))
    await apply(session, result, ctx, open_new=False, tally=tally, defer=True)
    tally.action_live[action_id] = _still_live(live, [r.alert for r in result.resolves])


async def _level_change(session: AsyncSession, item: Applied, ctx: Context, tally: _Run) -> None:
    row = item.level_change
    assert row is not None
    change = LevelChangeFacts(
        event_id=row.event_id, visor_ref=row.visor_ref, from_level=row.from_level,
        to_level=row.to_level, rationale=row.rationale or "", changed_at=row.changed_at,
        recorded_by=row.recorded_by or "",
    )
    nominal = await tally.nominal(session, row.visor_ref)
    result = mappa_level.evaluate(change, nominal, ctx.settings.triggers, _tz(ctx))
    await apply(session, result, ctx, event_id=item.envelope.id, tally=tally, defer=True)


async def _risk_change(session: AsyncSession, item: Applied, ctx: Context, tally: _Run) -> None:
    row = item.risk_change
    assert row is not None
    nominal = await tally.nominal(session, row.visor_ref)
    result = risk.evaluate(load.risk_change_facts(row), nominal, ctx.settings.triggers)
    await apply(session, result, ctx, event_id=item.envelope.id, tally=tally, defer=True)


async def _rationale_given(session: AsyncSession, row: LevelChange, ctx: Context, tally: _Run) -> None:
    kinds = (mappa_level.DECREASE_WITHOUT_RATIONALE,)
    live = await _live(session, ctx, tally, kinds, visor_ref=row.visor_ref, subject=row.event_id)
    if live:
        await apply(session, mappa_level.on_rationale_given(row.event_id, live), ctx, tally=tally, defer=True)


async def _recall_issued(
    session: AsyncSession, env: Envelope, data: RecallIssued, ctx: Context, tally: _Run
) -> None:
    stored = (await load.recalls_by_event(session, [env.id])).get(env.id)
    facts = RecallFacts(
        event_id=env.id, visor_ref=env.visor_ref, recall_type=data.recall_type, issued_at=data.issued_at,
        # The ingest pairs a return heard of before its recall with it (ingest.apply).
        returned_at=stored.returned_at if stored is not None else None,
        emergency=data.recall_type == "emergency",
    )
    nominal = await tally.nominal(session, env.visor_ref)
    result = recall.on_issued(facts, nominal, ctx.settings.triggers)
    await apply(session, result, ctx, event_id=env.id, tally=tally, defer=True)
    # Returned already (the return was heard of first): the risk review is owed all the same.
    review = recall.risk_review(facts, nominal, ctx.settings.triggers)
    await apply(session, review, ctx, event_id=env.id, tally=tally, defer=True)


async def _recall_returned(
    session: AsyncSession, env: Envelope, returned_at: datetime, ctx: Context, tally: _Run
) -> None:
    visor_ref = env.visor_ref
    live = await _live(session, ctx, tally, recall.KINDS, visor_ref=visor_ref)
    if live:
        issued = await load.recalls_by_event(session, [a.subject for a in live])
        result = recall.on_returned(
            returned_at, {event_id: r.issued_at for event_id, r in issued.items()}, live
        )
        await apply(session, result, ctx, tally=tally, defer=True)
    # The recalls this return closed (ingest.apply pairs them): each owes a risk review.
    closed = await session.scalars(
        select(Recall).where(Recall.visor_ref == visor_ref, Recall.return_event_id == env.id)
    )
    nominal = await tally.nominal(session, visor_ref)
    for row in closed.all():
        review = recall.risk_review(load.recall_facts(row), nominal, ctx.settings.triggers)
        await apply(session, review, ctx, event_id=env.id, tally=tally, defer=True)


async def _recall_custody(
    session: AsyncSession, visor_ref: str, started_on: date, ctx: Context, tally: _Run
) -> None:
    """A detention started on or after a recall's local date ends the nominal's time at large on
    it (rules.recall.no_longer_at_large): its `recall.unlawfully_at_large` resolves now, not at
    the next scan. Resolve only: the scan weighs the rest of the record."""
    live = await _live(session, ctx, tally, (recall.AT_LARGE,), visor_ref=visor_ref)
    if not live:
        return
    found = await load.recalls_by_event(session, [a.subject for a in live])
    nominal = await tally.nominal(session, visor_ref)
    record = recall.CustodyRecord(detention_started_on=started_on)
    for facts in found.values():
        mine = [a for a in live if a.subject == facts.event_id]
        result = recall.at_large(
            facts, nominal, mine, ctx.clock.now(), ctx.settings.triggers, _tz(ctx), record
        )
        await apply(session, result, ctx, open_new=False, tally=tally, defer=True)


async def _minutes(session: AsyncSession, visor_ref: str, meeting_id: str, ctx: Context, tally: _Run) -> None:
    """Minutes put on ViSOR (a later meeting.held) resolve the meeting's `mappa.minutes_overdue`
    (rules.minutes); resolve only: the alert opens on a scan. Meeting ids are only unique per
    nominal, so another nominal's alert for the same id is left alone."""
    live = await _live(session, ctx, tally, minutes.KINDS, visor_ref=visor_ref, subject=meeting_id)
    if not live:
        return
    held = (await load.meetings(session, [visor_ref])).get(visor_ref, [])
    meeting = next((m for m in held if m.meeting_id == meeting_id), None)
    nominal = await tally.nominal(session, visor_ref)
    result = minutes.evaluate(meeting, nominal, live, ctx.clock.now(), _tz(ctx))
    await apply(session, result, ctx, open_new=False, tally=tally, defer=True)


async def _rmp_review(session: AsyncSession, visor_ref: str, ctx: Context, tally: _Run) -> None:
    """A review recorded moves the due day, so the nominal's `rmp.review_due` for the old one
    resolves (rules.rmp_review); resolve only: the next one opens on a scan. A plan reviewed at
    least once never counts from a level change, so that is not read here."""
    live = await _live(session, ctx, tally, rmp_review.KINDS, visor_ref=visor_ref)
    if not live:
        return
    reviewed = (await load.last_rmp_reviews(session, [visor_ref])).get(visor_ref)
    result = rmp_review.evaluate(
        await tally.nominal(session, visor_ref), reviewed, None, live, ctx.clock.now(),
        ctx.settings.triggers, _tz(ctx),
    )
    await apply(session, result, ctx, open_new=False, tally=tally, defer=True)
