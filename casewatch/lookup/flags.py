"""/flags: find a nominal by ViSOR reference, PNC ID, or surname or alias (and date of birth), and show
what an officer needs at once, limited to what the requester may see. Every lookup is audited.

A lookup by reference is one statement: the nominal's columns, its offender manager (a join),
notification history, latest recall, last home visit, markers and live alerts (subqueries, the
lists as JSON) come back in one row; a lookup by surname is one more when it finds exactly one. A
registered nominal (or one whose RMP sets a visit frequency) with custody, detected changes, a
recall return or border checks on record needs the rest of the notification facts
(triggers.load.history, the rules' own), so that the next notification and home visit shown are
the ones the alerts work from: a few more statements, for those nominals only. The statements are
built once and run on the session's connection as Core: this is the busiest query a person waits
on, and the ORM's per-statement work was most of its CPU. A chat command's lookup by reference
reads the requester in that same statement (requester_and_reference): one statement in all.

The personal part (home address, licence conditions, exclusion zones, active court orders and
their prohibitions: issue 15) is in the same statement for a requester cleared for it (the roles
cleared for restricted markers, access.DEFAULT_CLEARED_ROLES); for anyone else it is not even read
(NULLs in its place). Read beside the requester, the clearance is decided in the statement from
the requester's roles, so for a requester not cleared the database sends NULLs and no restricted
markers: that personal data never leaves it. The audit entry says whether it was shown, never
what it says.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    null,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from casewatch.audit import AuditSink, session_sink
from casewatch.context import Context
from casewatch.lookup.access import DEFAULT_CLEARED_ROLES, Requester, requester_by_slack_user
from casewatch.lookup.due import next_notification_due
from casewatch.lookup.json_sql import json_row, json_rows, sorts_in_sql, utc_from_json
from casewatch.lookup.query import Query, QueryError, clean_text, parse_query, pnc_key, split_reason
from casewatch.lookup.views import (
    AlertLine,
    Candidate,
    FlagsView,
    LicenceView,
    MarkerView,
    OfficerContact,
    OrderView,
    PersonalView,
)
from casewatch.model.alerts import LIVE_STATES, SEVERITY_RANK
from casewatch.model.clocks import local_date
from casewatch.model.facts import FULL_NOTIFICATION_KINDS, NominalFacts, NotificationHistory, RecallFacts
from casewatch.store import direct_read
from casewatch.store.lookup_connections import Reads, connection_of
from casewatch.store.models import (
    Alert,
    BorderCheck,
    ChangeDetection,
    Detention,
    Marker,
    Nominal,
    NominalAlias,
    NotificationReceived,
    Officer,
    Order,
    Recall,
    Visit,
)
from casewatch.triggers import load
from casewatch.triggers.rules import visits
from casewatch.triggers.rules.recall import CustodyRecord, no_longer_at_large

CANDIDATE_LIMIT = 10


@dataclass(frozen=True)
class Found:
    view: FlagsView
    reason: str | None = None  # the requester's, as recorded in the audit log


@dataclass(frozen=True)
class ReasonRequired:
    """Need to know: one nominal matched, another team's, and the requester (no force-wide role)
    gave no reason. Nothing about the nominal is shown; the refusal is audited."""

    query: Query


@dataclass(frozen=True)
class Several:
    """More than one nominal matched: the candidates to pick from. `withheld`: how many of this
    page's matches are not listed because they are another team's and no reason was given (need
    to know, as for one match: ReasonRequired)."""

    query: Query
    candidates: tuple[Candidate, ...]
    total: int
    withheld: int = 0


@dataclass(frozen=True)
class NotFound:
    query: Query


@dataclass(frozen=True)
class Unreadable:
    message: str


@dataclass(frozen=True)
class Usage:
    """Nothing was asked: show how to ask."""


FlagsOutcome = Found | Several | NotFound | ReasonRequired | Unreadable | Usage


def _sql_string(value: str) -> Any:
    # A constant in the SQL text, not a bound parameter: the expression then matches the
    # expression index on nominals (store.models), which a parameter would not.
    return literal_column("'" + value.replace("'", "''") + "'")


def _constants(values: Sequence[str]) -> list[Any]:
    # Fixed lists as constants too: nothing to expand per execution.
    return [_sql_string(v) for v in values]


def _compact_ref(column: Any) -> ColumnElement[str]:
    """A ViSOR reference upper-cased without hyphens (ix_nominals_visor_ref_compact)."""
    return func.replace(func.upper(column), _sql_string("-"), _sql_string(""))


# Table columns, not ORM attributes: the statements below are plain Core.
_TABLES = Nominal.metadata.tables
_NOMINALS, _OFFICERS = _TABLES[Nominal.__tablename__], _TABLES[Officer.__tablename__]
_N, _O = _NOMINALS.c, _OFFICERS.c
_M = _TABLES[Marker.__tablename__].c
_A = _TABLES[Alert.__tablename__].c
_R = _TABLES[Recall.__tablename__].c
_NOTE = _TABLES[NotificationReceived.__tablename__].c
_AL = _TABLES[NominalAlias.__tablename__].c
_DET = _TABLES[Detention.__tablename__].c
_CHG = _TABLES[ChangeDetection.__tablename__].c
_BC = _TABLES[BorderCheck.__tablename__].c
_V = _TABLES[Visit.__tablename__].c
_OR = _TABLES[Order.__tablename__].c

_ALERT_COLUMNS = (
    _A.id, _A.kind, _A.severity, _A.state, _A.visor_ref, _A.team, _A.summary, _A.owner, _A.due_at,
    _A.opened_at, _A.acknowledged_by, _A.acknowledged_at,
)


# The nominal's offender manager, when the directory has them.
_MANAGER = and_(_O.id == _N.offender_manager, _N.offender_manager != _sql_string(""))


@cache
def _view_select(cleared: bool) -> Select[Any]:
    """Everything /flags shows about a nominal, one row per nominal (add the WHERE)."""
    return _view_columns(cleared).select_from(_NOMINALS).outerjoin(_OFFICERS, _MANAGER)


def _view_columns(cleared: bool | ColumnElement[bool]) -> Select[Any]:
    """The view's columns (no FROM yet). `cleared` is the requester's clearance: known (a bool:
    for a requester not cleared the personal columns and restricted markers are not even in the
    statement) or decided in the statement itself (a condition on the requester's row, see
    _requester_and_view: what it does not clear comes back as NULLs and no restricted markers)."""
    same_nominal = _NOTE.visor_ref == _N.visor_ref
    full = case((_NOTE.kind.in_(_constants(FULL_NOTIFICATION_KINDS)), _NOTE.notified_on), else_=None)
    # Whether the notification clocks need more than the newest full notification: custody, a
    # detected change, a recall return or a border check (rules.custody, rules.notifications).
    more_facts = or_(
        select(_DET.id).where(_DET.visor_ref == _N.visor_ref).exists(),
        select(_CHG.id).where(_CHG.visor_ref == _N.visor_ref).exists(),
        select(_R.id).where(_R.visor_ref == _N.visor_ref, _R.returned_at.is_not(None)).exists(),
        select(_BC.id).where(_BC.visor_ref == _N.visor_ref).exists(),
    )
    markers = select(json_rows((_M.code, _M.label, _M.restricted), order_by=(_M.restricted, _M.code)))
    markers = markers.where(_M.visor_ref == _N.visor_ref)
    if cleared is False:
        markers = markers.where(_M.restricted.is_(False))
    elif cleared is not True:
        markers = markers.where(or_(_M.restricted.is_(False), cleared))
    # The latest recall: an open one first, then the most recently issued.
    recall = (
        select(json_row(_R.recall_type, _R.issued_at, _R.returned_at))
        .where(_R.visor_ref == _N.visor_ref)
        .order_by(_R.returned_at.is_not(None), _R.issued_at.desc())
        .limit(1)
    )
    # What ends time at large when the feed never sent the return (rules.recall.no_longer_at_large),
    # so the banner and the recall.unlawfully_at_large alerts agree.
    same_recalls = _R.visor_ref == _N.visor_ref
    custody = (
        select(func.max(_DET.on_date)).where(_DET.visor_ref == _N.visor_ref, _DET.started.is_(True))
        .scalar_subquery().label("detention_started_on"),
        select(func.max(_R.returned_at)).where(same_recalls).scalar_subquery().label("recall_returned_at"),
        select(func.max(_R.issued_at)).where(same_recalls).scalar_subquery().label("recall_issued_at"),
    )
    live = _A.state.in_(_constants(LIVE_STATES))
    alerts = select(json_rows(_ALERT_COLUMNS)).where(_A.visor_ref == _N.visor_ref, live)
    personal = _personal_columns(cleared)
    return (
        select(
            _N.visor_ref, _N.surname, _N.forenames, _N.date_of_birth, _N.pnc_id, _N.category,
            _N.mappa_level, _N.risk_level, _N.registered, _N.no_fixed_abode, _N.lead_agency, _N.team,
            _N.offender_manager, _N.area, _N.on_licence, _N.licence_expiry, _N.release_date,
            _N.last_notification_on, _N.relevant_date, _N.notification_ends_on, _N.visit_every_days,
            _O.id.label("om_id"), _O.name.label("om_name"), _O.email.label("om_email"),
            _O.slack_user_id.label("om_slack_user_id"), _O.team.label("om_team"),
            select(func.max(full)).where(same_nominal).scalar_subquery().label("last_full_on"),
            more_facts.label("more_facts"),
            select(func.max(_V.visited_on)).where(_V.visor_ref == _N.visor_ref).scalar_subquery()
            .label("last_visit_on"),
            recall.scalar_subquery().label("recall"),
            *custody,
            markers.scalar_subquery().label("markers"),
            alerts.scalar_subquery().label("alerts"),
            _N.description,
            *personal,
        )
    )


def _personal_columns(cleared: bool | ColumnElement[bool]) -> tuple[Any, ...]:
    """The home address, licence conditions, exclusion zones and active court orders (the list as
    JSON) for a requester cleared for them; NULLs in their place otherwise, so that personal data
    a requester may not see is never even read (a known clearance) or never leaves the database
    (a clearance decided in the statement)."""
    names = ("home_address", "licence_conditions", "exclusion_zones", "orders")
    if cleared is False:
        return tuple(null().label(name) for name in names)
    orders = select(
        json_rows((_OR.order_id, _OR.kind, _OR.made_on, _OR.expires_on, _OR.prohibitions))
    ).where(_OR.visor_ref == _N.visor_ref, _OR.status == _sql_string("active"))
    if cleared is True:
        return (
            _N.home_address, _N.licence_conditions, _N.exclusion_zones,
            orders.scalar_subquery().label("orders"),
        )
    gated = (_N.home_address, _N.licence_conditions, _N.exclusion_zones, orders.scalar_subquery())
    return tuple(
        case((cleared, column), else_=null()).label(name) for column, name in zip(gated, names, strict=True)
    )


@cache
def _by_compact_ref(cleared: bool) -> Select[Any]:
    # In reference order: when several nominals share the compact form, the candidates and the
    # audit's visor_refs_shown come in one order whichever path read them (the read-ahead too).
    by_compact = _compact_ref(_N.visor_ref) == bindparam("compact")
    return _view_select(cleared).where(by_compact).order_by(_N.visor_ref)


@cache
def _by_pnc_tail(cleared: bool) -> Select[Any]:
    by_tail = func.upper(_N.pnc_id).like(bindparam("pattern"))
    return _view_select(cleared).where(by_tail).order_by(_N.visor_ref)


@cache
def _by_visor_ref(cleared: bool) -> Select[Any]:
    return _view_select(cleared).where(_N.visor_ref == bindparam("visor_ref"))


@cache
def _by_surname_statement(with_date_of_birth: bool) -> Select[Any]:
    """Nominals whose surname or any alias folds to the typed name. The two are found apart,
    each by its own index (ix_nominals_surname_key, ix_nominal_aliases_alias_key), and
    unioned: an OR across the tables would scan nominals. `matched_alias` is the alias matched
    (as given) when the surname did not match."""
    by_surname = _N.surname_key == bindparam("name_key")
    surnamed = select(_N.visor_ref).where(by_surname)
    aliased = select(_AL.visor_ref).where(_AL.alias_key == bindparam("name_key"))
    condition: ColumnElement[bool] = _N.visor_ref.in_(surnamed.union(aliased))
    if with_date_of_birth:
        condition = condition & (_N.date_of_birth == bindparam("date_of_birth"))
    alias = (
        select(func.min(_AL.alias))
        .where(_AL.visor_ref == _N.visor_ref, _AL.alias_key == bindparam("name_key"))
        .scalar_subquery()
    )
    return (
        select(
            _N.visor_ref, _N.surname, _N.forenames, _N.date_of_birth, _N.team, _N.offender_manager,
            case((by_surname, None), else_=alias).label("matched_alias"),
            func.count().over().label("total"),
        )
        .where(condition)
        .order_by(_N.surname, _N.forenames, _N.date_of_birth, _N.visor_ref)
        .limit(CANDIDATE_LIMIT)
    )


# The requester, as the directory has them (access.requester_by_slack_user), read beside the view.
_REQUESTER = _OFFICERS.alias("requester")


def _cleared_in_sql(dialect: str, cleared_roles: frozenset[str]) -> ColumnElement[bool]:
    """Whether the requester's roles (a JSON list of role names) include one of `cleared_roles`:
    Requester.cleared_for_restricted, in the statement."""
    elements = "json_each" if dialect == "sqlite" else "json_array_elements_text"
    roles = getattr(func, elements)(_REQUESTER.c.roles).table_valued("value")
    return select(roles.c.value).where(roles.c.value.in_(_constants(sorted(cleared_roles)))).exists()


@cache
def _requester_and_view(dialect: str, cleared_roles: frozenset[str]) -> Select[Any]:
    """The requester (by Slack user id) and the nominals whose reference is the one asked (NULLs
    when none is), in one row each: one statement fewer for a lookup by reference. The personal
    columns and restricted markers are chosen in the statement by the requester's roles."""
    cleared = _cleared_in_sql(dialect, cleared_roles)
    return (
        _view_columns(cleared)
        .add_columns(
            _REQUESTER.c.id.label("requester_id"), _REQUESTER.c.name.label("requester_name"),
            _REQUESTER.c.team.label("requester_team"), _REQUESTER.c.roles.label("requester_roles"),
            cleared.label("requester_cleared"),
        )
        .select_from(_REQUESTER)
        .outerjoin(_NOMINALS, _compact_ref(_N.visor_ref) == bindparam("compact"))
        .outerjoin(_OFFICERS, _MANAGER)
        .where(_REQUESTER.c.slack_user_id == bindparam("slack_user_id"))
        .order_by(_N.visor_ref)
    )


