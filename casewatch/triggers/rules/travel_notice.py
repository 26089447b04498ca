"""Travel notice (SOA 2003 s.86; SI 2004/1220 as amended by SI 2012/1876, England and Wales):
a relevant offender gives notice of foreign travel at least 7 days before the departure, or,
where the details were not known more than 7 days ahead, at least 12 hours before it.

- notice under travel_notice_days [7] days but at least 12 hours ahead: `travel.late_notice`,
  medium, for the offender manager to check the reason (the 12-hour notice is lawful only when
  the details were not known earlier: a person decides that, not this rule);
- notice under 12 hours ahead, or after the departure: `travel.late_notice`, high: a possible
  breach of s.86.

The notice is the first notification of the trip (a later one with the same trip_id amends the
trip, and is measured from that first notice); the departure is the trip's as this notification
gives it. Both limits are measured back from the start (local midnight) of "the date of
departure", the regulations' words (SI 2004/1220 as amended; the Northern Ireland twin, SR
2014/185 reg 7: "before the date of his intended departure"), not from a departure time: 7
calendar days before it (so notice on 3 July for 10 July is late: 7 clear days are needed, as
"not less than 7 days before" is read) and 12 elapsed hours before it (by 12:00 the day before).
Until the nineteenth session a departure_at moved both limits later in the day, so the same
notice could be in time or late by the hour of the flight. departure_at still decides whether
the notice came "after departure". travel_notice_days = 0 turns the medium flag off, not the
12 hours.
A cancelled trip (travel.cancelled) is flagged no further.
Nobody is flagged who is not subject to the notification requirements on the departure day (not
registered, or a departure after notification_ends_on: SOA 2003 s.80(1), s.82(1), s.86)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from casewatch.model.alerts import AlertSpec, Severity
from casewatch.model.clocks import local_date
from casewatch.model.facts import NominalFacts, TravelFacts
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import RuleResult

LATE_NOTICE = "travel.late_notice"
# SI 2004/1220 (as amended by SI 2012/1876): the shortest lawful notice, details not known earlier.
MIN_NOTICE = timedelta(hours=12)


def date_of_departure(travel: TravelFacts, tz: ZoneInfo) -> datetime:
    """The start (local midnight) of the departure date: what the notice limits count back from."""
    return datetime.combine(travel.departure_on, time(0), tzinfo=tz)


def departure_instant(travel: TravelFacts, tz: ZoneInfo) -> datetime:
    """departure_at, else the start of the departure date (local time)."""
    if travel.departure_at is not None:
        return travel.departure_at
    return date_of_departure(travel, tz)


def notice_given(travel: TravelFacts, trip: Sequence[TravelFacts]) -> datetime:
    """When notice of the trip was first given: the earliest notification of it."""
    return min([travel.notified_at] + [t.notified_at for t in trip if t.trip == travel.trip])


def late(travel: TravelFacts, given: datetime, notice_days: int, tz: ZoneInfo) -> Severity | None:
    """None (in time), "medium" (under notice_days days, at least 12 hours) or "high" (under
    12 hours, or after departure)."""
    start = date_of_departure(travel, tz)
    if start - given < MIN_NOTICE:
        return "high"
    if notice_days == 0:
        return None
    # Calendar days back from local midnight (aware arithmetic keeps the wall time across BST).
    return None if given <= start - timedelta(days=notice_days) else "medium"


def evaluate(
    travel: TravelFacts,
    nominal: NominalFacts | None,
    settings: TriggerPolicy,
    tz: ZoneInfo,
    trip: Sequence[TravelFacts] = (),
) -> RuleResult:
    """`trip`: the other notifications of the nominal (those of the same trip count)."""
    if nominal is None or not nominal.subject_on(travel.departure_on):
        return RuleResult()
    if travel.cancelled or any(t.cancelled for t in trip if t.trip == travel.trip):
        return RuleResult()
    given = notice_given(travel, trip)
    severity = late(travel, given, settings.travel_notice_days, tz)
    if severity is None:
        return RuleResult()
    hours = (date_of_departure(travel, tz) - given) / timedelta(hours=1)  # before the date's start
    days = (travel.departure_on - local_date(given, tz)).days
    before = given <= departure_instant(travel, tz)
    when = f"{max(days, 0)} day(s) before departure" if before else "after departure"
    what = "possible breach of s.86" if severity == "high" else "check the reason"
    return RuleResult((AlertSpec(
        kind=LATE_NOTICE, severity=severity, visor_ref=travel.visor_ref, team=nominal.team,
        subject=travel.event_id, owner=nominal.offender_manager or None,
        summary=f"Travel notified {when} on {travel.departure_on.isoformat()} ({what}): "
        f"{travel.visor_ref}",
        details={
            "travel_notification": travel.event_id, "departure_on": travel.departure_on.isoformat(),
            "departure_at": travel.departure_at.isoformat() if travel.departure_at else None,
            "notified_at": given.isoformat(), "notice_days": days,
            "notice_hours": round(hours, 2), "required_days": settings.travel_notice_days,
            "minimum_hours": 12,
        },
    ),))
