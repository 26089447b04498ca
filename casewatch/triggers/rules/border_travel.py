"""Border travel: a UK border check (Warnings Index match, sent to the MOSOVO SPOC) matched
against the nominal's travel notifications.

A check matches a notification made before it whose dates it falls near, in its direction:
outbound within border_match_window_days of the departure date, inbound within the window of
the return date (any day from departure on when the return is open-ended). The check's day is
its local day in the service timezone.

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
from datetime import timedelta
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


def matching_travel(
    check: BorderCheckFacts, travels: Sequence[TravelFacts], window_days: int, tz: ZoneInfo
) -> TravelFacts | None:
    day = local_date(check.checked_at, tz)
    window = timedelta(days=window_days)
    for travel in sorted(travels, key=lambda t: (t.departure_on, t.event_id)):
        if travel.visor_ref != check.visor_ref or travel.notified_at > check.checked_at:
            continue
        if check.direction == "outbound":
            near = travel.departure_on - window <= day <= travel.departure_on + window
        elif travel.return_on is None:
            near = day >= travel.departure_on - window
        else:
            near = travel.return_on - window <= day <= travel.return_on + window
        if near:
            return travel
    return None


def evaluate(
    check: BorderCheckFacts,
    nominal: NominalFacts | None,
    travels: Sequence[TravelFacts],
    live: Sequence[LiveAlert],
    settings: TriggerPolicy,
    tz: ZoneInfo,
) -> RuleResult:
    """`live`: live travel alerts about this check (subject = its event id)."""
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
    travel = matching_travel(check, travels, settings.border_match_window_days, tz)
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