@dataclass(frozen=True)
class ReadAhead:
    """A /flags query by reference as read beside its requester (requester_and_reference): the
    query, and the nominals the reference found, read for a requester `cleared` or not."""

    text: str
    query: Query
    cleared: bool
    rows: tuple[Row[Any], ...]


def _by_reference_query(text: str) -> Query | None:
    """The query in `text`, if it is one by reference (else the lookup reads as it always has)."""
    try:
        query = parse_query(text)
    except QueryError:
        return None
    return query if query is not None and query.kind == "identifier" else None


async def requester_and_reference(
    reads: Reads, slack_user_id: str, text: str,
    cleared_roles: Collection[str] = DEFAULT_CLEARED_ROLES,
) -> tuple[Requester | None, ReadAhead | None]:
    """access.requester_by_slack_user, and for a query by reference the nominals it finds, in
    the same statement (look_up_flags takes them as `read_ahead`). Should the statement's reading
    of the roles ever differ from Requester.cleared_for_restricted, nothing is read ahead."""
    query = _by_reference_query(text) if slack_user_id else None
    if query is None:
        return await requester_by_slack_user(reads, slack_user_id), None
    conn = await connection_of(reads)
    statement = _requester_and_view(conn.dialect.name, frozenset(cleared_roles))
    params = {"slack_user_id": slack_user_id, "compact": query.identifier.replace("-", "")}
    rows = await direct_read.fetch(conn, statement, params)
    if not rows:
        return None, None
    first = rows[0]
    roles = frozenset(str(r) for r in first.requester_roles or ())
    requester = Requester(first.requester_id, first.requester_name, first.requester_team, roles)
    cleared = requester.cleared_for_restricted(cleared_roles)
    if bool(first.requester_cleared) != cleared:
        return requester, None
    found = tuple(row for row in rows if row.visor_ref is not None)
    return requester, ReadAhead(text, query, cleared, found)


