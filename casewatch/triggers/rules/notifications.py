"""Missed notifications (Sexual Offences Act 2003 Part 2): when each notification falls due,
`notification.due_soon` before it and `notification.missed` once the due day is over, and
`notification.late` when a detected change was notified after its due day.

Each requirement is due by the end of its due day, local time. "Within the period of 3 days
beginning with" a day counts that day as day 1 (16 Nov -> due 18 Nov, missed from 19 Nov), and
the days the person is held or abroad are disregarded (rules.custody: s.83(6), s.84(5)):

- initial (s.83(1), (6)): `initial_notification_days` [3] beginning with the relevant date
  (s.82(6): the conviction, finding or caution), so cautions and community sentences owe it too;
  without a relevant date, the release date as before. Days held or abroad are disregarded, so a
  person detained from the relevant date to the release owes it within 3 days beginning with the
  release. Owed until a full notification is received on or after the first day counted;
- periodic (s.85(1), (5)(b)): one year (`periodic_notification_years`) after the last full
  notification (29 February -> 28 February in a common year; clocks.add_years), not run while the
  initial one is owed;
- weekly (s.85(5)(a), (6), SI 2012/1876): for no fixed abode (no sole or main residence,
  s.83(7)(b)), `weekly_notification_days` [7] *after* the last full notification, instead of the
  year. A weekly notification is that person's s.85(1) notification: it restarts the clock;
- both: where the period would end while the person is held or abroad, it runs on to the end of
  the 3 days beginning with the first day back (s.85(3)-(4), custody.extended);
- release (s.84(1)(d)): each release from detention after the relevant date owes a notification
  within 3 days beginning with the release, met by any full notification on or after that day.
  While the initial one is owed and the release falls within its period (from its first counted
  day to its due day, e.g. detained from the relevant date to the release), the initial one covers
  it: a notification on or after the release answers both; a periodic or weekly due day moved
  onto the release's own due day (s.85(3)) asks for the same notification, so only the release is
  shown (one alert, not two; answering it restarts the year, s.85(2));
- change (s.84(1), SI 2012/1876): each change.detected owes a change notification within 3 days
  beginning with the change (CHANGE_NOTIFICATION_DAYS, statutory, not a setting). It is answered
  by a change notification about the same thing (or not saying what) that either gives the date
  of the change within ADVANCE_NOTICE_DAYS [2] either side (advance notice, s.84(2)-(4)) or gives
  none and was made on or after the change. A detected "release" is s.84(1)(d), as above;
- return (s.86; SI 2004/1220 as amended by SI 2012/1876): after a notified trip whose inbound leg
  matched a border check (rules.border_travel.assign), a return notification within 3 days
  beginning with the local day of that check, met by a return notification on or after it. The
  regulation's text on the return notification was not found in the reference corpus (only the
  Northern Ireland equivalent and the 2004 Regulations' opening): this is the issue's reading.

While the person is held or abroad with no end in sight (an open detention, a recall), nothing
is due: every clock above returns None. A due day that ended before the detention began stays
missed. End (s.82(1)): nothing falls due after notification_ends_on, and once that day is over no
notification alert is wanted, so the live ones resolve (requirements_ended); a nominal not
registered owes nothing (s.80(2)).

Severity: a missed notification's severity rises with the days overdue
(settings.missed_notification_severity; model.alerts.severity_for_days).

Subjects: "<kind>:<due date>" for initial, periodic and weekly (each cycle its own alert);
"change:<what>:<changed_on>" for a change or release; "return:<return date>" for a return.

Travel notice itself is not a clock here: the border rule raises unnotified travel, and late
notice is flagged by rules.travel_notice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from casewatch.model.alerts import AlertSpec, Severity, severity_for_days
from casewatch.model.clocks import add_years, end_of_day, local_date
from casewatch.model.facts import (
    ChangeDetected,
    ChangeNotified,
    NominalFacts,
    NotificationHistory,
)
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import NOTHING, Desired, LiveAlert, RuleResult
from casewatch.triggers.rules import border_travel, custody
from casewatch.triggers.rules.custody import Away

DUE_SOON = "notification.due_soon"
MISSED = "notification.missed"
# Event-driven and acknowledged by a person: not among KINDS, so no scan ever resolves it.
LATE = "notification.late"
KINDS = (DUE_SOON, MISSED)

# s.84(1): a change is notified "before the end of the period of 3 days beginning with" it.
CHANGE_NOTIFICATION_DAYS = 3
# s.84(2)-(4): a change notified in advance gives its expected date; one that happens up to
# 2 days either side of it is answered by that notice.
ADVANCE_NOTICE_DAYS = 2
# s.86, SI 2004/1220 (as the issue reads it): the return within 3 days beginning with it.
RETURN_NOTIFICATION_DAYS = 3
RELEASE = "release"
# The service timezone's default: for callers that have no timezone to hand (/flags).
_DEFAULT_TZ = ZoneInfo("Europe/London")

DueKind = Literal["initial", "periodic", "weekly", "change", "return"]


@dataclass(frozen=True)
class Due:
    kind: DueKind
    due_on: date
    what: str | None = None  # change: what changed (CHANGE_WHATS)
    since: date | None = None  # change: the day it changed; return: the day of return

    @property
    def subject(self) -> str:
        if self.kind == "change":
            return f"change:{self.what}:{_iso(self.since)}"
        if self.kind == "return":
            return f"return:{_iso(self.since)}"
        return f"{self.kind}:{self.due_on.isoformat()}"

    @property
    def label(self) -> str:
        """The requirement as a summary names it: "change notification (home address)"."""
        if self.kind == "change" and self.what:
            return f"change notification ({self.what.replace('_', ' ')})"
        return f"{self.kind} notification"


def _iso(day: date | None) -> str:
    return day.isoformat() if day is not None else ""


def _latest(*days: date | None) -> date | None:
    known = [d for d in days if d is not None]
    return max(known) if known else None


def within_days_beginning_with(day: date, days: int) -> date:
    """The last day of "the period of `days` days beginning with" `day` (the day itself is
    day 1), nobody away: within_days_beginning_with(16 Nov, 3) == 18 Nov."""
    return day + timedelta(days=days - 1)


def initial_from(nominal: NominalFacts) -> date | None:
    """The day the initial notification's period begins with (s.83(1)): the relevant date
    (s.82(6)), else the release date (s.84(1)(d), as before). A release after the relevant date
    is custody from one to the other (custody.periods), disregarded in the count (s.83(6))."""
    return nominal.relevant_date if nominal.relevant_date is not None else nominal.release_date


def _last_full(nominal: NominalFacts, history: NotificationHistory) -> date | None:
    """The newest s.83(1), s.84(1) or s.85(1) notification known (ViSOR's record, the ones
    received, and any change notification)."""
    changes = (c.notified_on for c in history.changes)
    return _latest(nominal.last_notification_on, history.last_full_on, *changes)


def dues(
    nominal: NominalFacts, history: NotificationHistory, settings: TriggerPolicy, tz: ZoneInfo | None = None
) -> list[Due]:
    """Every notification the nominal owes, with its due date: none if not registered, none
    while held or abroad with no end (the clock stands still), and none falling due after the
    end of the notification period (s.82(1); evaluate also drops every due once it is over).
    `tz`: the service timezone (border checks' local days)."""
    if not nominal.registered:
        return []
    away = custody.periods(nominal, history, settings, tz or _DEFAULT_TZ)
    found = _dues(nominal, history, settings, tz or _DEFAULT_TZ, away)
    ends = nominal.notification_ends_on
    return found if ends is None else [d for d in found if d.due_on <= ends]


def _dues(
    nominal: NominalFacts, history: NotificationHistory, settings: TriggerPolicy, tz: ZoneInfo,
    away: Sequence[Away],
) -> list[Due]:
    last_full = _last_full(nominal, history)
    initial, covered = _initial(nominal, last_full, settings, away)
    found: list[Due] = []
    if initial is not None:
        found.append(initial)
    releases = _releases(nominal, history, last_full, away, covered)
    if covered is None and last_full is not None:
        cycle = _cycle(nominal, last_full, settings, away)
        # A release owed by the periodic day asks for the notification that meets both (s.85(1):
        # "unless within that period he has given a notification under section 84(1)"; it
        # restarts the year, s.85(2)): one alert, the release.
        if cycle is not None and not any(r.due_on <= cycle.due_on for r in releases):
            found.append(cycle)
    found.extend(releases)
    found.extend(_changes(history, last_full, away))
    found.extend(_returns(history, settings, tz, away))
    return _one_per_subject(found)


def _initial(
    nominal: NominalFacts, last_full: date | None, settings: TriggerPolicy, away: Sequence[Away]
) -> tuple[Due | None, tuple[date, date] | None]:
    """The initial notification owed (s.83(1), (6)), and its period (first counted day, due
    day; date.max while the person is still held: owed, nothing due yet). None, None: not owed."""
    start = initial_from(nominal)
    if start is None:
        return None, None
    first = custody.last_day_beginning_with(start, 1, away)
    if last_full is not None and first is not None and last_full >= first:
        return None, None
    due_on = custody.last_day_beginning_with(start, settings.initial_notification_days, away)
    period = (first or date.max, due_on or date.max)
    return (Due("initial", due_on) if due_on is not None else None), period


def _cycle(
    nominal: NominalFacts, last_full: date, settings: TriggerPolicy, away: Sequence[Away]
) -> Due | None:
    """The periodic or weekly notification (s.85(1), (5)), moved past custody or absence abroad
    (s.85(3)-(4)); None while the person is held or abroad with no end."""
    if nominal.no_fixed_abode:
        # s.85(1), (5)(a), (6) and SI 2012/1876: one week after the last s.83-85 notification.
        kind: DueKind = "weekly"
        due_on = last_full + timedelta(days=settings.weekly_notification_days)
    else:
        # s.85(1), (5)(b): one year after the last s.83-85 notification.
        kind, due_on = "periodic", add_years(last_full, settings.periodic_notification_years)
    moved = custody.extended(due_on, away)
    return Due(kind, moved) if moved is not None else None


def _releases(
    nominal: NominalFacts, history: NotificationHistory, last_full: date | None, away: Sequence[Away],
    covered: tuple[date, date] | None,
) -> list[Due]:
    """s.84(1)(d): each release after the relevant date not yet answered by a full notification
    on or after it; `covered`: the period of an owed initial notification: a release within it
    is answered by the one notification the initial asks for."""
    days = {e.on for e in history.detentions if not e.started}
    if nominal.release_date is not None:
        days.add(nominal.release_date)
    days |= {d.changed_on for d in history.detected if d.what == RELEASE}
    relevant = nominal.relevant_date
    found = []
    for day in sorted(days):
        if relevant is not None and day <= relevant:
            continue
        if covered is not None and covered[0] <= day <= covered[1]:
            continue
        if last_full is not None and last_full >= day:
            continue
        due_on = custody.last_day_beginning_with(day, CHANGE_NOTIFICATION_DAYS, away)
        if due_on is not None:
            found.append(Due("change", due_on, RELEASE, day))
    return found


def answers(notified: ChangeNotified, detected: ChangeDetected) -> bool:
    """Whether a change notification answers a detected change (s.84(1)-(4)): about the same
    thing (or not saying what), and either notice in advance (a change date after the day it was
    given) within ADVANCE_NOTICE_DAYS either side of the change (s.84(2)-(4)), or made on or
    after the change, giving no date or one within ADVANCE_NOTICE_DAYS of it. A notification
    made before a later change answers it only as advance notice: moving on 16 Nov and again on
    18 Nov owes two notifications."""
    if notified.what is not None and notified.what != detected.what:
        return False
    close = notified.changed_on is None or (
        abs((notified.changed_on - detected.changed_on).days) <= ADVANCE_NOTICE_DAYS
    )
    in_advance = notified.changed_on is not None and notified.changed_on > notified.notified_on
    return close and (in_advance or notified.notified_on >= detected.changed_on)


def _changes(history: NotificationHistory, last_full: date | None, away: Sequence[Away]) -> list[Due]:
    """s.84(1), (5): each detected change (a release is in _releases) not answered."""
    found = []
    for detected in history.detected:
        if detected.what == RELEASE or any(answers(c, detected) for c in history.changes):
            continue
        due_on = custody.last_day_beginning_with(detected.changed_on, CHANGE_NOTIFICATION_DAYS, away)
        if due_on is not None:
            found.append(Due("change", due_on, detected.what, detected.changed_on))
    return found


def returns_from(history: NotificationHistory, settings: TriggerPolicy, tz: ZoneInfo) -> list[date]:
    """The local days of the inbound border checks that matched a notified trip (s.86)."""
    if not history.travels or not history.border_checks:
        return []
    matched = border_travel.assign(history.border_checks, history.travels, settings, tz)
    return sorted({
        local_date(check.checked_at, tz)
        for check in history.border_checks
        if check.direction == "inbound" and check.event_id in matched
    })


def _returns(
    history: NotificationHistory, settings: TriggerPolicy, tz: ZoneInfo, away: Sequence[Away]
) -> list[Due]:
    """s.86, SI 2004/1220: each return from a notified trip not followed by a return
    notification on or after the day of return."""
    found = []
    for day in returns_from(history, settings, tz):
        if any(notified >= day for notified in history.returns_notified):
            continue
        due_on = custody.last_day_beginning_with(day, RETURN_NOTIFICATION_DAYS, away)
        if due_on is not None:
            found.append(Due("return", due_on, since=day))
    return found


def _one_per_subject(found: list[Due]) -> list[Due]:
    """A release heard of twice (detention.ended and a detected release) is one requirement."""
    seen: dict[str, Due] = {}
    for due in found:
        seen.setdefault(due.subject, due)
    return list(seen.values())


def requirements_ended(nominal: NominalFacts, today: date) -> bool:
    """s.82(1): after the last day of the notification period the person is no longer a
    relevant offender (s.80(2)): no notification or travel trigger fires for them."""
    return nominal.registered and not nominal.subject_on(today)


def quiet_after(today: date, settings: TriggerPolicy) -> date:
    """The newest full notification after which a nominal owes nothing on the periodic clock
    today, not even a reminder: if it was made after this day, the periodic due date is beyond
    today + the reminder lead. A scan reads only the nominals who may owe something (this, or
    a release or relevant date, no fixed abode, or a detention end, a detected change or an
    inbound border check: load.notification_clocks), so this must never be too early.

    Proof of the margin: add_years never moves a day later and moves it at most one day
    earlier (29 February), and keeps order; so last_full > add_years(today + lead + 2, -N)
    gives add_years(last_full, N) >= today + lead + 1. Custody and absence abroad only ever
    move a due day later (custody.extended returns a day on or after the one it is given, or
    None: nothing due), so they cannot bring a quiet nominal's periodic day into the lead. The
    initial, release, change and return requirements do not depend on this day: the nominals
    who may owe them are read by their own facts (relevant or release date, detention ends,
    change.detected, border checks)."""
    horizon = today + timedelta(days=settings.notification_reminder_days + 2)
    return add_years(horizon, -settings.periodic_notification_years)


def _lead_days(due: Due, settings: TriggerPolicy) -> int:
    if due.kind == "weekly":
        return settings.weekly_notification_reminder_days
    return settings.notification_reminder_days


def _spec(
    nominal: NominalFacts, due: Due, today: date, settings: TriggerPolicy, tz: ZoneInfo
) -> AlertSpec | None:
    """`today`: the local date now. A due day is missed once it is over (today is later), and
    reminded from the start of the day `lead` days before it."""
    where = f"{nominal.visor_ref}, due {due.due_on.isoformat()}"
    details: dict[str, Any] = {"requirement": due.kind, "due_on": due.due_on.isoformat()}
    if due.kind == "change":
        details["what"] = due.what
    severity: Severity
    if today > due.due_on:
        overdue = (today - due.due_on).days
        severity = severity_for_days(overdue, settings.missed_notification_severity) or "high"
        kind, summary = MISSED, f"Missed {due.label}: {where}"
        details["days_overdue"] = overdue
    elif today >= due.due_on - timedelta(days=_lead_days(due, settings)):
        # Only the periodic clock runs in years; the others' reminders matter more.
        kind, severity = DUE_SOON, "low" if due.kind == "periodic" else "medium"
        summary = f"{due.label[0].upper()}{due.label[1:]} due soon: {where}"
    else:
        return None
    return AlertSpec(
        kind=kind, severity=severity, visor_ref=nominal.visor_ref, team=nominal.team,
        subject=due.subject, summary=summary, owner=nominal.offender_manager or None,
        due_at=end_of_day(due.due_on, tz), details=details,
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
    resolves every live one that is not (a notification came, a reminder became missed, the
    person is held, or the requirements ended)."""
    desired = Desired()
    today = local_date(now, tz)
    if nominal is not None and not requirements_ended(nominal, today):
        for due in dues(nominal, history, settings, tz):
            spec = _spec(nominal, due, today, settings, tz)
            if spec is not None:
                desired.want(spec)
    if not live and not desired.specs:
        return NOTHING
    return desired.against(
        [a for a in live if a.kind in KINDS],
        "no longer due: notification received, the reminder became missed, the person is held "
        "or abroad, or the notification requirements ended",
    )


def late(
    nominal: NominalFacts | None,
    history: NotificationHistory,
    settings: TriggerPolicy,
    tz: ZoneInfo,
    event_id: str,
) -> RuleResult:
    """`notification.late` for each detected change (s.84(1)) answered, but only after its due
    day, when `event_id` is that change.detected or the first change notification answering it:
    so it opens once, as the second of the two arrives, in either order. A detected release is
    answered by any full notification, which the history holds only as the newest one, so it is
    not judged late here."""
    if nominal is None or not nominal.registered:
        return NOTHING
    away = custody.periods(nominal, history, settings, tz)
    opens = []
    for detected in history.detected:
        if detected.what == RELEASE:
            continue
        given = sorted(
            (c for c in history.changes if answers(c, detected)), key=lambda c: (c.notified_on, c.event_id)
        )
        if not given or event_id not in (detected.event_id, given[0].event_id):
            continue
        due_on = custody.last_day_beginning_with(detected.changed_on, CHANGE_NOTIFICATION_DAYS, away)
        if due_on is None or given[0].notified_on <= due_on or not nominal.subject_on(due_on):
            continue
        due = Due("change", due_on, detected.what, detected.changed_on)
        opens.append(AlertSpec(
            kind=LATE, severity="medium", visor_ref=nominal.visor_ref, team=nominal.team,
            subject=due.subject,
            summary=f"Late {due.label}: {nominal.visor_ref}, due {due_on.isoformat()}, notified "
            f"{given[0].notified_on.isoformat()}",
            owner=nominal.offender_manager or None, due_at=end_of_day(due_on, tz),
            details={
                "requirement": "change", "what": detected.what, "due_on": due_on.isoformat(),
                "notified_on": given[0].notified_on.isoformat(),
                "days_late": (given[0].notified_on - due_on).days,
            },
        ))
    return RuleResult(tuple(opens)) if opens else NOTHING
