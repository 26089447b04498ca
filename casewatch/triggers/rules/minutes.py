"""MAPP meeting minutes on ViSOR (`mappa.minutes_overdue`, issue 15).

The ViSOR Standards: "the records of MAPPA meetings must be entered on to ViSOR within 5 working
days for level 3 meetings and within 10 working days for level 2 meetings" (2011 joint
inspection of MAPPA, "Putting the pieces together", para 8.21; it found minutes taking over ten
months). The due day is the n-th working day after the meeting (the meeting day is not counted:
held Monday 2 March 2026, level 3, due Monday 9 March); working days leave out Saturdays,
Sundays and the bank holidays of England and Wales, substitute days included, from the
maintained `holidays` package (England and Wales share one list: `subdiv="ENG"`). Overdue once
the due day is over (local time): medium for level 2, high for level 3, to the offender manager
and the team's supervisors (who validate the RMP the meeting made, para 8.20). Resolved when
`minutes_on_visor_on` is set (a later `meeting.held` for the same meeting_id). Nothing for a
meeting about a nominal casewatch does not know: no team or owner to tell.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from datetime import date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import holidays

from casewatch.model.alerts import AlertSpec, Severity
from casewatch.model.clocks import end_of_day, local_date
from casewatch.model.facts import MeetingFacts, NominalFacts
from casewatch.model.results import Desired, LiveAlert, RuleResult

OVERDUE = "mappa.minutes_overdue"
KINDS = (OVERDUE,)

# Working days allowed to put a meeting's minutes on ViSOR, by MAPPA level (ViSOR Standards,
# 2011 joint inspection para 8.21).
MINUTES_WORKING_DAYS: dict[int, int] = {3: 5, 2: 10}
SEVERITY: dict[int, Severity] = {3: "high", 2: "medium"}
# The fewest calendar days from a meeting to the first day its minutes can be overdue, less one:
# the scan's SQL filter (a superset) reads only meetings held before today minus this.
FEWEST_DAYS = min(MINUTES_WORKING_DAYS.values())


@cache
def england_and_wales() -> Container[date]:
    """The bank holidays of England and Wales, substitute days included ("Boxing Day
    (observed)"); the years are filled in as they are asked about."""
    return holidays.country_holidays("GB", subdiv="ENG")


def is_working_day(day: date, bank_holidays: Container[date]) -> bool:
    return day.weekday() < 5 and day not in bank_holidays


def add_working_days(day: date, n: int, bank_holidays: Container[date]) -> date:
    """The n-th working day after `day` (`day` itself not counted; n=0: `day`)."""
    if n < 0:
        raise ValueError("n must not be negative")
    found = day
    while n:
        found += timedelta(days=1)
        if is_working_day(found, bank_holidays):
            n -= 1
    return found


def due_on(meeting: MeetingFacts, bank_holidays: Container[date]) -> date:
    """The last day the meeting's minutes may go on ViSOR."""
    return add_working_days(meeting.held_on, MINUTES_WORKING_DAYS[meeting.level], bank_holidays)


def wanted(
    meeting: MeetingFacts,
    nominal: NominalFacts | None,
    now: datetime,
    tz: ZoneInfo,
    bank_holidays: Container[date],
) -> AlertSpec | None:
    if meeting.minutes_on_visor_on is not None or nominal is None:
        return None
    if meeting.level not in MINUTES_WORKING_DAYS:  # the contract allows 2 and 3 only
        return None
    due = due_on(meeting, bank_holidays)
    if now < end_of_day(due, tz):
        return None
    days = MINUTES_WORKING_DAYS[meeting.level]
    return AlertSpec(
        kind=OVERDUE, severity=SEVERITY[meeting.level], visor_ref=meeting.visor_ref,
        team=nominal.team, subject=meeting.meeting_id, owner=nominal.offender_manager or None,
        due_at=end_of_day(due, tz),
        summary=(
            f"MAPP level {meeting.level} meeting minutes not on ViSOR: held "
            f"{meeting.held_on.isoformat()}, due {due.isoformat()} ({days} working days): "
            f"{meeting.visor_ref}"
        ),
        details={
            "meeting_id": meeting.meeting_id, "level": meeting.level,
            "held_on": meeting.held_on.isoformat(), "due_on": due.isoformat(),
            "working_days": days, "days_overdue": (local_date(now, tz) - due).days,
        },
    )


def evaluate(
    meeting: MeetingFacts | None,
    nominal: NominalFacts | None,
    live: Sequence[LiveAlert],
    now: datetime,
    tz: ZoneInfo,
    bank_holidays: Container[date] | None = None,
) -> RuleResult:
    """`live`: the live minutes alerts whose subject is this meeting's id. A meeting not known
    (None) wants nothing, so its alert resolves. `bank_holidays`: England and Wales's by default."""
    desired = Desired()
    if meeting is not None:
        days_off = bank_holidays if bank_holidays is not None else england_and_wales()
        spec = wanted(meeting, nominal, now, tz, days_off)
        if spec is not None:
            desired.want(spec)
    recorded = meeting is not None and meeting.minutes_on_visor_on is not None
    reason = "minutes on ViSOR" if recorded else "no longer owed"
    return desired.against([a for a in live if a.kind in KINDS], reason)
