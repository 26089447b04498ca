"""Applying one new, validated event to the case store, inside the ingest transaction.

Events arrive out of order, so state that a later event may overwrite (a nominal, an action, the
current MAPPA level, a MAPP meeting, a court order) carries the occurred_at it reflects, and an
older event never overwrites a newer one. Records of things that happened (notifications, travel,
border checks, visits, recalls, level and risk changes, detentions, detected changes, RMP
reviews) are always kept. Events for a ViSOR reference with no nominal yet are stored and applied
all the same: case records have no foreign key to `nominals`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any, ClassVar, TypeVar, assert_never, cast

from sqlalchemy import Select, Table, Text, any_, bindparam, func, insert, inspect, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from casewatch.context import Context
from casewatch.ingest import arrays
from casewatch.ingest.bulk import FreshNominals, Row
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
from casewatch.model.facts import FULL_NOTIFICATION_KINDS, BorderCheckFacts
from casewatch.model.names import alias_keys, name_key
from casewatch.store import held
from casewatch.store.direct_read import fetch_in_transaction
from casewatch.store.lists import one_of_param
from casewatch.store.models import (
    Action,
    Base,
    BorderCheck,
    ChangeDetection,
    Detention,
    Event,
    LevelChange,
    Marker,
    Meeting,
    Nominal,
    NominalAlias,
    NotificationReceived,
    Order,
    Recall,
    RiskChange,
    RmpReview,
    TravelCancellation,
    TravelNotification,
    Visit,
)
from casewatch.store.sqlite_driver import OneTripConnection
from casewatch.triggers.applied import Applied

# The notifications that restart the periodic and weekly clocks: the rules' own list.
CLOCK_RESTARTING_KINDS = FULL_NOTIFICATION_KINDS

# The fields of a nominal.upsert copied as they are onto the nominal.
_NOMINAL_FIELDS = {
    "surname", "forenames", "date_of_birth", "pnc_id", "category", "registered", "risk_level",
    "lead_agency", "team", "offender_manager", "area", "on_licence", "no_fixed_abode",
    "release_date", "licence_expiry", "relevant_date", "notification_ends_on",
    "home_address", "visit_every_days", "licence_conditions", "exclusion_zones", "description",
    "crn", "noms_number",
}

# What a risk change records (rules.risk): a known nominal's risk level, MAPPA category, area.
_RISK_FIELDS = (("risk", "risk_level"), ("category", "category"), ("area", "area"))


M = TypeVar("M", Marker, NominalAlias)  # a nominal's child rows, replaced on each upsert


class Batch:
    """What the events of one batch share, loaded up front in a few queries rather than one or
    more per event: the nominals, markers and actions they touch (locked FOR UPDATE on
    PostgreSQL, so two ingests touching one nominal take turns and the state_as_of guards cannot
    be raced; SQLite's BEGIN IMMEDIATE serialises anyway), and which references already have
    records a first nominal.upsert must take into account."""

    # Whether first upserts that need nothing from the database go through `fresh` (Core
    # executemany) rather than ORM objects; off only where a test compares the two paths.
    bulk_first_upserts: ClassVar[bool] = True
    # Whether new actions and the notification dates of known nominals are written by `finish`
    # as Core statements rather than by the ORM's flush; off only where a test compares the two.
    core_writes: ClassVar[bool] = True
    # Whether, on PostgreSQL, those Core writes (records, new actions, notification dates) send a
    # table's rows as arrays in one statement (ingest.arrays) rather than an executemany (one
    # execution a row on the server); off only where a test compares the two.
    array_writes: ClassVar[bool] = True
    # Whether the border checks of the batch's border-alert references are read once by `load`
    # and carried (the same-check test, then the rules' other checks) rather than read by each;
    # off only where a test compares the two.
    carry_checks: ClassVar[bool] = True
    # Whether the locking reads of the batch's nominals and actions take their keys as one
    # parameter: on PostgreSQL one array (`key = ANY($1)`), on SQLite one JSON array (`key IN
    # (SELECT value FROM json_each(?))`, the key's index searched a value), rather than an
    # expanding IN list, which renders the statement again at each execution; off only where a
    # test compares the two.
    keys_as_array: ClassVar[bool] = True
    # Whether, on PostgreSQL, `finish` sends the records, the new actions and the notification
    # dates as one statement (ingest.arrays.combined_statement) rather than one a table; off only
    # where a test compares the two.
    combine_writes: ClassVar[bool] = True
    # Whether, on SQLite, those writes are handed to the driver's connection to run with the
    # transaction's next trip (store.held) rather than each run through session.execute; off only
    # where a test compares the two.
    hold_writes: ClassVar[bool] = True
    # Whether, on PostgreSQL, ingest.pipeline stores the batch's events as one array a column
    # (arrays.returning_insert_statement) rather than SQLAlchemy's multi-row insert; off only where
    # a test compares the two.
    array_events: ClassVar[bool] = True

    def __init__(self) -> None:
        self.nominals: dict[str, Nominal | None] = {}
        self.markers: dict[str, list[Marker]] = {}
        self.aliases: dict[str, list[NominalAlias]] = {}
        self.actions: dict[str, Action | None] = {}
        self.meetings: dict[tuple[str, str], Meeting | None] = {}  # by (visor_ref, meeting_id)
        self.orders: dict[tuple[str, str], Order | None] = {}  # by (visor_ref, order_id)
        self.with_history: set[str] = set()  # refs with level changes or clock notifications
        self.open_recalls: dict[str, list[Recall]] = {}
        # Returns that closed no recall when they arrived: (returned_at, event id).
        self.unused_returns: dict[str, list[tuple[datetime, str]]] = {}
        self.pending: set[str] = set()  # stored in this transaction, not applied yet
        # Rows of records nothing in the batch updates (visits, notifications, travel, ...),
        # written as one Core executemany a table (write_records) rather than flushed object by
        # object through the ORM's unit of work.
        self.records: dict[type[Base], list[dict[str, Any]]] = {}
        # First upserts of new nominals, as rows (casewatch.ingest.bulk), written by `finish`.
        self.fresh = FreshNominals()
        # Actions first seen in this batch (core_writes): objects outside the session, changed in
        # place by later upserts, inserted by `finish` (nothing reads the table before then).
        self.new_actions: dict[str, Action] = {}
        # Known nominals whose last_notification_on a notification moved (core_writes): the ORM
        # holds the value as stored, `finish` stores it.
        self.notified: dict[str, Nominal] = {}
        # carry_checks: each border-alert reference's border checks, as stored when the batch was
        # loaded and then as this batch records them: what a read of the table gives once the
        # batch's records are written (triggers.load.checks_of).
        self.checks: dict[str, list[BorderCheckFacts]] = {}
        self._holding: OneTripConnection | None | bool = False  # hold_writes: not looked up yet

    def nominal(self, session: AsyncSession, visor_ref: str) -> Nominal | None:
        """The nominal as this batch has it so far; a buffered first upsert becomes the pending
        ORM objects the plain path would have added, for the caller to change."""
        if visor_ref in self.fresh:
            promoted = self.fresh.promote(session, visor_ref)
            self.nominals[visor_ref] = promoted.nominal
            self.markers[visor_ref] = promoted.markers
            self.aliases[visor_ref] = promoted.aliases
        return self.nominals.get(visor_ref)

    async def finish(self, session: AsyncSession, *, defer: bool = False) -> arrays.Writes | None:
        """Write what the batch buffered, once every event is applied and before the rules run.
        With `defer` (PostgreSQL), where every write can go as a part of one statement
        (_combined) and no first upsert is buffered: nothing is written, the writes are returned
        for the caller to send (arrays.Writes.run) or to hand to the statement that comes next."""
        if defer:
            writes = self._combined(session, least=1)
            if writes is not None:
                self.records, self.new_actions, self.notified = {}, {}, {}
                await self.fresh.write(session)  # nothing buffered (_combined): writes nothing
                return writes
        combined = await self._write_combined(session)  # then nothing else but `fresh` is left
        if not combined:
            await self.write_records(session)
        await self.fresh.write(session)
        if not combined:
            await self._write_actions_and_notified(session)
        return None

    async def _write_actions_and_notified(self, session: AsyncSession) -> None:
        if self.new_actions:
            rows = [{key: getattr(a, key) for key in _ACTION_KEYS} for a in self.new_actions.values()]
            await _insert(session, _ACTIONS, rows, await self._hold_on(session))
        if self.notified:
            # The value each nominal holds now: a later upsert in the batch may have moved it again.
            if self.array_writes and _on_postgres(session):
                await session.execute(
                    arrays.update_statement(_NOMINALS, "visor_ref", "last_notification_on"),
                    {"keys": list(self.notified),
                     "values": [n.last_notification_on for n in self.notified.values()]},
                )
            else:
                dates = [{"ref": ref, "on": n.last_notification_on} for ref, n in self.notified.items()]
                holding = await self._hold_on(session)
                if holding is not None:
                    held.hold(holding, _set_notified_compiled(session.get_bind().dialect), dates)
                else:
                    await session.execute(_SET_NOTIFIED, dates)
        self.new_actions, self.notified = {}, {}

    async def _hold_on(self, session: AsyncSession) -> OneTripConnection | None:
        """The connection to hand the batch's writes to (hold_writes, SQLite's one-trip driver),
        else None: looked up once a batch."""
        if self._holding is False:
            on = self.hold_writes and not _on_postgres(session)
            self._holding = await held.holder(session) if on else None
        return self._holding if isinstance(self._holding, OneTripConnection) else None

    async def _write_combined(self, session: AsyncSession) -> bool:
        """On PostgreSQL, with no first upserts buffered: the records, new actions and notification
        dates in one statement, when there are two or more of them and every one can go as arrays.
        False when not (nothing is written then). The tables are distinct, no part reads what
        another writes, and the nominals updated are known ones: what the statements one by one do."""
        writes = self._combined(session, least=2)
        if writes is None:
            return False
        await writes.run(session)
        self.records, self.new_actions, self.notified = {}, {}, {}
        return True

    def _combined(self, session: AsyncSession, *, least: int) -> arrays.Writes | None:
        """The records, new actions and notification dates as the parts of one statement, when
        there are `least` or more of them, every one can go as arrays and no first upsert is
        buffered (PostgreSQL); else None."""
        if not (self.combine_writes and self.array_writes and _on_postgres(session)) or self.fresh.nominals:
            return None
        writes = [(cast(Table, model.__table__), rows) for model, rows in self.records.items()]
        if self.new_actions:
            actions = [{key: getattr(a, key) for key in _ACTION_KEYS} for a in self.new_actions.values()]
            writes.append((_ACTIONS, actions))
        if len(writes) + bool(self.notified) < least:
            return None
        inserts: list[arrays.Insert] = []
        params: list[dict[str, Any]] = []
        for table, rows in writes:
            keys = tuple(rows[0])
            if not (arrays.insertable(table, keys) and all(row.keys() == set(keys) for row in rows)):
                return None
            inserts.append((table, keys))
            params.append(arrays.columns(rows, keys))
        update: arrays.Update | None = None
        if self.notified:
            update = (_NOMINALS, "visor_ref", "last_notification_on")
            params.append({"keys": list(self.notified),
                           "values": [n.last_notification_on for n in self.notified.values()]})
        return arrays.Writes(tuple(inserts), update, tuple(params))

    def record(self, model: type[Base], **values: Any) -> None:
        self.records.setdefault(model, []).append(values)
        if model is BorderCheck and values["visor_ref"] in self.checks:
            self.checks[values["visor_ref"]].append(_check_facts(values))

    async def write_records(self, session: AsyncSession) -> None:
        """Insert the records buffered so far (before anything reads their tables)."""
        records, self.records = self.records, {}
        for model, rows in records.items():
            await _insert(session, model.__table__, rows, await self._hold_on(session))  # type: ignore[arg-type]

    @classmethod
    async def load(cls, session: AsyncSession, envelopes: Sequence[Envelope]) -> Batch:
        batch = cls()
        refs = sorted({e.visor_ref for e in envelopes})
        batch.pending = {e.id for e in envelopes}
        batch.nominals = {**dict.fromkeys(refs), **await _locked(session, Nominal.visor_ref, refs)}
        upserted = sorted({e.visor_ref for e in envelopes if isinstance(e.data, NominalUpsert)})
        existing = [r for r in upserted if batch.nominals[r] is not None]
        batch.markers = await _rows_of(session, Marker, existing)
        batch.aliases = await _rows_of(session, NominalAlias, existing)
        new = [r for r in upserted if batch.nominals[r] is None]
        for chunk in _chunks(new):
            changes = select(LevelChange.visor_ref).where(LevelChange.visor_ref.in_(chunk))
            notes = select(NotificationReceived.visor_ref).where(
                NotificationReceived.visor_ref.in_(chunk),
                NotificationReceived.kind.in_(CLOCK_RESTARTING_KINDS),
            )
            batch.with_history.update((await session.execute(changes.union(notes))).scalars())
        await batch._load_recalls(session, envelopes)
        action_ids = sorted({e.data.action_id for e in envelopes if isinstance(e.data, ActionUpsert)})
        batch.actions = {**dict.fromkeys(action_ids), **await _locked(session, Action.action_id, action_ids)}
        await batch._load_meetings(session, envelopes)
        await batch._load_orders(session, envelopes)
        if cls.carry_checks:
            await batch._load_checks(session, envelopes)
        return batch

    async def _load_checks(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        refs = sorted({e.visor_ref for e in envelopes if isinstance(e.data, BorderAlert)})
        for chunk in _chunks(refs):
            self.checks.update((ref, []) for ref in chunk)
            statement = _checks_of(_on_postgres(session))
            for row in await fetch_in_transaction(session, statement, {"refs": list(chunk)}):
                self.checks[row.visor_ref].append(_check_facts(row._asdict()))

    async def _load_meetings(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        keys = [(e.visor_ref, e.data.meeting_id) for e in envelopes if isinstance(e.data, MeetingHeld)]
        self.meetings = await _locked_per_nominal(session, Meeting.meeting_id, keys)

    async def _load_orders(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        keys = [(e.visor_ref, e.data.order_id) for e in envelopes if isinstance(e.data, OrderUpsert)]
        self.orders = await _locked_per_nominal(session, Order.order_id, keys)

    async def _load_recalls(self, session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
        returning = sorted({e.visor_ref for e in envelopes if isinstance(e.data, RecallReturned)})
        for chunk in _chunks(returning):
            found = await session.execute(
                select(Recall)
                .where(Recall.visor_ref.in_(chunk), Recall.returned_at.is_(None))
                .order_by(Recall.id)
                .with_for_update()
            )
            for recall in found.scalars():
                self.open_recalls.setdefault(recall.visor_ref, []).append(recall)
        issuing = sorted({e.visor_ref for e in envelopes if isinstance(e.data, RecallIssued)})
        for chunk in _chunks(issuing):
            used = select(Recall.return_event_id).where(
                Recall.visor_ref.in_(chunk), Recall.return_event_id.is_not(None)
            )
            returns = await session.execute(
                select(Event).where(
                    Event.visor_ref.in_(chunk),
                    Event.type == "recall.returned",
                    Event.id.not_in(used),
                    Event.id.not_in(self.pending),
                )
            )
            for event in returns.scalars():
                returned = _returned_at(event)
                if returned is not None:
                    self.unused_returns.setdefault(event.visor_ref, []).append((returned, event.id))


async def _rows_of(session: AsyncSession, model: type[M], refs: Sequence[str]) -> dict[str, list[M]]:
    """Each nominal's rows of a child table (markers, aliases), an empty list for none."""
    found: dict[str, list[M]] = {ref: [] for ref in refs}
    for chunk in _chunks(refs):
        rows = await session.execute(select(model).where(model.visor_ref.in_(chunk)))
        for row in rows.scalars():
            found[row.visor_ref].append(row)
    return found


