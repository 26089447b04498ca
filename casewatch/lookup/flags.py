"""/flags: find a nominal by ViSOR reference, PNC ID, or surname (and date of birth), and show
what an officer needs at once, limited to what the requester may see. Every lookup is audited."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.alerts.lifecycle import LIVE_STATES, SEVERITY_RANK
from casewatch.audit import record
from casewatch.context import Context
from casewatch.lookup.access import DEFAULT_CLEARED_ROLES, Requester
from casewatch.lookup.due import next_due_for
from casewatch.lookup.query import Query, QueryError, clean_text, parse_query, pnc_key
from casewatch.lookup.views import (
    AlertLine,
    Candidate,
    FlagsView,
    LicenceView,
    MarkerView,
    OfficerContact,
)
from casewatch.store.models import Alert, Marker, Nominal, Officer, Recall

CANDIDATE_LIMIT = 10


@dataclass(frozen=True)
class Found:
    view: FlagsView


@dataclass(frozen=True)
class Several:
    query: Query
    candidates: tuple[Candidate, ...]
    total: int


@dataclass(frozen=True)
class NotFound:
    query: Query


@dataclass(frozen=True)
class Unreadable:
    message: str


@dataclass(frozen=True)
class Usage:
    """Nothing was asked: show how to ask."""


FlagsOutcome = Found | Several | NotFound | Unreadable | Usage


def _sql_string(value: str) -> Any:
    # A constant in the SQL text, not a bound parameter: the expression then matches the
    # expression indexes on nominals (store.models), which a parameter would not.
    return literal_column("'" + value.replace("'", "''") + "'")


def _folded(column: Any) -> ColumnElement[str]:
    """The SQL twin of query.name_key for a stored surname key (ix_nominals_surname_folded)."""
    folded: ColumnElement[str] = func.lower(column)
    for ch in (" ", "-", "'", ".", "\u2019"):
        folded = func.replace(folded, _sql_string(ch), _sql_string(""))
    return folded


def _compact_ref(column: Any) -> ColumnElement[str]:
    """A ViSOR reference upper-cased without hyphens (ix_nominals_visor_ref_compact)."""
    return func.replace(func.upper(column), _sql_string("-"), _sql_string(""))


async def _by_identifier(session: AsyncSession, identifier: str) -> list[Nominal]:
    compact = identifier.replace("-", "")
    stmt = select(Nominal).where(_compact_ref(Nominal.visor_ref) == compact)
    found = list((await session.execute(stmt)).scalars())
    if found:
        return found
    key = pnc_key(identifier)
    if key is None:
        return []
    # Narrow by the serial number and check letter, then compare canonical forms: PNC IDs are
    # written both long (2003/0012345A) and short (03/12345A).
    tail = key.split("/", 1)[1]
    stmt = select(Nominal).where(func.upper(Nominal.pnc_id).like(f"%{tail}"))
    return [n for n in (await session.execute(stmt)).scalars() if pnc_key(n.pnc_id or "") == key]


async def _by_surname(session: AsyncSession, query: Query) -> tuple[list[Nominal], int]:
    condition = _folded(Nominal.surname_key) == query.name_key
    if query.date_of_birth is not None:
        condition = condition & (Nominal.date_of_birth == query.date_of_birth)
    counted = select(func.count()).select_from(Nominal).where(condition)
    total = int((await session.execute(counted)).scalar_one())
    stmt = (
        select(Nominal)
        .where(condition)
        .order_by(Nominal.surname, Nominal.forenames, Nominal.date_of_birth, Nominal.visor_ref)
        .limit(CANDIDATE_LIMIT)
    )
    return list((await session.execute(stmt)).scalars()), total


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


async def live_alerts_for(session: AsyncSession, visor_ref: str) -> list[AlertLine]:
    stmt = select(Alert).where(Alert.visor_ref == visor_ref, Alert.state.in_(LIVE_STATES))
    return sorted((alert_line(a) for a in (await session.execute(stmt)).scalars()), key=urgency)


async def contact_for(session: AsyncSession, officer_id: str) -> OfficerContact:
    officer = await session.get(Officer, officer_id) if officer_id else None
    if officer is None:
        return OfficerContact(officer_id, "", "", "", "")
    return OfficerContact(officer.id, officer.name, officer.email, officer.slack_user_id or "", officer.team)


async def _licence(session: AsyncSession, nominal: Nominal) -> LicenceView:
    stmt = (
        select(Recall)
        .where(Recall.visor_ref == nominal.visor_ref)
        .order_by(Recall.returned_at.is_not(None), Recall.issued_at.desc())
        .limit(1)
    )
    recall = (await session.execute(stmt)).scalar_one_or_none()
    return LicenceView(
        on_licence=nominal.on_licence,
        licence_expiry=nominal.licence_expiry,
        recalled=recall is not None and recall.returned_at is None,
        recall_type=recall.recall_type if recall else None,
        recall_issued_at=recall.issued_at if recall else None,
        returned_at=recall.returned_at if recall else None,
    )


async def build_view(
    session: AsyncSession, nominal: Nominal, ctx: Context, *, cleared: bool
) -> FlagsView:
    markers_stmt = select(Marker).where(Marker.visor_ref == nominal.visor_ref)
    if not cleared:
        markers_stmt = markers_stmt.where(Marker.restricted.is_(False))
    markers = tuple(
        MarkerView(m.code, m.label, m.restricted)
        for m in (await session.execute(markers_stmt.order_by(Marker.restricted, Marker.code))).scalars()
    )
    due = await next_due_for(session, nominal, ctx.settings.triggers)
    return FlagsView(
        visor_ref=nominal.visor_ref, surname=nominal.surname, forenames=nominal.forenames,
        date_of_birth=nominal.date_of_birth, pnc_id=nominal.pnc_id, category=nominal.category,
        mappa_level=nominal.mappa_level, risk_level=nominal.risk_level,
        registered=nominal.registered, no_fixed_abode=nominal.no_fixed_abode,
        next_notification=due, licence=await _licence(session, nominal), markers=markers,
        restricted_included=cleared, lead_agency=nominal.lead_agency, team=nominal.team,
        offender_manager=await contact_for(session, nominal.offender_manager),
        open_alerts=tuple(await live_alerts_for(session, nominal.visor_ref)),
    )


def _candidates(nominals: Sequence[Nominal]) -> tuple[Candidate, ...]:
    return tuple(Candidate(n.visor_ref, n.surname, n.forenames, n.date_of_birth) for n in nominals)


async def look_up_flags(
    session: AsyncSession,
    requester: Requester,
    text: str,
    ctx: Context,
    *,
    cleared_roles: Collection[str] = DEFAULT_CLEARED_ROLES,
    via: str = "slack",
) -> FlagsOutcome:
    """Answer a /flags query for `requester` and audit it in the caller's transaction."""
    try:
        query = parse_query(text)
    except QueryError as exc:
        await _audit(session, ctx, requester, clean_text(text), via, {"outcome": "unreadable"})
        return Unreadable(str(exc))
    if query is None:
        return Usage()
    if query.kind == "identifier":
        nominals = await _by_identifier(session, query.identifier)
        total = len(nominals)
    else:
        nominals, total = await _by_surname(session, query)
    details: dict[str, Any] = {"query_kind": query.kind if query.date_of_birth is None else "surname_dob"}
    outcome: FlagsOutcome
    if not nominals:
        outcome = NotFound(query)
        details.update(outcome="not_found", visor_refs_shown=[])
    elif total > 1:
        outcome = Several(query, _candidates(nominals), total)
        details.update(outcome="several", visor_refs_shown=[n.visor_ref for n in nominals], total=total)
    else:
        cleared = requester.cleared_for_restricted(cleared_roles)
        view = await build_view(session, nominals[0], ctx, cleared=cleared)
        outcome = Found(view)
        details.update(
            outcome="found", visor_refs_shown=[view.visor_ref], restricted_markers_shown=cleared,
            restricted_markers_shown_count=sum(m.restricted for m in view.markers),
            markers_shown=len(view.markers), alerts_shown=[a.alert_id for a in view.open_alerts],
            unlawfully_at_large=view.licence.unlawfully_at_large,
        )
    await _audit(session, ctx, requester, query.text, via, details)
    return outcome


async def _audit(
    session: AsyncSession, ctx: Context, requester: Requester, asked: str, via: str,
    details: dict[str, Any],
) -> None:
    await record(
        session, ctx, actor=requester.officer_id, action="flags.lookup", subject=asked,
        purpose=f"{via} /flags", details={"roles": sorted(requester.roles), **details},
    )
