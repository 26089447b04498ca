"""Missed notifications (Sexual Offences Act 2003 Part 2): when each notification falls due,
`notification.due_soon` before it and `notification.missed` once the due day is over.

Clocks (settings.triggers), each due by the end of its due day, local time:
- initial: "within the period of 3 days beginning with the relevant date" (SOA 2003 s.83(1);
  s.82(6): the conviction, finding or caution), so cautions and community sentences owe it too;
  when the person is detained on the relevant date the detained time is disregarded (s.83(6)),
  so the 3 days begin with the release (and s.84(1)(d) words a release the same way); without
  a relevant date, the release date as before. That day is day 1, so the due day is start +
  initial_notification_days - 1 (16 Nov -> due 18 Nov, missed from 19 Nov); while no full
  notification has been received on or after that day (initial_from);
- periodic: "within the applicable period after" the last notification under s.83(1), s.84(1)
  or s.85(1) (s.85(1)-(2)): the period of one year (s.85(5)(b)), so the last full notification
  + periodic_notification_years (29 February -> 28 February in a common year; clocks.add_years);
  not run while the initial one is pending;
- weekly, for no fixed abode (no sole or main residence, s.83(7)(b)): the applicable period is
  the one prescribed by SI 2012/1876 under s.85(5)(a), one week, *instead of* the year; it runs
  "after" the last full notification (not "beginning with"), so last full +
  weekly_notification_days. A weekly notification is that person's s.85(1) notification, so it
  restarts this clock (and would restart the year: FULL_NOTIFICATION_KINDS).
Travel and return notifications (s.86) are not s.83-85 notifications and restart neither clock.
End (s.82(1)): nothing falls due after notification_ends_on, and once that day is over no
notification alert is wanted, so the live ones resolve (requirements_ended).

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


def within_days_beginning_with(day: date, days: int) -> date:
    """The last day of "the period of `days` days beginning with" `day` (the day itself is
    day 1): within_days_beginning_with(16 Nov, 3) == 18 Nov."""
    return day + timedelta(days=days - 1)


def initial_from(nominal: NominalFacts) -> date | None:
    """The day the initial notification's 3 days begin with, or None.

    - s.83(1): "within the period of 3 days beginning with the relevant date" (s.82(6): the
      conviction, finding or caution), so a caution or a community sentence owes it too;
    - s.83(6): time when the offender is remanded or committed to custody, serving a sentence,
      detained in a hospital or outside the UK is disregarded, so a person detained on the
      relevant date and released later owes it within 3 days beginning with the release (a
      release date after the relevant date is read as detained from it until then; s.84(1)(d)
      also requires a notification within 3 days beginning with a release);
    - a release date and no relevant date: the release, as before (s.84(1)(d)).
    A release before the relevant date is an earlier custody, not a reason to wait."""
    relevant, release = nominal.relevant_date, nominal.release_date
    if relevant is None:
        return release
    if release is None:
        return relevant
    return max(relevant, release)


def dues(nominal: NominalFacts, history: NotificationHistory, settings: TriggerPolicy) -> list[Due]:
    """Every notification the nominal owes next, with its due date: none if not registered,
    and none falling due after the end of the notification period (s.82(1): a person no
    longer subject to the requirements owes nothing; evaluate also drops every due once the
    period is over)."""
    if not nominal.registered:
        return []
    found = _dues(nominal, history, settings)
    ends = nominal.notification_ends_on
    return found if ends is None else [d for d in found if d.due_on <= ends]


def _dues(nominal: NominalFacts, history: NotificationHistory, settings: TriggerPolicy) -> list[Due]:
    last_full = _latest(nominal.last_notification_on, history.last_full_on)
    start = initial_from(nominal)
    if start is not None and (last_full is None or last_full < start):
        # s.83(1), (6) / s.84(1)(d): within the period of N days beginning with the relevant
        # date, or the release when detained on it; satisfied by a notification since then.
        return [Due("initial", within_days_beginning_with(start, settings.initial_notification_days))]
    if last_full is None:
        return []
    if nominal.no_fixed_abode:
        # s.85(1), (5)(a), (6) and SI 2012/1876: one week after the last s.83-85 notification.
        return [Due("weekly", last_full + timedelta(days=settings.weekly_notification_days))]
    # s.85(1), (5)(b): one year after the last s.83-85 notification.
    return [Due("periodic", add_years(last_full, settings.periodic_notification_years))]


def requirements_ended(nominal: NominalFacts, today: date) -> bool:
    """s.82(1): after the last day of the notification period the person is no longer a
    relevant offender (s.80(2)): no notification or travel trigger fires for them."""
    return nominal.registered and not nominal.subject_on(today)


def quiet_after(today: date, settings: TriggerPolicy) -> date:
    """The newest full notification after which a nominal owes nothing on the periodic clock
    today, not even a reminder: if it was made after this day, the periodic due date is beyond
    today + the reminder lead. A scan reads only the nominals who may owe something (this, or
    a release or relevant date, or no fixed abode: load.may_owe_notification), so this must
    never be too early.

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
    today = local_date(now, tz)
    if nominal is not None and not requirements_ended(nominal, today):
        for due in dues(nominal, history, settings):
            spec = _spec(nominal, due, today, settings, tz)
            if spec is not None:
                desired.want(spec)
    if not live and not desired.specs:
        return NOTHING
    return desired.against(
        [a for a in live if a.kind in KINDS],
        "no longer due: notification received, the reminder became missed, or the "
        "notification requirements ended",
    )
