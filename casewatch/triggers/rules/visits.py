"""Home visits (issue 15): `visit.due` from visit_reminder_days before a visit's due day (low, to
the offender manager), `visit.overdue` once the due day is over (medium, the offender manager and
the team channel). Police home visits have no statutory basis (the 2005 joint inspection of the
management of sex offenders, 1.17); the frequency is the risk management plan's, so every figure
here is the RMP's or a local choice:

- every: the RMP's `visit_every_days` (nominal.upsert), else the configured band for the risk
  level (`visit_every_days_by_risk`, local choice: the older bands of the 2005 inspection's Table
  1 and domain.md, monthly very high to annual low). A level left out of the bands has no routine
  visits (reactive management, domain.md): no clock;
- due: the last `visit.recorded` plus every. Never visited: the clock runs from the latest of the
  relevant date (SOA 2003 s.82(6)), the release date (the day the nominal came to be managed in
  the community) and `visits_recorded_from`, the day this force's feed of visit.recorded became
  complete (a local choice: that day stands in for the last visit, as the initial notification
  in person did). With `visits_recorded_from` unset there is no clock for a nominal never
  visited: casewatch cannot tell one never visited from one visited before the feed began, and
  on a first deployment counting from a release years ago would raise visit.overdue for nearly
  every nominal (/flags shows "no visit on record");
- who: a registered nominal within the notification period (s.80(1), s.82(1)), or any nominal
  whose RMP sets a frequency (a MAPPA category 2 or 3 nominal, say);
- held: a nominal detained today (remand, sentence, hospital, a recall return; rules.custody)
  owes no visit: nothing is wanted and live visit alerts resolve. Time abroad does not stop the
  clock (the visit is owed on the return). After a release the clock runs on from the last visit,
  so a visit missed across the custody is owed at once.

Subject "visit:<due date>": a later visit moves the due date, so the alert for the old one is
no longer wanted and resolves (on the scan, and at once on the visit.recorded event).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from casewatch.model.alerts import AlertSpec, Severity
from casewatch.model.clocks import end_of_day, local_date
from casewatch.model.facts import NominalFacts, NotificationHistory
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import NOTHING, Desired, LiveAlert, RuleResult
from casewatch.triggers.rules import custody

DUE = "visit.due"
OVERDUE = "visit.overdue"
KINDS = (DUE, OVERDUE)
ABROAD = "abroad"


@dataclass(frozen=True)
class VisitDue:
    due_on: date
    every_days: int
    last_visit_on: date | None  # None: never visited (counted from never_visited_from)

    @property
    def subject(self) -> str:
        return f"visit:{self.due_on.isoformat()}"


def every_days(nominal: NominalFacts, settings: TriggerPolicy) -> int | None:
    """The days between visits: the RMP's, else the risk level's band (None: no routine visits)."""
    if nominal.visit_every_days is not None:
        return nominal.visit_every_days
    return settings.visit_every_days_by_risk.get(nominal.risk_level)


def visited(nominal: NominalFacts, today: date) -> bool:
    """Whether the nominal is one the police visit: subject to the notification requirements
    today, or with a frequency set by the RMP."""
    return nominal.subject_on(today) or nominal.visit_every_days is not None


def held(
    nominal: NominalFacts, history: NotificationHistory, settings: TriggerPolicy, tz: ZoneInfo, day: date
) -> bool:
    """Detained on `day` (custody of any kind; not abroad): no home to visit."""
    detained = [p for p in custody.periods(nominal, history, settings, tz) if p.kind != ABROAD]
    return custody.away_on(day, detained) is not None


def never_visited_from(nominal: NominalFacts, settings: TriggerPolicy) -> date | None:
    """The day a nominal never visited counts from: the latest of the relevant date, the release
    date and visits_recorded_from; None (no clock) while visits_recorded_from is unset."""
    if settings.visits_recorded_from is None:
        return None
    known = (nominal.relevant_date, nominal.release_date, settings.visits_recorded_from)
    return max(d for d in known if d is not None)


def next_visit(
    nominal: NominalFacts,
    last_visit_on: date | None,
    history: NotificationHistory,
    settings: TriggerPolicy,
    tz: ZoneInfo,
    today: date,
) -> VisitDue | None:
    """The visit owed next; None when none is: not visited (above), no frequency, never visited
    with visits_recorded_from unset, or detained today."""
    every = every_days(nominal, settings)
    if every is None or not visited(nominal, today):
        return None
    start = last_visit_on if last_visit_on is not None else never_visited_from(nominal, settings)
    if start is None:
        return None
    due_on = start + timedelta(days=every)
    if held(nominal, history, settings, tz, today):
        return None
    return VisitDue(due_on, every, last_visit_on)


def _spec(
    nominal: NominalFacts, due: VisitDue, today: date, settings: TriggerPolicy, tz: ZoneInfo
) -> AlertSpec | None:
    where = f"{nominal.visor_ref}, due {due.due_on.isoformat()}"
    details: dict[str, object] = {
        "due_on": due.due_on.isoformat(), "every_days": due.every_days,
        "last_visit_on": due.last_visit_on.isoformat() if due.last_visit_on is not None else None,
    }
    severity: Severity
    if today > due.due_on:
        kind, severity, summary = OVERDUE, "medium", f"Home visit overdue: {where}"
        details["days_overdue"] = (today - due.due_on).days
    elif today >= due.due_on - timedelta(days=settings.visit_reminder_days):
        kind, severity, summary = DUE, "low", f"Home visit due soon: {where}"
    else:
        return None
    return AlertSpec(
        kind=kind, severity=severity, visor_ref=nominal.visor_ref, team=nominal.team,
        subject=due.subject, summary=summary, owner=nominal.offender_manager or None,
        due_at=end_of_day(due.due_on, tz), details=details,
    )


def evaluate(
    nominal: NominalFacts | None,
    last_visit_on: date | None,
    history: NotificationHistory,
    live: Sequence[LiveAlert],
    now: datetime,
    settings: TriggerPolicy,
    tz: ZoneInfo,
) -> RuleResult:
    """`live`: the nominal's live visit alerts. Opens the visit due soon or overdue now; resolves
    every live one that is not (a later visit recorded, detained, frequency changed, or the
    nominal gone: None)."""
    desired = Desired()
    today = local_date(now, tz)
    due = next_visit(nominal, last_visit_on, history, settings, tz, today) if nominal is not None else None
    spec = _spec(nominal, due, today, settings, tz) if nominal is not None and due is not None else None
    if spec is not None:
        desired.want(spec)
    if not live and not desired.specs:
        return NOTHING
    return desired.against(
        [a for a in live if a.kind in KINDS],
        "no longer due: a later visit recorded, the nominal detained, or the frequency changed",
    )
