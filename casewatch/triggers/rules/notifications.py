"""Missed notifications (Sexual Offences Act 2003 Part 2): when each notification falls due,
`notification.due_soon` before it and `notification.missed` once the due day is over.

Clocks (settings.triggers):
- initial: release_date + initial_notification_days, while no full notification (initial,
  periodic or change) has been received on or after the release date;
- periodic: the last full notification + periodic_notification_years (29 February -> 28
  February in a common year; see clocks.add_years); not run while the initial one is pending;
- weekly, for no fixed abode: the last notification of any kind + weekly_notification_days.

Travel is not a clock here: travel we can check (a border check) is matched by the border rule,
which raises unnotified travel, and late notice is flagged by rules.travel_notice.

The subject is "<kind>:<due date>", so each cycle is its own alert and a new cycle a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from casewatch.model.alerts import AlertSpec, Severity
from casewatch.model.clocks import add_years, end_of_day, local_date
from casewatch.model.facts import NominalFacts, NotificationHistory
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import NOTHING, Desired, LiveAlert, RuleResult

DUE_SOON = "notification.due_soon"
MISSED = "notification.missed"
KINDS = (DUE_SOON, MISSED)

DueKind = Literal["initial", "periodic", "weekly"]


@dataclass(frozen=True)
class Due:
    kind: DueKind
    due_on: date

    @property
    def subject(self) -> str:
        return f"{self.kind}:{self.due_on.isoformat()}"


def _latest(a: date | None, b: date | None) -> date | None:
    if a is None or b is None:
        return b if a is None else a
    return max(a, b)


def dues(nominal: NominalFacts, history: NotificationHistory, settings: TriggerPolicy) -> list[Due]:
    """Every notification the nominal owes next, with its due date (none if not registered)."""
    if not nominal.registered:
        return []
    last_full = _latest(nominal.last_notification_on, history.last_full_on)
    last_any = _latest(nominal.last_notification_on, history.last_any_on)
    found: list[Due] = []
    release = nominal.release_date
    if release is not None and (last_full is None or last_full < release):
        found.append(Due("initial", release + timedelta(days=settings.initial_notification_days)))
    elif last_full is not None:
        found.append(Due("periodic", add_years(last_full, settings.periodic_notification_years)))
    if nominal.no_fixed_abode and last_any is not None:
        found.append(Due("weekly", last_any + timedelta(days=settings.weekly_notification_days)))
    return found


def quiet_after(today: date, settings: TriggerPolicy) -> date:
    """The newest full notification after which a nominal owes nothing on the periodic clock
    today, not even a reminder: if it was made after this day, the periodic due date is beyond
    today + the reminder lead. A scan reads only the nominals who may owe something (this, or
    a release date, or no fixed abode: scan.py), so this must never be too early.

    Proof of the margin: add_years never moves a day later and moves it at most one day
    earlier (29 February), and keeps order; so last_full > add_years(today + lead + 2, -N)
    gives add_years(last_full, N) >= today + lead + 1."""
    horizon = today + timedelta(days=settings.notification_reminder_days + 2)
    return add_years(horizon, -settings.periodic_notification_years)


def _lead_days(due: Due, settings: TriggerPolicy) -> int:
    if due.kind == "weekly":
        return settings.weekly_notification_reminder_days
    return settings.notification_reminder_days


def _spec(
    nominal: NominalFacts, due: Due, today: date, settings: TriggerPolicy, tz: ZoneInfo
) -> AlertSpec | None:
    """`today`: the local date now. A due day is missed once it is over (now >= end_of_day, i.e.
    today is later), and reminded from the start of the day `lead` days before it."""
    owner = nominal.offender_manager or None
    where = f"{nominal.visor_ref}, due {due.due_on.isoformat()}"
    severity: Severity
    if today > due.due_on:
        kind, severity, summary = MISSED, "high", f"Missed {due.kind} notification: {where}"
    elif today >= due.due_on - timedelta(days=_lead_days(due, settings)):
        # The initial and weekly clocks run in days, so their reminders matter more.
        kind, severity = DUE_SOON, "low" if due.kind == "periodic" else "medium"
        summary = f"{due.kind.capitalize()} notification due soon: {where}"
    else:
        return None
    return AlertSpec(
        kind=kind, severity=severity, visor_ref=nominal.visor_ref, team=nominal.team,
        subject=due.subject, summary=summary, owner=owner, due_at=end_of_day(due.due_on, tz),
        details={"notification": due.kind, "due_on": due.due_on.isoformat()},
    )


def evaluate(
    nominal: NominalFacts | None,
    history: NotificationHistory,
    live: Sequence[LiveAlert],
    now: datetime,
    settings: TriggerPolicy,
    tz: ZoneInfo,
) -> RuleResult:
    """`live`: the nominal's live notification alerts. Opens what is due soon or missed now;
    resolves every live one that is not (a notification came, or a reminder became missed)."""
    desired = Desired()
    if nominal is not None:
        today = local_date(now, tz)
        for due in dues(nominal, history, settings):
            spec = _spec(nominal, due, today, settings, tz)
            if spec is not None:
                desired.want(spec)
    if not live and not desired.specs:
        return NOTHING
    return desired.against(
        [a for a in live if a.kind in KINDS],
        "no longer due: notification received, or the reminder became missed",
    )