async def _by_identifier(
    conn: AsyncConnection, identifier: str, cleared: bool, read_ahead: ReadAhead | None = None
) -> list[Row[Any]]:
    compact = identifier.replace("-", "")
    if read_ahead is not None and read_ahead.cleared == cleared and read_ahead.query.identifier == identifier:
        found = list(read_ahead.rows)
    else:
        found = await direct_read.fetch(conn, _by_compact_ref(cleared), {"compact": compact})
    if found:
        return found
    key = pnc_key(identifier)
    if key is None:
        return []
    # Narrow by the serial number and check letter, then compare canonical forms: PNC IDs are
    # written both long (2003/0012345A) and short (03/12345A).
    tail = key.split("/", 1)[1]
    rows = await direct_read.fetch(conn, _by_pnc_tail(cleared), {"pattern": f"%{tail}"})
    return [n for n in rows if pnc_key(n.pnc_id or "") == key]


async def _by_surname(conn: AsyncConnection, query: Query) -> tuple[list[Row[Any]], int]:
    """A page of candidates in name order, and how many match in all."""
    params: dict[str, Any] = {"name_key": query.name_key}
    if query.date_of_birth is not None:
        params["date_of_birth"] = query.date_of_birth
    rows = await direct_read.fetch(conn, _by_surname_statement(query.date_of_birth is not None), params)
    return rows, int(rows[0].total) if rows else 0


