"""/tasks: the requester's live alerts and open actions, most urgent first; a supervisor sees the
team's. Audited like every other look at case data."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.audit import record
from casewatch.context import Context
from casewatch.lookup.access import Requester
from casewatch.lookup.flags import alert_line, urgency
from casewatch.lookup.views import ActionLine, TasksView
from casewatch.model.alerts import LIVE_STATES
from casewatch.store.models import Action, Alert, Nominal, Officer

TASK_LIMIT = 20


def service_today(ctx: Context) -> date:
    return ctx.clock.now().astimezone(ZoneInfo(ctx.settings.service.timezone)).date()


def _alert_scope(requester: Requester) -> ColumnElement[bool]:
    if requester.is_supervisor:
        return Alert.team == requester.team
    managed = select(Nominal.visor_ref).where(Nominal.offender_manager == requester.officer_id)
    # Unowned alerts fall to the nominal's offender manager.
    return or_(
        Alert.owner == requester.officer_id,
        Alert.owner.is_(None) & Alert.visor_ref.in_(managed),
    )


def _action_scope(requester: Requester) -> ColumnElement[bool]:
    if requester.is_supervisor:
        members = select(Officer.id).where(Officer.team == requester.team)
        team_cases = select(Nominal.visor_ref).where(Nominal.team == requester.team)
        return or_(Action.owner.in_(members), Action.visor_ref.in_(team_cases))
    return Action.owner == requester.officer_id


async def list_tasks(
    session: AsyncSession, requester: Requester, ctx: Context, *, limit: int = TASK_LIMIT, via: str = "slack"
) -> TasksView:
    alerts_stmt = select(Alert).where(Alert.state.in_(LIVE_STATES), _alert_scope(requester))
    alerts = sorted((alert_line(a) for a in (await session.execute(alerts_stmt)).scalars()), key=urgency)
    actions_stmt = (
        select(Action)
        .where(Action.status == "open", _action_scope(requester))
        .order_by(Action.due_on, Action.action_id)
    )
    today = service_today(ctx)
    actions = [
        ActionLine(a.action_id, a.visor_ref, a.summary, a.owner, a.due_on, a.due_on < today)
        for a in (await session.execute(actions_stmt)).scalars()
    ]
    view = TasksView(
        scope="team" if requester.is_supervisor else "own",
        team=requester.team,
        alerts=tuple(alerts[:limit]),
        actions=tuple(actions[:limit]),
        more_alerts=max(0, len(alerts) - limit),
        more_actions=max(0, len(actions) - limit),
    )
    shown = sorted({a.visor_ref for a in view.alerts}.union(a.visor_ref for a in view.actions))
    whose = "their team's" if view.scope == "team" else "their own"
    await record(
        session, ctx, actor=requester.officer_id, action="tasks.list", subject=view.scope,
        purpose=f"/tasks: {whose} open alerts and actions listed for the requester to act on",
        details={
            "team": requester.team, "via": via,
            "alerts_shown": [a.alert_id for a in view.alerts],
            "actions_shown": [a.action_id for a in view.actions],
            "visor_refs_shown": shown,
        },
        nominals=shown,
    )
    return view
