"""The App Home (issue 15): what one person has to act on, read afresh each time it is opened.

An officer sees the live alerts they own, their open actions and the home visits due on their
alerts (`visit.due` / `visit.overdue`); a supervisor or SPOC sees the team's, the open ones
oldest first, then the acknowledged ones. An acknowledged alert of a kind that acknowledging
closes (closed_by_acknowledgement, from the registry: risk.changed, area moves, border kinds...) stays
"acknowledged" for ever with nothing left to do, so it is left out: else they would fill the view
and hide new alerts.
Only what lets someone act reaches the view (alert id, kind, severity, ViSOR reference, when
opened, when due): no names, no addresses, no summaries. Audited like /tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.audit import record
from casewatch.context import Context
from casewatch.lookup.access import Requester
from casewatch.lookup.flags import alert_line, urgency
from casewatch.lookup.tasks import service_today
from casewatch.lookup.views import ActionLine, AlertLine
from casewatch.model.alerts import ALERT_KINDS, LIVE_STATES
from casewatch.store.models import Action, Alert, Nominal, Officer

TEAM_ROLES = frozenset({"supervisor", "spoc"})
VISIT_KINDS = ("visit.due", "visit.overdue")
# Slack allows 100 blocks in a Home tab: each alert and visit is one, actions go ten to a block.
ALERT_LIMIT = 40
VISIT_LIMIT = 15
ACTION_LIMIT = 30


@dataclass(frozen=True)
class HomeView:
    scope: str  # "own" or "team"
    team: str
    as_of: datetime
    alerts: tuple[AlertLine, ...]
    visits: tuple[AlertLine, ...]
    actions: tuple[ActionLine, ...]
    more_alerts: int = 0  # not listed (beyond the limit)
    more_visits: int = 0
    more_actions: int = 0


def sees_team(requester: Requester) -> bool:
    return not requester.roles.isdisjoint(TEAM_ROLES)


def _alert_scope(requester: Requester) -> ColumnElement[bool]:
    if sees_team(requester):
        return Alert.team == requester.team
    return Alert.owner == requester.officer_id


def _action_scope(requester: Requester) -> ColumnElement[bool]:
    if sees_team(requester):
        members = select(Officer.id).where(Officer.team == requester.team)
        team_cases = select(Nominal.visor_ref).where(Nominal.team == requester.team)
        return or_(Action.owner.in_(members), Action.visor_ref.in_(team_cases))
    return Action.owner == requester.officer_id


def closed_by_acknowledgement() -> frozenset[str]:
    """The kinds an acknowledgement closes (model.alerts.ALERT_KINDS: their `resolved_when` says
    "acknowledged"): once acknowledged nothing is left to do, though the alert stays "acknowledged"."""
    return frozenset(k.kind for k in ALERT_KINDS.values() if "acknowledged" in k.resolved_when)


def _still_to_act_on() -> ColumnElement[bool]:
    """Open, or acknowledged with something still to do (not closed by the acknowledgement)."""
    return or_(
        Alert.state == "open",
        and_(Alert.state == "acknowledged", Alert.kind.not_in(sorted(closed_by_acknowledgement()))),
    )


def _oldest_first(line: AlertLine) -> tuple[bool, datetime, str]:
    """Open before acknowledged, then the oldest first."""
    return line.state != "open", line.opened_at, line.alert_id


async def load_home(
    session: AsyncSession, requester: Requester, ctx: Context, *, via: str = "slack"
) -> HomeView:
    team = sees_team(requester)
    rows = (
        await session.execute(
            select(Alert).where(Alert.state.in_(LIVE_STATES), _still_to_act_on(), _alert_scope(requester))
        )
    ).scalars()
    lines = sorted((alert_line(a) for a in rows), key=_oldest_first if team else urgency)
    alerts = [a for a in lines if a.kind not in VISIT_KINDS]
    visits = [a for a in lines if a.kind in VISIT_KINDS]
    today = service_today(ctx)
    actions = [
        ActionLine(a.action_id, a.visor_ref, a.summary, a.owner, a.due_on, a.due_on < today)
        for a in (
            await session.execute(
                select(Action)
                .where(Action.status == "open", _action_scope(requester))
                .order_by(Action.due_on, Action.action_id)
            )
        ).scalars()
    ]
    view = HomeView(
        scope="team" if team else "own",
        team=requester.team,
        as_of=ctx.clock.now(),
        alerts=tuple(alerts[:ALERT_LIMIT]),
        visits=tuple(visits[:VISIT_LIMIT]),
        actions=tuple(actions[:ACTION_LIMIT]),
        more_alerts=max(0, len(alerts) - ALERT_LIMIT),
        more_visits=max(0, len(visits) - VISIT_LIMIT),
        more_actions=max(0, len(actions) - ACTION_LIMIT),
    )
    shown = [*view.alerts, *view.visits]
    refs = sorted({a.visor_ref for a in shown}.union(a.visor_ref for a in view.actions))
    whose = "their team's" if view.scope == "team" else "their own"
    await record(
        session,
        ctx,
        actor=requester.officer_id,
        action="home.viewed",
        subject=view.scope,
        purpose=f"App Home: {whose} open alerts, visits and actions listed for the requester to act on",
        details={
            "team": requester.team,
            "via": via,
            "alerts_shown": [a.alert_id for a in shown],
            "actions_shown": [a.action_id for a in view.actions],
            "visor_refs_shown": refs,
        },
        nominals=refs,
    )
    return view
