"""Border travel: a UK border check (Warnings Index match, sent to the MOSOVO SPOC) matched
against the nominal's travel notifications.

Travel as trips (issue 14; SOA 2003 s.86 and SI 2004/1220 as amended by SI 2012/1876: notice of
the departure, the destination and, where known, the return). A trip is the latest notification
with its trip_id made before the check (a later one amends it; without a trip_id a notification
is a trip of its own); a cancelled trip (travel.cancelled) matches nothing. A trip has two legs:

- outbound: a check within border_match_window_days of the departure date;
- inbound: a check from the departure on (less the window, and after the check that matched the
  trip's outbound leg, if one did) within the window of the return date; with no return date,
  the first inbound check no later than open_trip_max_days [90] after the departure (a trip from
  2024 with no return date does not "confirm" a 2026 return).

A border check matches at most one leg of one trip, and a leg is matched by at most one check:
the nominal's outbound checks, then its inbound ones, are taken in time order, each matching the
first free leg it fits. A
departure with no outbound check is no alert. The check's day is its local day in the service
timezone.

- a match: `travel.confirmed` (low);
- no match: `travel.unnotified` (high, for the SPOC) and `travel.record_fta` (high, a task for
  the offender manager: record it on the ViSOR Foreign Travel Attachment, assess a breach);
- no such nominal: `travel.unmatched_nominal` (high, for the SPOC): a border alert is never dropped;
- a nominal not subject to the notification requirements on the check's day (not registered, or
  after notification_ends_on, SOA 2003 s.80(1), s.82(1)) owes no travel notice (s.86), so no
  match is no breach: a matching notification is still confirmed, an unmatched check raises
  nothing (and its unnotified alerts, if any, resolve).

The subject is the border check's event id: each check is its own alert. A notification that
arrives after the check, but was made before it (events out of order), turns an unnotified
check into a confirmed one: the two unnotified alerts resolve and a confirmation opens.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from casewatch.model.alerts import AlertSpec
from casewatch.model.clocks import local_date
from casewatch.model.facts import BorderCheckFacts, NominalFacts, TravelFacts
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import Desired, LiveAlert, RuleResult

CONFIRMED = "travel.confirmed"
UNNOTIFIED = "travel.unnotified"
RECORD_FTA = "travel.record_fta"
UNMATCHED_NOMINAL = "travel.unmatched_nominal"
KINDS = (CONFIRMED, UNNOTIFIED, RECORD_FTA, UNMATCHED_NOMINAL)
# Only these resolve on their own (when a matching notification turns up); a confirmation or an
# unknown reference is for a person to acknowledge.
SELF_RESOLVING = (UNNOTIFIED, RECORD_FTA)


def _trips_at(travels: Sequence[TravelFacts], at: datetime) -> list[TravelFacts]:
    """Each trip as notified by `at` (its latest notification made by then), cancelled ones
    left out, in departure order."""
    latest: dict[str, TravelFacts] = {}
    for travel in sorted(travels, key=lambda t: (t.notified_at, t.event_id)):
        if travel.notified_at <= at:
            latest[travel.trip] = travel
    cancelled = {t.trip for t in travels if t.cancelled}
    return sorted(
        (t for t in latest.values() if t.trip not in cancelled), key=lambda t: (t.departure_on, t.event_id)
    )


def _fits(
    check: BorderCheckFacts, travel: TravelFacts, outbound_at: datetime | None, settings: TriggerPolicy,
    tz: ZoneInfo,
) -> bool:
    day = local_date(check.checked_at, tz)
    window = timedelta(days=settings.border_match_window_days)
    if check.direction == "outbound":
        return travel.departure_on - window <= day <= travel.departure_on + window
    if day < travel.departure_on - window or (outbound_at is not None and check.checked_at <= outbound_at):
        return False  # an inbound leg comes after the departure
    if travel.return_on is None:
        return day <= travel.departure_on + timedelta(days=settings.open_trip_max_days)
    return travel.return_on - window <= day <= travel.return_on + window


def assign(
    checks: Sequence[BorderCheckFacts], travels: Sequence[TravelFacts], settings: TriggerPolicy,
    tz: ZoneInfo,
) -> dict[str, TravelFacts]:
    """Border check event id -> the trip (its current notification) whose leg it matches. The
    outbound checks, then the inbound ones, each in time order; each takes the first free leg it
    fits, so a leg is matched once."""
    taken: set[tuple[str, str]] = set()
    outbound_at: dict[str, datetime] = {}
    matched: dict[str, TravelFacts] = {}
    # outbound legs first, so an inbound check knows when its trip left
    for check in sorted(checks, key=lambda c: (c.direction != "outbound", c.checked_at, c.event_id)):
        for travel in _trips_at([t for t in travels if t.visor_ref == check.visor_ref], check.checked_at):
            leg = (travel.trip, check.direction)
            if leg in taken or not _fits(check, travel, outbound_at.get(travel.trip), settings, tz):
                continue
            taken.add(leg)
            matched[check.event_id] = travel
            if check.direction == "outbound":
                outbound_at[travel.trip] = check.checked_at
            break
    return matched


def matching_travel(
    check: BorderCheckFacts,
    travels: Sequence[TravelFacts],
    settings: TriggerPolicy,
    tz: ZoneInfo,
    others: Sequence[BorderCheckFacts] = (),
) -> TravelFacts | None:
    """The trip whose leg `check` matches, given the nominal's other border checks `others`."""
    checks = [c for c in others if c.event_id != check.event_id] + [check]
    return assign(checks, travels, settings, tz).get(check.event_id)


