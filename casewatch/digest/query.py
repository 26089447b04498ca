"""Reading what the teams' digests need from the store (a handful of queries, no N+1; what all
teams read from the same rows is read once for all of them: load_shared)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.digest.build import (
    HIGH_RISK,
    LIVE,
    ActionRow,
    AlertRow,
    DigestInput,
    OfficerCases,
    RecallRow,
)
from casewatch.store.models import Action, Alert, Nominal, Officer, Recall

RECALL_KIND = "recall.issued"


@dataclass(frozen=True)
class SharedReads:
    """What the digests of several teams read from the same rows, read once for all of them:
    the open actions due by the horizon (by team), the caseloads (by team) and the officers'
    names. The actions' team is the nominal's or else the owner's, which no index can serve, so
    reading them per team scanned every open action once a team (142 ms a team of 50 with 1M
    actions on SQLite; bench/README.md)."""

    horizon: date
    actions: dict[str, list[ActionRow]]
    caseloads: dict[str, list[OfficerCases]]
    names: dict[str, str]


def horizon_of(at: datetime, tz: ZoneInfo, due_days: int) -> date:
    return at.astimezone(tz).date() + timedelta(days=due_days)


async def load_shared(
    session: AsyncSession, team_ids: Sequence[str], at: datetime, tz: ZoneInfo, due_days: int
) -> SharedReads:
    horizon = horizon_of(at, tz, due_days)
    teams = sorted(set(team_ids))
    team_of_action = func.coalesce(Nominal.team, Officer.team)
    actions: dict[str, list[ActionRow]] = {team: [] for team in teams}
    for team, action_id, visor_ref, owner, due_on in (
        await session.execute(
            select(team_of_action, Action.action_id, Action.visor_ref, Action.owner, Action.due_on)
            .outerjoin(Nominal, Nominal.visor_ref == Action.visor_ref)
            .outerjoin(Officer, Officer.id == Action.owner)
            .where(Action.status == "open", Action.due_on <= horizon, team_of_action.in_(teams))
            .order_by(Action.due_on, Action.action_id)
        )
    ).all():
        actions[team].append(ActionRow(action_id, visor_ref, owner, due_on))
    names = {str(i): str(n) for i, n in (await session.execute(select(Officer.id, Officer.name))).all()}
    high = func.sum(case((Nominal.risk_level.in_(HIGH_RISK), 1), else_=0))
    caseloads: dict[str, list[OfficerCases]] = {team: [] for team in teams}
    for team, officer, total, high_count in (
        await session.execute(
            select(Nominal.team, Nominal.offender_manager, func.count(), high)
            .where(Nominal.team.in_(teams))
            .group_by(Nominal.team, Nominal.offender_manager)
        )
    ).all():
        caseloads[team].append(
            OfficerCases(str(officer), names.get(str(officer), ""), int(total), int(high_count or 0))
        )
    return SharedReads(horizon, actions, caseloads, names)


async def load_digest_input(
    session: AsyncSession,
    team_id: str,
    team_name: str,
    at: datetime,
    tz: ZoneInfo,
    due_days: int,
    shared: SharedReads | None = None,
) -> DigestInput:
    """One team's input; `shared` (load_shared, read for this team among others) saves reading
    the actions, caseloads and names again."""
    if shared is None or shared.horizon != horizon_of(at, tz, due_days) or team_id not in shared.actions:
        shared = await load_shared(session, [team_id], at, tz, due_days)
    alerts = [
        _alert_row(a)
        for a in (
            await session.execute(
                select(Alert)
                .where(
                    Alert.team == team_id,
                    or_(Alert.state.in_(LIVE), Alert.opened_at > at - timedelta(hours=24)),
                )
                .order_by(Alert.opened_at, Alert.id)
            )
        ).scalars()
    ]
    recall_alerts = {a.subject: a.id for a in await _live_recall_alerts(session, team_id)}
    recalls = [
        RecallRow(visor_ref, recall_type, issued_at, recall_alerts.get(event_id))
        for visor_ref, recall_type, issued_at, event_id in (
            await session.execute(
                select(Recall.visor_ref, Recall.recall_type, Recall.issued_at, Recall.event_id)
                .outerjoin(Nominal, Nominal.visor_ref == Recall.visor_ref)
                .where(
                    Recall.returned_at.is_(None),
                    or_(Nominal.team == team_id, Recall.event_id.in_(list(recall_alerts) or [""])),
                )
                .order_by(Recall.issued_at, Recall.visor_ref)
            )
        ).all()
    ]
    return DigestInput(
        team_id, team_name, alerts, list(shared.actions[team_id]), recalls,
        list(shared.caseloads[team_id]), shared.names,
    )


async def _live_recall_alerts(session: AsyncSession, team_id: str) -> list[Alert]:
    return list(
        (
            await session.execute(
                select(Alert).where(Alert.team == team_id, Alert.kind == RECALL_KIND, Alert.state.in_(LIVE))
            )
        ).scalars()
    )


def _alert_row(alert: Alert) -> AlertRow:
    return AlertRow(
        id=alert.id,
        kind=alert.kind,
        severity=alert.severity,
        visor_ref=alert.visor_ref,
        state=alert.state,
        opened_at=alert.opened_at,
        owner=alert.owner,
        due_on=_due_on(alert.details),
        acknowledged_by=alert.acknowledged_by,
        has_outcome=bool((alert.acknowledged_outcome or "").strip()),
    )


def _due_on(details: dict[str, Any] | None) -> date | None:
    value = (details or {}).get("due_on")
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None