_ACTIONS = Action.metadata.tables[Action.__tablename__]
_ACTION_KEYS = tuple(column.key for column in _ACTIONS.columns)
_NOMINALS = Nominal.metadata.tables[Nominal.__tablename__]
_SET_NOTIFIED = (
    update(_NOMINALS)
    .where(_NOMINALS.c.visor_ref == bindparam("ref"))
    .values(last_notification_on=bindparam("on"))
)


_CHECKS = BorderCheck.metadata.tables[BorderCheck.__tablename__]


@cache
def _checks_of(postgres: bool) -> Select[Any]:
    """The border checks of the references `:refs` (one array parameter on PostgreSQL)."""
    return select(
        _CHECKS.c.event_id, _CHECKS.c.visor_ref, _CHECKS.c.port, _CHECKS.c.direction, _CHECKS.c.checked_at
    ).where(one_of_param(postgres, _CHECKS.c.visor_ref, "refs"))


def _check_facts(row: Mapping[Any, Any]) -> BorderCheckFacts:
    """A border check's rule facts, its time in UTC as a read of the row gives it."""
    return BorderCheckFacts(
        event_id=row["event_id"], visor_ref=row["visor_ref"], port=row["port"], direction=row["direction"],
        checked_at=row["checked_at"].astimezone(UTC),
    )