def alert_line(alert: Alert) -> AlertLine:
    return AlertLine(
        alert_id=alert.id, kind=alert.kind, severity=alert.severity, state=alert.state,
        visor_ref=alert.visor_ref, team=alert.team, summary=alert.summary, owner=alert.owner,
        due_at=alert.due_at, opened_at=alert.opened_at, acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at,
    )


def urgency(line: AlertLine) -> tuple[Any, ...]:
    """Unacknowledged first, then by severity, then the soonest due, then the oldest."""
    far = line.opened_at.replace(year=9999)
    return (line.state != "open", SEVERITY_RANK.get(line.severity, 9), line.due_at or far, line.opened_at)


def _alert_from_json(values: Sequence[Any]) -> AlertLine:
    (alert_id, kind, severity, state, visor_ref, team, summary, owner, due_at, opened_at,
     acknowledged_by, acknowledged_at) = values
    opened = utc_from_json(opened_at)
    assert opened is not None
    return AlertLine(
        alert_id=alert_id, kind=kind, severity=severity, state=state, visor_ref=visor_ref, team=team,
        summary=summary, owner=owner, due_at=utc_from_json(due_at), opened_at=opened,
        acknowledged_by=acknowledged_by, acknowledged_at=utc_from_json(acknowledged_at),
    )


