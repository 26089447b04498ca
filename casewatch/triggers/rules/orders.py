"""Court orders (issue 15): `order.expiring` (medium) to the offender manager and the SPOC once an
active order's expiry date is within `order_expiry_notice_days` [56], so that a renewal (or a new
order) can be applied for before the protection lapses (a SHPO or SRO is made for a fixed period
or until further order, and may be renewed: SOA 2003 s.103C(2) and s.103E for a SHPO, s.122B(2)
and s.122D for an SRO; the 2005 joint inspection, para 4.23, found an order applied for only as a
licence was coming to an end).

The alert's subject is `<order_id>:<expires_on>`, so one renewal (a later expiry date) is a new
subject: the old alert resolves and, if the new date is near as well, a new one opens. The alert
resolves when the order is discharged or expired (`order.upsert` status), renewed or varied (its
`expires_on` moved or cleared), or no longer on record, and when the expiry day is over (local
time): then there is nothing left to warn of ahead of expiry, and an alert kept open for an order
the source still calls active would stay for ever if the source never says otherwise. /flags
shows an order past its expiry date as lapsed, not active (lookup.flags).

Pure: facts in, a RuleResult out. Nothing personal: the summary names the order id, its kind and
the dates, never its prohibitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from casewatch.model.alerts import AlertSpec
from casewatch.model.clocks import end_of_day, start_of_day
from casewatch.model.facts import NominalFacts, OrderFacts
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import LiveAlert, Resolution, RuleResult

EXPIRING = "order.expiring"
KINDS = (EXPIRING,)

ORDER_KINDS = {
    "shpo": "SHPO", "sro": "SRO", "notification_order": "notification order",
    "foreign_travel_order": "foreign travel order", "other": "order",
}


def subject_for(order_id: str, expires_on: date) -> str:
    return f"{order_id}:{expires_on.isoformat()}"


def order_id_of(subject: str) -> str:
    """The order id in a subject: what comes before the last colon (the date has none)."""
    return subject.rsplit(":", 1)[0]


def notice_window(
    order: OrderFacts, settings: TriggerPolicy, tz: ZoneInfo
) -> tuple[datetime, datetime] | None:
    """From the start of the day `order_expiry_notice_days` before the expiry date to the end of
    the expiry day (local time), for an active order with an expiry date; else None."""
    if order.status != "active" or order.expires_on is None:
        return None
    opens = start_of_day(order.expires_on - timedelta(days=settings.order_expiry_notice_days), tz)
    return opens, end_of_day(order.expires_on, tz)


def _team(nominal: NominalFacts | None, settings: TriggerPolicy) -> str:
    return nominal.team if nominal is not None else settings.unmatched_team


def wanted(
    order: OrderFacts, nominal: NominalFacts | None, now: datetime, settings: TriggerPolicy, tz: ZoneInfo
) -> AlertSpec | None:
    window = notice_window(order, settings, tz)
    if window is None or not window[0] <= now < window[1]:
        return None
    expires_on = order.expires_on
    assert expires_on is not None  # a window needs one
    label = ORDER_KINDS.get(order.kind, "order")
    return AlertSpec(
        kind=EXPIRING, severity="medium", visor_ref=order.visor_ref, team=_team(nominal, settings),
        subject=subject_for(order.order_id, expires_on),
        summary=(
            f"Court order {order.order_id} ({label}) expires {expires_on.isoformat()}: "
            f"{order.visor_ref}: consider renewal"
        ),
        owner=(nominal.offender_manager or None) if nominal is not None else None,
        due_at=window[1],
        details={
            "order_id": order.order_id, "order_kind": order.kind, "made_on": order.made_on.isoformat(),
            "expires_on": expires_on.isoformat(),
        },
    )


def _reason(order: OrderFacts | None, subject: str, now: datetime, tz: ZoneInfo) -> str:
    """Why a live alert for this order is no longer wanted."""
    if order is None:
        return "order no longer on record"
    if order.status == "discharged":
        return "order discharged"
    if order.status == "expired":
        return "order expired"
    if order.expires_on is None:
        return "order renewed or varied: no expiry date now"
    if subject != subject_for(order.order_id, order.expires_on):
        return f"order renewed or varied: now expires {order.expires_on.isoformat()}"
    if now >= end_of_day(order.expires_on, tz):
        return "expiry day passed"
    return "no longer within the notice period"


def evaluate(
    order: OrderFacts | None,
    nominal: NominalFacts | None,
    live: Sequence[LiveAlert],
    now: datetime,
    settings: TriggerPolicy,
    tz: ZoneInfo,
) -> RuleResult:
    """One order as of `now`. `live`: the live `order.expiring` alerts of this order (its
    nominal's, with this order id in the subject); a missing order (None) wants nothing, so
    they resolve."""
    spec = wanted(order, nominal, now, settings, tz) if order is not None else None
    keep = spec.subject if spec is not None else None
    resolves = tuple(
        Resolution(a, _reason(order, a.subject, now, tz))
        for a in live
        if a.kind == EXPIRING and a.subject != keep
    )
    return RuleResult((spec,) if spec is not None else (), resolves)
