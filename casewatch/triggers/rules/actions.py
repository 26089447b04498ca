"""Overdue actions (MAPP meeting and risk management plan actions): `action.due_soon` from
action_reminder_days before the due date, `action.overdue` once the due day is over, its severity
stepping up with the days overdue (`action_overdue_severity`, default medium, high from day 28;
a step up re-notifies: reconcile.apply), to the action's owner; both go when the action is done.
An acknowledged overdue alert stays until then, and repeats (alerts.reminders)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from casewatch.model.alerts import AlertSpec, Severity, severity_for_days
from casewatch.model.clocks import end_of_day, local_date, start_of_day
from casewatch.model.facts import ActionFacts
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import Desired, LiveAlert, RuleResult

DUE_SOON = "action.due_soon"
OVERDUE = "action.overdue"
KINDS = (DUE_SOON, OVERDUE)


def team_for(action: ActionFacts, settings: TriggerPolicy) -> str:
    """The nominal's team; the owner's team if the nominal is not known yet."""
    if action.nominal_team is not None:
        return action.nominal_team
    if action.owner_team is not None:
        return action.owner_team
    return settings.unmatched_team


def wanted(
    action: ActionFacts, now: datetime, settings: TriggerPolicy, tz: ZoneInfo
) -> AlertSpec | None:
    if action.status != "open":
        return None
    overdue_at = end_of_day(action.due_on, tz)
    where = f"{action.visor_ref}, due {action.due_on.isoformat()}"
    severity: Severity
    details: dict[str, object] = {"action_id": action.action_id, "due_on": action.due_on.isoformat()}
    if now >= overdue_at:
        late_days = (local_date(now, tz) - action.due_on).days
        kind = OVERDUE
        # The steps say day 1 (config validation), and the due day is over: late_days >= 1.
        severity = severity_for_days(late_days, settings.action_overdue_steps) or "medium"
        summary = f"Action {action.action_id} overdue: {where}"
        details["days_overdue"] = late_days
    elif now >= start_of_day(action.due_on - timedelta(days=settings.action_reminder_days), tz):
        kind, severity = DUE_SOON, "low"
        summary = f"Action {action.action_id} due soon: {where}"
    else:
        return None
    return AlertSpec(
        kind=kind, severity=severity, visor_ref=action.visor_ref, team=team_for(action, settings),
        subject=action.action_id, summary=summary, owner=action.owner, due_at=overdue_at,
        details=details,
    )


def evaluate(
    action: ActionFacts | None,
    live: Sequence[LiveAlert],
    now: datetime,
    settings: TriggerPolicy,
    tz: ZoneInfo,
) -> RuleResult:
    """`live`: the live action alerts whose subject is this action's id. A missing action (None)
    wants nothing, so its alerts resolve."""
    desired = Desired()
    spec = wanted(action, now, settings, tz) if action is not None else None
    if spec is not None:
        desired.want(spec)
    reason = "action done" if action is not None and action.status == "done" else "no longer due"
    return desired.against([a for a in live if a.kind in KINDS], reason)