def _licence(row: Row[Any], facts: NominalFacts, tz: ZoneInfo) -> LicenceView:
    recall_type, issued_at, returned_at = row.recall or (None, None, None)
    returned = utc_from_json(returned_at)
    issued = utc_from_json(issued_at)
    at_large = recall_type is not None and returned is None and issued is not None
    if at_large and issued is not None:
        record = CustodyRecord(
            detention_started_on=row.detention_started_on, recall_returned_at=row.recall_returned_at,
            recall_issued_at=row.recall_issued_at,
        )
        open_recall = RecallFacts("", row.visor_ref, str(recall_type), issued)
        at_large = no_longer_at_large(open_recall, facts, record, tz) is None
    return LicenceView(
        on_licence=row.on_licence,
        licence_expiry=row.licence_expiry,
        recalled=at_large,
        recall_type=recall_type,
        recall_issued_at=utc_from_json(issued_at),
        returned_at=returned,
    )


def _contact(row: Row[Any]) -> OfficerContact:
    if row.om_id is None:
        return OfficerContact(row.offender_manager, "", "", "", "")
    return OfficerContact(row.om_id, row.om_name, row.om_email, row.om_slack_user_id or "", row.om_team)


def _strings(value: Any) -> tuple[str, ...]:
    """A JSON list of strings as read back: a list (a JSON column, or PostgreSQL's nested JSON), or
    its text (SQLite's json_array takes a JSON column's stored text as a string)."""
    if isinstance(value, str):
        value = json.loads(value)
    return tuple(str(v) for v in value or ())


