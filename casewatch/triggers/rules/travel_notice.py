"""Late travel notice: foreign travel must be notified travel_notice_days before departure
(later only where the details were not known earlier), so a later notice is flagged for the
offender manager to check (`travel.late_notice`, low). travel_notice_days = 0 turns it off.
Nobody is flagged who is not subject to the notification requirements on the departure day (not
registered, or a departure after notification_ends_on: SOA 2003 s.80(1), s.82(1), s.86)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from casewatch.model.alerts import AlertSpec
from casewatch.model.clocks import local_date
from casewatch.model.facts import NominalFacts, TravelFacts
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import RuleResult

LATE_NOTICE = "travel.late_notice"


def evaluate(
    travel: TravelFacts, nominal: NominalFacts | None, settings: TriggerPolicy, tz: ZoneInfo
) -> RuleResult:
    notice_days = (travel.departure_on - local_date(travel.notified_at, tz)).days
    if (
        nominal is None
        or not nominal.subject_on(travel.departure_on)
        or notice_days >= settings.travel_notice_days
    ):
        return RuleResult()
    owner = nominal.offender_manager or None
    return RuleResult((AlertSpec(
        kind=LATE_NOTICE, severity="low", visor_ref=travel.visor_ref, team=nominal.team,
        subject=travel.event_id, owner=owner,
        summary=f"Travel notified {max(notice_days, 0)} day(s) before departure on "
        f"{travel.departure_on.isoformat()}: {travel.visor_ref}",
        details={
            "travel_notification": travel.event_id, "departure_on": travel.departure_on.isoformat(),
            "notice_days": notice_days, "required_days": settings.travel_notice_days,
        },
    ),))