def evaluate(
    check: BorderCheckFacts,
    nominal: NominalFacts | None,
    travels: Sequence[TravelFacts],
    live: Sequence[LiveAlert],
    settings: TriggerPolicy,
    tz: ZoneInfo,
    others: Sequence[BorderCheckFacts] = (),
) -> RuleResult:
    """`live`: live travel alerts about this check (subject = its event id); `others`: the
    nominal's other border checks (a leg they match is not free for this one)."""
    day = local_date(check.checked_at, tz).isoformat()
    details = {
        "border_check": check.event_id, "port": check.port, "direction": check.direction,
        "checked_at": check.checked_at.isoformat(),
    }
    desired = Desired()
    if nominal is None:
        desired.want(AlertSpec(
            kind=UNMATCHED_NOMINAL, severity="high", visor_ref=check.visor_ref,
            team=settings.unmatched_team, subject=check.event_id,
            summary=f"Border check for unknown ViSOR reference {check.visor_ref}: "
            f"{check.direction} on {day}",
            details=details,
        ))
        return desired.against([], "")
    travel = matching_travel(check, travels, settings, tz, others)
    where = f"{check.visor_ref}, {check.direction} on {day}"
    if travel is not None:
        desired.want(AlertSpec(
            kind=CONFIRMED, severity="low", visor_ref=check.visor_ref, team=nominal.team,
            subject=check.event_id, summary=f"Notified travel confirmed at the border: {where}",
            owner=nominal.offender_manager or None,
            details={**details, "travel_notification": travel.event_id},
        ))
    elif nominal.subject_on(local_date(check.checked_at, tz)):
        desired.want(AlertSpec(
            kind=UNNOTIFIED, severity="high", visor_ref=check.visor_ref, team=nominal.team,
            subject=check.event_id, summary=f"Unnotified travel: {where}", details=details,
        ))
        desired.want(AlertSpec(
            kind=RECORD_FTA, severity="high", visor_ref=check.visor_ref, team=nominal.team,
            subject=check.event_id, owner=nominal.offender_manager or None,
            summary=f"Record unnotified travel on the ViSOR Foreign Travel Attachment and assess "
            f"a breach: {where}",
            details=details,
        ))
    return desired.against(
        [a for a in live if a.kind in SELF_RESOLVING and a.subject == check.event_id],
        "a travel notification made before the check matches it, or the nominal owed none",
    )