def _order(values: Sequence[Any]) -> OrderView:
    order_id, kind, made_on, expires_on, prohibitions = values
    return OrderView(
        order_id=str(order_id), kind=str(kind), made_on=date.fromisoformat(str(made_on)),
        expires_on=date.fromisoformat(str(expires_on)) if expires_on is not None else None,
        prohibitions=_strings(prohibitions),
    )


def _personal(row: Row[Any], today: date) -> PersonalView:
    """The personal part, for a cleared requester. An order recorded active whose expiry date has
    passed is not shown as in force (rules.orders: its alert resolved when the day was over)."""
    orders = [_order(values) for values in row.orders or ()]
    in_force = [o for o in orders if o.expires_on is None or o.expires_on >= today]
    in_force.sort(key=lambda o: (o.expires_on is None, o.expires_on or today, o.order_id))
    return PersonalView(
        home_address=row.home_address or None, licence_conditions=_strings(row.licence_conditions),
        exclusion_zones=_strings(row.exclusion_zones), orders=tuple(in_force),
    )


def _view(
    row: Row[Any], ctx: Context, *, cleared: bool, sorted_markers: bool, matched_alias: str | None,
    history: NotificationHistory,
) -> FlagsView:
    markers = [MarkerView(code, label, bool(restricted)) for code, label, restricted in row.markers or ()]
    if not sorted_markers:
        markers.sort(key=lambda m: (m.restricted, m.code))
    facts = NominalFacts(
        visor_ref=row.visor_ref, team=row.team, offender_manager=row.offender_manager,
        registered=row.registered, no_fixed_abode=row.no_fixed_abode, release_date=row.release_date,
        last_notification_on=row.last_notification_on, mappa_level=row.mappa_level, area=row.area,
        relevant_date=row.relevant_date, notification_ends_on=row.notification_ends_on,
        risk_level=row.risk_level, category=row.category, visit_every_days=row.visit_every_days,
    )
    tz = ZoneInfo(ctx.settings.service.timezone)
    today = local_date(ctx.clock.now(), tz)
    visit = visits.next_visit(facts, row.last_visit_on, history, ctx.settings.triggers, tz, today)
    return FlagsView(
        visor_ref=row.visor_ref, surname=row.surname, forenames=row.forenames,
        date_of_birth=row.date_of_birth, pnc_id=row.pnc_id, category=row.category,
        mappa_level=row.mappa_level, risk_level=row.risk_level,
        registered=row.registered, no_fixed_abode=row.no_fixed_abode,
        next_notification=next_notification_due(facts, history, ctx.settings.triggers, tz, today),
        licence=_licence(row, facts, ZoneInfo(ctx.settings.service.timezone)), markers=tuple(markers),
        restricted_included=cleared,
        lead_agency=row.lead_agency, team=row.team, offender_manager=_contact(row),
        open_alerts=tuple(sorted((_alert_from_json(a) for a in row.alerts or ()), key=urgency)),
        matched_alias=matched_alias, last_visit_on=row.last_visit_on,
        next_visit_due=visit.due_on if visit is not None else None,
        description=row.description or None, personal=_personal(row, today) if cleared else None,
    )