def _on_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


@cache
def _set_notified_compiled(dialect: Dialect) -> held.Compiled:
    return held.compiled_statement(dialect, _SET_NOTIFIED)


async def _insert(
    session: AsyncSession, table: Table, rows: list[dict[str, Any]], holding: OneTripConnection | None = None
) -> None:
    """Insert `rows` (each with the same keys) into `table`: as arrays in one statement on
    PostgreSQL where the columns allow (Batch.array_writes), held for the next trip on `holding`
    (Batch.hold_writes, SQLite), else one Core executemany."""
    if holding is not None and held.hold_insert(holding, session.get_bind().dialect, table, rows):
        return
    keys = tuple(rows[0])
    if (
        Batch.array_writes and _on_postgres(session) and arrays.insertable(table, keys)
        and all(len(row) == len(keys) and row.keys() == set(keys) for row in rows)
    ):
        await session.execute(arrays.insert_statement(table, keys), arrays.columns(rows, keys))
    else:
        await session.execute(insert(table), rows)


def _chunks(values: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


async def apply_event(
    session: AsyncSession, envelope: Envelope, ctx: Context, *, source: str, batch: Batch
) -> Applied:
    """Apply one event that was just stored (never a duplicate) to the case state. `batch` was
    loaded for all the events of the transaction, this one included."""
    batch.pending.discard(envelope.id)
    a = _Apply(session, envelope, ctx, source, batch)
    match envelope.data:
        case NominalUpsert() as data:
            return await _nominal_upsert(a, data)
        case NotificationReceivedData() as data:
            return await _notification_received(a, data)
        case TravelNotified() as data:
            return await _travel_notified(a, data)
        case TravelCancelled() as data:
            return await _travel_cancelled(a, data)
        case BorderAlert() as data:
            return await _border_alert(a, data)
        case LevelChanged() as data:
            return await _level_changed(a, data)
        case RecallIssued() as data:
            return await _recall_issued(a, data)
        case RecallReturned() as data:
            return await _recall_returned(a, data)
        case DetentionStarted() as data:
            return await _detention_started(a, data)
        case DetentionEnded() as data:
            return await _detention_ended(a, data)
        case ChangeDetectedData() as data:
            return await _change_detected(a, data)
        case ActionUpsert() as data:
            return await _action_upsert(a, data)
        case VisitRecorded() as data:
            return await _visit_recorded(a, data)
        case MeetingHeld() as data:
            return await _meeting_held(a, data)
        case RmpReviewed() as data:
            return await _rmp_reviewed(a, data)
        case OrderUpsert() as data:
            return await _order_upsert(a, data)
        case _:
            assert_never(envelope.data)


@dataclass(frozen=True)
class _Apply:
    """One event being applied: what every handler needs."""

    session: AsyncSession
    envelope: Envelope
    ctx: Context
    source: str
    batch: Batch

    @property
    def ref(self) -> str:
        return self.envelope.visor_ref

    @property
    def at(self) -> datetime:
        return self.envelope.occurred_at

    def done(
        self,
        *,
        stale: bool = False,
        level_change: LevelChange | None = None,
        rationale_for: LevelChange | None = None,
        risk_change: RiskChange | None = None,
    ) -> Applied:
        return Applied(
            self.envelope, stale=stale, level_change=level_change,
            rationale_for=rationale_for, risk_change=risk_change,
        )

    def nominal(self) -> Nominal | None:
        return self.batch.nominal(self.session, self.ref)


# --- nominals and MAPPA levels ------------------------------------------------------------------


async def _locked(session: AsyncSession, key: Any, keys: Sequence[str]) -> dict[str, Any]:
    """The rows of `key`'s table with these keys, by key, locked FOR UPDATE on PostgreSQL in key
    order (so two ingests sharing rows take turns rather than deadlock)."""
    found: dict[str, Any] = {}
    way = ("array" if _on_postgres(session) else "json") if Batch.keys_as_array else "in"
    for chunk in _chunks(keys):
        value: Any = json.dumps(list(chunk)) if way == "json" else list(chunk)
        rows = await session.execute(_locking_read(key, way), {"keys": value})
        for row in rows.scalars():
            found[getattr(row, key.key)] = row
    return found


@cache
def _locking_read(key: Any, way: str = "in") -> Any:
    """SELECT key's rows WHERE key IN (:keys) ORDER BY key FOR UPDATE, built once a key: a
    statement built anew for each transaction costs more Python than its round trip. `way`:
    "in", an expanding IN list; "array" (PostgreSQL), `key = ANY(CAST(:keys AS text[]))`, text
    rather than the column's varchar(n), which an explicit cast would cut a longer key to; "json"
    (SQLite), `key IN (SELECT value FROM json_each(:keys))`, :keys a JSON array of strings."""
    keys: Any
    if way == "array":
        condition = key == any_(bindparam("keys", type_=ARRAY(Text())))
    elif way == "json":
        keys = func.json_each(bindparam("keys", type_=Text())).table_valued("value")
        condition = key.in_(select(keys.c.value))
    else:
        condition = key.in_(bindparam("keys", expanding=True))
    return select(key.class_).where(condition).order_by(key).with_for_update()


async def _locked_per_nominal(
    session: AsyncSession, key: Any, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Any]:
    """_locked for rows keyed by (visor_ref, `key`) (a source's id is unique per nominal only):
    every asked key, its row or None, the nominals' rows locked in (visor_ref, key) order."""
    model = key.class_
    found: dict[tuple[str, str], Any] = dict.fromkeys(sorted(set(keys)))
    for chunk in _chunks(sorted({ref for ref, _ in found})):
        rows = await session.execute(
            select(model).where(model.visor_ref.in_(chunk)).order_by(model.visor_ref, key).with_for_update()
        )
        for row in rows.scalars():
            if (row.visor_ref, getattr(row, key.key)) in found:
                found[(row.visor_ref, getattr(row, key.key))] = row
    return found


async def _nominal_upsert(a: _Apply, data: NominalUpsert) -> Applied:
    nominal = a.nominal()
    now = a.ctx.clock.now()
    if nominal is None:
        if a.batch.bulk_first_upserts and a.ref not in a.batch.with_history:
            # What _new_nominal and _replace_* would add, as rows for one executemany a table.
            values = _first_values(a, data, level=data.mappa_level, level_as_of=a.at, notified=None)
            a.batch.fresh.add(values, _marker_rows(a.ref, data), list(_alias_rows(a.ref, data).values()))
            return a.done()
        nominal = await _new_nominal(a, data)
        a.session.add(nominal)
        a.batch.nominals[a.ref] = nominal
        await _replace_markers(a, data)
        await _replace_aliases(a, data)
        return a.done()
    if a.at < nominal.state_as_of:
        return a.done(stale=True)
    risk_change = _risk_change(a, nominal, data)
    for name, value in data.model_dump(include=_NOMINAL_FIELDS).items():
        setattr(nominal, name, value)
    nominal.surname_key = name_key(data.surname)
    nominal.aliases = list(data.aliases)
    nominal.last_notification_on = _latest(nominal.last_notification_on, data.last_notification_on)
    nominal.state_as_of = a.at
    nominal.updated_at = now
    change: LevelChange | None = None
    new_level = data.mappa_level
    # level_as_of is the time of the newest level CHANGE: an upsert that restates the level it
    # already has (an extract that does not carry levels restates the stored one) does not move
    # it, or a real change that happened before the restatement but arrived after it (a probation
    # registration delayed in its queue) would be taken for stale and lost.
    level_is_newer = nominal.level_as_of is None or a.at >= nominal.level_as_of
    if level_is_newer and new_level != nominal.mappa_level:
        change = LevelChange(
            visor_ref=a.ref, from_level=nominal.mappa_level, to_level=new_level, rationale="",
            changed_at=a.at, recorded_at=now, recorded_by=a.source[:64], event_id=a.envelope.id,
        )
        a.session.add(change)
        nominal.mappa_level = new_level
        nominal.level_as_of = a.at
    await _replace_markers(a, data)
    await _replace_aliases(a, data)
    return a.done(level_change=change, risk_change=risk_change)


def _risk_change(a: _Apply, nominal: Nominal, data: NominalUpsert) -> RiskChange | None:
    """The change of risk level, MAPPA category or area this upsert makes to a known nominal,
    recorded (each from/to pair only for what changed), or None."""
    pairs: dict[str, str | None] = {}
    for short, name in _RISK_FIELDS:
        old, new = getattr(nominal, name), getattr(data, name)
        if old != new:
            pairs[f"from_{short}"], pairs[f"to_{short}"] = old, new
    if not pairs:
        return None
    change = RiskChange(visor_ref=a.ref, changed_at=a.at, event_id=a.envelope.id, **pairs)
    a.session.add(change)
    return change


async def _new_nominal(a: _Apply, data: NominalUpsert) -> Nominal:
    """A nominal's first upsert (not a level change). Records that arrived before it and are
    newer than it (a level change, notifications) are taken into account."""
    level, level_as_of = data.mappa_level, a.at
    notified = None
    if a.ref in a.batch.with_history:
        await a.batch.write_records(a.session)  # notifications earlier in this batch count
        newest_change = (
            await a.session.execute(
                select(LevelChange)
                .where(LevelChange.visor_ref == a.ref, LevelChange.changed_at > a.at)
                .order_by(LevelChange.changed_at.desc(), LevelChange.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if newest_change is not None:
            level, level_as_of = newest_change.to_level, newest_change.changed_at
        notified = (
            await a.session.execute(
                select(func.max(NotificationReceived.notified_on)).where(
                    NotificationReceived.visor_ref == a.ref,
                    NotificationReceived.kind.in_(CLOCK_RESTARTING_KINDS),
                )
            )
        ).scalar_one_or_none()
    return Nominal(**_first_values(a, data, level=level, level_as_of=level_as_of, notified=notified))


def _first_values(
    a: _Apply, data: NominalUpsert, *, level: int | None, level_as_of: datetime, notified: date | None
) -> Row:
    """Every column of a nominal made by its first upsert (the ORM object's or the bulk row's)."""
    return {
        "visor_ref": a.ref,
        "surname_key": name_key(data.surname),
        "mappa_level": level,
        "last_notification_on": _latest(data.last_notification_on, notified),
        "aliases": list(data.aliases),
        "state_as_of": a.at,
        "level_as_of": level_as_of,
        "updated_at": a.ctx.clock.now(),
        **data.model_dump(include=_NOMINAL_FIELDS),
    }


# A ViSOR export often carries a level change twice: in the nominal's new mappa_level, and as a
# mappa.level_changed with the rationale. Within this span of each other they are one change.
SAME_CHANGE_WITHIN = timedelta(days=14)


async def _same_change_from_an_upsert(a: _Apply, data: LevelChanged) -> LevelChange | None:
    """The level change already recorded (by a nominal.upsert, or an earlier event without a
    rationale) that this mappa.level_changed describes: the same move, still the nominal's current
    level, with no rationale yet, at about the same time."""
    nominal = a.nominal()
    if nominal is None or nominal.mappa_level != data.to_level:
        return None
    latest = (
        await a.session.execute(
            select(LevelChange)
            .where(LevelChange.visor_ref == a.ref)
            .order_by(LevelChange.changed_at.desc(), LevelChange.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if (
        latest is None
        or (latest.from_level, latest.to_level) != (data.from_level, data.to_level)
        or latest.rationale
        or abs(latest.changed_at - a.at) > SAME_CHANGE_WITHIN
    ):
        return None
    return latest


async def _drop(a: _Apply, rows: Sequence[M]) -> None:
    """Remove a nominal's previous child rows: from the database, or from the session if an
    earlier upsert in this batch only just added them."""
    for old in rows:
        if inspect(old).pending:
            a.session.expunge(old)
        else:
            await a.session.delete(old)


async def _replace_markers(a: _Apply, data: NominalUpsert) -> None:
    await _drop(a, a.batch.markers.get(a.ref, []))
    markers = [Marker(**row) for row in _marker_rows(a.ref, data)]
    a.session.add_all(markers)
    a.batch.markers[a.ref] = markers


def _marker_rows(visor_ref: str, data: NominalUpsert) -> list[Row]:
    return [
        {"visor_ref": visor_ref, "code": m.code, "label": m.label, "restricted": m.restricted}
        for m in data.markers
    ]


async def _replace_aliases(a: _Apply, data: NominalUpsert) -> None:
    """The nominal's alias rows (what /flags searches) become this upsert's aliases, one per
    distinct key, in the ingest transaction."""
    await _drop(a, a.batch.aliases.get(a.ref, []))
    aliases = [NominalAlias(**row) for row in _alias_rows(a.ref, data).values()]
    a.session.add_all(aliases)
    a.batch.aliases[a.ref] = aliases


def _alias_rows(visor_ref: str, data: NominalUpsert) -> dict[str, Row]:
    """One row per distinct alias key, the first alias that gives it."""
    rows: dict[str, Row] = {}
    for alias in data.aliases:
        for key in alias_keys(alias):
            rows.setdefault(key, {"visor_ref": visor_ref, "alias": alias, "alias_key": key})
    return rows


async def _level_changed(a: _Apply, data: LevelChanged) -> Applied:
    twin = await _same_change_from_an_upsert(a, data)
    if twin is not None:
        twin.rationale = data.rationale
        twin.recorded_by = (data.recorded_by or twin.recorded_by)[:64]
        return a.done(rationale_for=twin)
    change = LevelChange(
        visor_ref=a.ref,
        from_level=data.from_level,
        to_level=data.to_level,
        rationale=data.rationale,
        changed_at=a.at,
        recorded_at=a.ctx.clock.now(),
        recorded_by=(data.recorded_by or a.source)[:64],
        event_id=a.envelope.id,
    )
    a.session.add(change)
    a.batch.with_history.add(a.ref)
    nominal = a.nominal()
    stale = False
    if nominal is not None:
        if nominal.level_as_of is None or a.at >= nominal.level_as_of:
            nominal.mappa_level = data.to_level
            nominal.level_as_of = a.at
            nominal.updated_at = a.ctx.clock.now()
        else:
            stale = True  # history kept; the nominal already reflects a newer level
    return a.done(stale=stale, level_change=change)


# --- notifications, travel, visits --------------------------------------------------------------


async def _notification_received(a: _Apply, data: NotificationReceivedData) -> Applied:
    kind, notified_on = data.kind, data.notified_on
    a.batch.record(
        NotificationReceived, visor_ref=a.ref, kind=kind, notified_on=notified_on, event_id=a.envelope.id,
        what=data.what, changed_on=data.changed_on,
    )
    if kind in CLOCK_RESTARTING_KINDS:
        a.batch.with_history.add(a.ref)
        nominal = a.nominal()
        if nominal is not None:
            latest = _latest(nominal.last_notification_on, notified_on)
            if not (a.batch.core_writes and inspect(nominal).persistent):
                nominal.last_notification_on = latest
            elif latest != nominal.last_notification_on:
                set_committed_value(nominal, "last_notification_on", latest)
                a.batch.notified[a.ref] = nominal
    return a.done()


async def _travel_notified(a: _Apply, data: TravelNotified) -> Applied:
    a.batch.record(
        TravelNotification, visor_ref=a.ref, departure_on=data.departure_on, return_on=data.return_on,
        destination=data.destination, notified_at=data.notified_at or a.at, event_id=a.envelope.id,
        departure_at=data.departure_at, trip_id=data.trip_id,
    )
    return a.done()


async def _travel_cancelled(a: _Apply, data: TravelCancelled) -> Applied:
    # Kept as a record: every notification of the trip (before or after) reads it.
    a.batch.record(
        TravelCancellation, visor_ref=a.ref, trip_id=data.trip_id, cancelled_at=a.at, event_id=a.envelope.id
    )
    return a.done()


# The same passport check reported twice (the Border Force email and a ViSOR export, or two emails
# spelling the port differently) has the same nominal, direction and time; nobody crosses the
# border the same way twice within this span (they would have to cross back in between).
SAME_CHECK_WITHIN = timedelta(minutes=10)


async def _border_alert(a: _Apply, data: BorderAlert) -> Applied:
    if await _same_check_held(a, data):
        return a.done(stale=True)  # stored as an event; no second check, no second set of alerts
    a.batch.record(
        BorderCheck, visor_ref=a.ref, port=data.port, direction=data.direction,
        checked_at=data.checked_at, event_id=a.envelope.id,
    )
    return a.done()


async def _same_check_held(a: _Apply, data: BorderAlert) -> bool:
    earliest, latest = data.checked_at - SAME_CHECK_WITHIN, data.checked_at + SAME_CHECK_WITHIN
    carried = a.batch.checks.get(a.ref)
    if carried is not None:  # stored before the batch and recorded in it (Batch.carry_checks)
        return any(
            c.direction == data.direction and earliest <= c.checked_at <= latest for c in carried
        )
    for pending in a.batch.records.get(BorderCheck, []):  # earlier in this transaction
        if pending["visor_ref"] == a.ref and pending["direction"] == data.direction and (
            earliest <= pending["checked_at"] <= latest
        ):
            return True
    found = await a.session.execute(
        select(BorderCheck.id).where(
            BorderCheck.visor_ref == a.ref, BorderCheck.direction == data.direction,
            BorderCheck.checked_at.between(earliest, latest),
        ).limit(1)
    )
    return found.first() is not None


async def _visit_recorded(a: _Apply, data: VisitRecorded) -> Applied:
    a.batch.record(Visit, visor_ref=a.ref, visited_on=data.visited_on, event_id=a.envelope.id)
    return a.done()


# --- custody and changes (SOA 2003 s.83(6), s.84(1), s.85(3)-(4)) -------------------------------


async def _detention_started(a: _Apply, data: DetentionStarted) -> Applied:
    # Kept as records, in any order: rules.custody pairs starts and ends by date.
    a.batch.record(
        Detention, visor_ref=a.ref, started=True, kind=data.kind, on_date=data.started_on,
        event_id=a.envelope.id,
    )
    return a.done()


async def _detention_ended(a: _Apply, data: DetentionEnded) -> Applied:
    a.batch.record(
        Detention, visor_ref=a.ref, started=False, kind=None, on_date=data.ended_on, event_id=a.envelope.id
    )
    return a.done()


async def _change_detected(a: _Apply, data: ChangeDetectedData) -> Applied:
    a.batch.record(
        ChangeDetection, visor_ref=a.ref, what=data.what, changed_on=data.changed_on, source=data.source,
        event_id=a.envelope.id,
    )
    return a.done()


# --- recalls ------------------------------------------------------------------------------------


async def _recall_issued(a: _Apply, data: RecallIssued) -> Applied:
    issued_at = data.issued_at
    recall = Recall(
        visor_ref=a.ref, recall_type=data.recall_type, issued_at=issued_at, returned_at=None,
        event_id=a.envelope.id, return_event_id=None,
    )
    # A return that arrived before its recall (out of order) and closed nothing closes this one.
    unused = a.batch.unused_returns.setdefault(a.ref, [])
    candidates = sorted(r for r in unused if r[0] >= issued_at)
    if candidates:
        recall.returned_at, recall.return_event_id = candidates[0]
        unused.remove(candidates[0])
    else:
        a.batch.open_recalls.setdefault(a.ref, []).append(recall)
    a.session.add(recall)
    return a.done()


def _returned_at(event: Event) -> datetime | None:
    try:
        return RecallReturned.model_validate(event.data.get("data", {})).returned_at
    except ValueError:
        return None


async def _recall_returned(a: _Apply, data: RecallReturned) -> Applied:
    returned_at = data.returned_at
    still_open: list[Recall] = []
    closed = 0
    for recall in a.batch.open_recalls.get(a.ref, []):
        if recall.issued_at <= returned_at:
            recall.returned_at, recall.return_event_id = returned_at, a.envelope.id
            closed += 1
        else:
            still_open.append(recall)
    a.batch.open_recalls[a.ref] = still_open
    if not closed:
        a.batch.unused_returns.setdefault(a.ref, []).append((returned_at, a.envelope.id))
    return a.done(stale=not closed)


# --- actions ------------------------------------------------------------------------------------


async def _action_upsert(a: _Apply, data: ActionUpsert) -> Applied:
    action = a.batch.actions.get(data.action_id)
    if action is not None and a.at < action.state_as_of:
        return a.done(stale=True)
    status = data.status
    if action is None:
        action = Action(action_id=data.action_id, done_at=None)
        if a.batch.core_writes:
            a.batch.new_actions[action.action_id] = action
        else:
            a.session.add(action)
        a.batch.actions[action.action_id] = action
    was_done = action.status == "done"
    action.visor_ref = a.ref
    action.summary = data.summary
    action.owner = data.owner
    action.due_on = data.due_on
    action.source = data.source
    action.status = status
    action.state_as_of = a.at
    if status == "done" and not was_done:
        action.done_at = a.at
    elif status != "done":
        action.done_at = None
    return a.done()


# --- supervision: MAPP meetings, RMP reviews, court orders (issue 15) ----------------------------


async def _meeting_held(a: _Apply, data: MeetingHeld) -> Applied:
    key = (a.ref, data.meeting_id)
    meeting = a.batch.meetings.get(key)
    if meeting is not None and a.at < meeting.state_as_of:
        return a.done(stale=True)
    if meeting is None:
        meeting = Meeting(visor_ref=a.ref, meeting_id=data.meeting_id)
        a.session.add(meeting)
        a.batch.meetings[key] = meeting
    meeting.held_on = data.held_on
    meeting.level = data.level
    meeting.minutes_on_visor_on = data.minutes_on_visor_on
    meeting.state_as_of = a.at
    meeting.event_id = a.envelope.id
    return a.done()


async def _rmp_reviewed(a: _Apply, data: RmpReviewed) -> Applied:
    a.batch.record(RmpReview, visor_ref=a.ref, reviewed_on=data.reviewed_on, event_id=a.envelope.id)
    return a.done()


async def _order_upsert(a: _Apply, data: OrderUpsert) -> Applied:
    key = (a.ref, data.order_id)
    order = a.batch.orders.get(key)
    if order is not None and a.at < order.state_as_of:
        return a.done(stale=True)
    if order is None:
        order = Order(visor_ref=a.ref, order_id=data.order_id)
        a.session.add(order)
        a.batch.orders[key] = order
    order.kind = data.kind
    order.made_on = data.made_on
    order.expires_on = data.expires_on
    order.prohibitions = list(data.prohibitions)
    order.status = data.status
    order.state_as_of = a.at
    order.event_id = a.envelope.id
    return a.done()


def _latest(*dates: date | None) -> date | None:
    present = [d for d in dates if d is not None]
    return max(present) if present else None
