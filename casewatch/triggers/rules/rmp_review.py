"""Risk management plan reviews (`rmp.review_due`, issue 15).

"Supervisory officers should ensure that police actions resulting from each RMP are implemented
and reviewed at least every 16 weeks" (ACPO NPIA 2010 Guidance, cited by the 2011 joint
inspection of MAPPA, para 8.30), and "a current RMP is required for all active nominals on
ViSOR" (para 8.22). So every active nominal (subject to the notification requirements, or managed
at a MAPPA level: NominalFacts.subject_on, mappa_level) is due a review `rmp_review_weeks` [16]
after the last `rmp.reviewed` (reviewed 1 January 2026 -> due by the end of 23 April 2026).

Never reviewed (local choice): the clock runs from the later of the nominal's newest MAPPA level
change that casewatch recorded (a new management level calls for the plan to be reviewed, para
8.23) and `rmp_reviews_recorded_from`, the day this force's feed of rmp.reviewed became complete.
With that setting unset nothing is owed for a plan never reviewed: casewatch cannot tell it from
one reviewed before the feed began, and level changes are on record for years before any review,
so a first scan would bury the real alerts under one per nominal.

One alert per due day (subject `rmp:<due date>`): low from `rmp_review_reminder_days` [14]
before the due day, raised to medium once the due day is over (a step up re-notifies), both to
the offender manager. A review moves the due day, so the alert for the old one resolves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from casewatch.model.alerts import AlertSpec, Severity
from casewatch.model.clocks import end_of_day, local_date, start_of_day
from casewatch.model.facts import NominalFacts
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import Desired, LiveAlert, RuleResult

REVIEW_DUE = "rmp.review_due"
KINDS = (REVIEW_DUE,)


def active(nominal: NominalFacts, day: date) -> bool:
    """An active nominal on `day`: subject to the notification requirements, or managed at a
    MAPPA level (category 2-4 nominals and PDPs are not registered)."""
    return nominal.subject_on(day) or nominal.mappa_level is not None


def due_on(
    last_reviewed_on: date | None, level_changed_on: date | None, settings: TriggerPolicy
) -> date | None:
    """The day the next review is due by, or None when nothing is known to count from."""
    start = last_reviewed_on
    if start is None:
        start = never_reviewed_from(level_changed_on, settings)
    return start + timedelta(weeks=settings.rmp_review_weeks) if start is not None else None


def never_reviewed_from(level_changed_on: date | None, settings: TriggerPolicy) -> date | None:
    """The day a plan never reviewed counts from: the later of the newest level change and
    rmp_reviews_recorded_from; None (no clock) while rmp_reviews_recorded_from is unset."""
    since = settings.rmp_reviews_recorded_from
    if since is None:
        return None
    return max(level_changed_on, since) if level_changed_on is not None else since


def wanted(
    nominal: NominalFacts,
    last_reviewed_on: date | None,
    level_changed_on: date | None,
    now: datetime,
    settings: TriggerPolicy,
    tz: ZoneInfo,
) -> AlertSpec | None:
    today = local_date(now, tz)
    due = due_on(last_reviewed_on, level_changed_on, settings)
    if due is None or not active(nominal, today):
        return None
    severity: Severity
    details: dict[str, object] = {
        "due_on": due.isoformat(), "weeks": settings.rmp_review_weeks,
        "last_reviewed_on": last_reviewed_on.isoformat() if last_reviewed_on is not None else None,
    }
    if last_reviewed_on is None and level_changed_on is not None:
        details["level_changed_on"] = level_changed_on.isoformat()
    if now >= end_of_day(due, tz):
        severity = "medium"
        summary = f"RMP review overdue (due {due.isoformat()}): {nominal.visor_ref}"
        details["days_overdue"] = (today - due).days
    elif now >= start_of_day(due - timedelta(days=settings.rmp_review_reminder_days), tz):
        severity = "low"
        summary = f"RMP review due by {due.isoformat()}: {nominal.visor_ref}"
    else:
        return None
    return AlertSpec(
        kind=REVIEW_DUE, severity=severity, visor_ref=nominal.visor_ref, team=nominal.team,
        subject=f"rmp:{due.isoformat()}", owner=nominal.offender_manager or None,
        due_at=end_of_day(due, tz), summary=summary, details=details,
    )


def evaluate(
    nominal: NominalFacts | None,
    last_reviewed_on: date | None,
    level_changed_on: date | None,
    live: Sequence[LiveAlert],
    now: datetime,
    settings: TriggerPolicy,
    tz: ZoneInfo,
) -> RuleResult:
    """`live`: the nominal's live review alerts. A nominal not known (None) owes nothing."""
    desired = Desired()
    spec = (
        wanted(nominal, last_reviewed_on, level_changed_on, now, settings, tz)
        if nominal is not None
        else None
    )
    if spec is not None:
        desired.want(spec)
    return desired.against([a for a in live if a.kind in KINDS], "reviewed, or no longer owed")