def _candidates(rows: Sequence[Row[Any]]) -> tuple[Candidate, ...]:
    # A reference or PNC ID matching several nominals gives the view's rows, which have no alias.
    return tuple(
        Candidate(n.visor_ref, n.surname, n.forenames, n.date_of_birth, getattr(n, "matched_alias", None))
        for n in rows
    )


async def look_up_flags(
    reads: Reads,
    requester: Requester,
    text: str,
    ctx: Context,
    *,
    cleared_roles: Collection[str] = DEFAULT_CLEARED_ROLES,
    via: str = "slack",
    audit_sink: AuditSink | None = None,
    read_ahead: ReadAhead | None = None,
) -> FlagsOutcome:
    """Answer a /flags query for `requester` and audit it: in the caller's transaction, or through
    `audit_sink` (a group commit, when `reads` only reads; needed when `reads` is a connection
    rather than a session: store.lookup_connections). Another team's nominal needs a
    reason (`reason: ...` in `text`) unless the requester has a force-wide role
    (access.FORCE_WIDE_ROLES); without one the answer is ReasonRequired and shows nothing.
    `read_ahead`: what requester_and_reference read for this `text` in this transaction."""
    if audit_sink is None:
        if not isinstance(reads, AsyncSession):
            raise TypeError("a lookup on a connection needs an audit_sink")
        audit_sink = session_sink(reads, ctx)
    audit = _Audit(audit_sink, requester, via)
    if read_ahead is not None and read_ahead.text != text:
        read_ahead = None
    try:
        query = read_ahead.query if read_ahead is not None else parse_query(text)
    except QueryError as exc:
        asked = clean_text(split_reason(text)[0])
        await audit.write(asked, "lookup not run: the query or its reason could not be read", {
            "outcome": "unreadable",
        })
        return Unreadable(str(exc))
    if query is None:
        return Usage()
    conn = await connection_of(reads)
    cleared = requester.cleared_for_restricted(cleared_roles)
    matched_alias: str | None = None
    by_alias: list[str] = []  # the references found by an alias rather than the surname
    if query.kind == "identifier":
        nominals = await _by_identifier(conn, query.identifier, cleared, read_ahead)
        total = len(nominals)
    else:
        nominals, total = await _by_surname(conn, query)
        by_alias = [n.visor_ref for n in nominals if n.matched_alias is not None]
        if total == 1:
            matched_alias = nominals[0].matched_alias
            one = {"visor_ref": nominals[0].visor_ref}
            nominals = await direct_read.fetch(conn, _by_visor_ref(cleared), one)
    details: dict[str, Any] = {"query_kind": query.kind if query.date_of_birth is None else "surname_dob"}
    if query.reason is not None:
        details["reason"] = query.reason
    if by_alias:
        # That an alias matched, and for whom; never the alias itself: the audit log holds no names.
        details["matched_by"] = "alias" if len(by_alias) == len(nominals) else "surname_and_alias"
        if total > 1:
            details["visor_refs_matched_by_alias"] = by_alias
    if not nominals:
        details.update(outcome="not_found", visor_refs_shown=[])
        await audit.write(query.text, query.reason or "lookup that found no nominal", details)
        return NotFound(query)
    if total > 1:
        # Need to know holds for a list as for one match: another team's nominal is listed only
        # with a reason (or a force-wide role); without one it is counted, never named.
        listed = [
            n for n in nominals
            if query.reason is not None or not requester.needs_reason_for(n.team, n.offender_manager)
        ]
        shown = [n.visor_ref for n in listed]
        withheld = len(nominals) - len(listed)
        details.update(outcome="several", visor_refs_shown=shown, total=total)
        if withheld:
            details["withheld_need_to_know"] = withheld
        purpose = query.reason or "name search: candidates listed for the requester to pick one"
        await audit.write(query.text, purpose, details, nominals=[n.visor_ref for n in nominals])
        return Several(query, _candidates(listed), total, withheld)
    row = nominals[0]
    if query.reason is None and requester.needs_reason_for(row.team, row.offender_manager):
        details.update(outcome="reason_required", visor_refs_shown=[])
        await audit.write(
            query.text, "refused: another team's nominal and no reason given (need to know)", details,
            nominals=[row.visor_ref], action="flags.reason_required",
        )
        return ReasonRequired(query)
    view = await _found_view(reads, conn, row, ctx, cleared=cleared, matched_alias=matched_alias)
    basis = _basis(requester, row, query)
    details.update(
        outcome="found", need_to_know=basis, visor_refs_shown=[view.visor_ref],
        restricted_markers_shown=cleared,
        restricted_markers_shown_count=sum(m.restricted for m in view.markers),
        markers_shown=len(view.markers), alerts_shown=[a.alert_id for a in view.open_alerts],
        unlawfully_at_large=view.licence.unlawfully_at_large,
        # That the address, conditions, zones and orders were shown; never what they say.
        personal_data_shown=view.personal is not None,
    )
    await audit.write(query.text, query.reason or _BASIS_PURPOSE[basis], details, nominals=[view.visor_ref])
    return Found(view, query.reason)


async def _found_view(
    reads: Reads, conn: AsyncConnection, row: Row[Any], ctx: Context, *, cleared: bool,
    matched_alias: str | None,
) -> FlagsView:
    # The same facts as the notification and visit rules (custody, changes, returns), so that
    # the next notification and visit shown and the alerts never disagree; read only when there
    # are any.
    history = (
        await _history(reads, conn, row.visor_ref, ZoneInfo(ctx.settings.service.timezone))
        if row.more_facts and (row.registered or row.visit_every_days is not None)
        else NotificationHistory(last_full_on=row.last_full_on)
    )
    return _view(
        row, ctx, cleared=cleared, sorted_markers=sorts_in_sql(conn.dialect.name),
        matched_alias=matched_alias, history=history,
    )


async def _history(reads: Reads, conn: AsyncConnection, visor_ref: str, tz: ZoneInfo) -> NotificationHistory:
    """triggers.load.history (written for sessions) in `reads`: on a connection, in a session
    bound to it for these reads only."""
    if isinstance(reads, AsyncSession):
        return await load.history(reads, visor_ref, tz)
    async with AsyncSession(bind=conn) as session:
        return await load.history(session, visor_ref, tz)


# Why a lookup without a stated reason was allowed, as the audit entry's purpose.
_BASIS_PURPOSE = {
    "own_case": "lookup of a nominal the requester's own team manages",
    "force_wide_role": "lookup by a force-wide role (supervisor, SPOC, control room or admin)",
}


def _basis(requester: Requester, row: Row[Any], query: Query) -> str:
    """On what need to know the flags were shown: own_case, force_wide_role or reason_given."""
    if requester.owns_case(row.team, row.offender_manager):
        return "own_case"
    if requester.force_wide:
        return "force_wide_role"
    assert query.reason is not None  # look_up_flags refused it otherwise
    return "reason_given"


@dataclass(frozen=True)
class _Audit:
    sink: AuditSink
    requester: Requester
    via: str

    async def write(
        self, asked: str, purpose: str, details: dict[str, Any], *, nominals: Sequence[str] = (),
        action: str = "flags.lookup",
    ) -> None:
        await self.sink(
            actor=self.requester.officer_id, action=action, subject=asked,
            purpose=purpose, nominals=nominals,
            details={"roles": sorted(self.requester.roles), "via": self.via, **details},
        )
