"""Alerts: severities, states, receivers, what a rule asks for (AlertSpec) and the alert-kind
registry (ALERT_KINDS): one entry per kind with its whole policy (severity, default receivers,
escalation, what opens and resolves it). Routing defaults and docs/alerts.md come from here.

A new kind is one entry in ALERT_KINDS; tests/test_alert_registry.py fails until it has a docs line in
docs/alerts.md (`python -m casewatch.model.alert_docs` writes it) and every rule opens only
registered kinds at their registered severities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

Severity = Literal["critical", "high", "medium", "low"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
SEVERITY_RANK: dict[str, int] = {severity: rank for rank, severity in enumerate(SEVERITIES)}
LIVE_STATES = ("open", "acknowledged")  # at most one live alert per live key; then "resolved"



def severity_for_days(days_overdue: int, steps: Mapping[int, Severity]) -> Severity | None:
    """The severity of something `days_overdue` days late under `steps` (days overdue -> the
    severity from that day on, e.g. {1: "high", 28: "critical"}); None before the first step."""
    found: Severity | None = None
    for day in sorted(steps):
        if days_overdue >= day:
            found = steps[day]
    return found


# Who hears of an alert; casewatch/config/routing.py says how each reaches people.
Receiver = Literal[
    "team_channel", "spoc", "supervisors", "owner", "owner_email", "owner_dm", "control_room", "npt",
    "admins",
]
RECEIVERS: tuple[Receiver, ...] = get_args(Receiver)
# The route of a kind with no route of its own: nothing is ever routed to nobody.
FALLBACK_RECEIVERS: tuple[Receiver, ...] = ("team_channel", "spoc")


@dataclass(frozen=True)
class EscalationStep:
    after_seconds: int  # from the opening for the first step, from the previous step after that
    receivers: tuple[Receiver, ...]


# The chain an unacknowledged alert walks, by severity: wait, then the supervisors, then the
# next level up. A kind with escalates=False never walks one.
SEVERITY_ESCALATION: dict[Severity, tuple[EscalationStep, ...]] = {
    "critical": (
        EscalationStep(15 * 60, ("supervisors",)), EscalationStep(45 * 60, ("control_room", "spoc")),
    ),
    "high": (EscalationStep(60 * 60, ("supervisors",)), EscalationStep(4 * 3600, ("spoc",))),
    "medium": (EscalationStep(24 * 3600, ("supervisors",)),),
    "low": (),
}


@dataclass(frozen=True)
class AlertKind:
    """One alert kind's policy. `severities`: what the rule may set (one: fixed), `severity_rule`
    says how it chooses when there are several. The texts are docs/alerts.md's table cells."""

    kind: str
    severities: tuple[Severity, ...]
    receivers: tuple[Receiver, ...]
    opened_when: str
    subject: str
    resolved_when: str
    severity_rule: str = ""
    escalates: bool = True  # False: nobody is asked to acknowledge (reminders, admins' alerts)


_BORDER_EVENT = "the border event id"
_CHANGE_EVENT = "the event id of the change"
_NOTIFICATION_SUBJECT = (
    "`<kind>:<due date>` (initial, periodic, weekly); `change:<what>:<changed_on>` (a change or "
    "a release); `return:<return date>`"
)

ALERT_KINDS: dict[str, AlertKind] = {k.kind: k for k in (
    AlertKind(
        "travel.unnotified", ("high",), ("spoc", "team_channel"),
        "a `travel.border_alert` matches no leg of a notified trip (SOA 2003 s.86): a trip is its "
        "latest notification made before the check (same `trip_id`: amended; `travel.cancelled`: "
        "matches nothing); outbound near the departure, inbound after it and near the return "
        "(`border_match_window_days` [2] either side; no return date: the first inbound check "
        "within `open_trip_max_days` [90] of the departure); each leg matched by one check, each "
        "check matching one leg; a departure with no outbound check is no alert; for a nominal "
        "subject to the notification requirements on the check's day: registered "
        "and not after `notification_ends_on` (SOA 2003 s.80(2), s.82(1), s.86)",
        _BORDER_EVENT,
        "a travel notification made before the check arrives late (events out of order), or "
        "the check is evaluated again for a nominal who owed no notice",
    ),
    AlertKind(
        "travel.record_fta", ("high",), ("owner", "spoc"),
        "with `travel.unnotified`: a task for the offender manager to record the travel on the "
        "ViSOR Foreign Travel Attachment and assess a breach",
        _BORDER_EVENT, "as above, or acknowledged",
    ),
    AlertKind(
        "travel.confirmed", ("low",), ("spoc",),
        "a border check that matches a notification", _BORDER_EVENT, "acknowledged",
    ),
    AlertKind(
        "travel.unmatched_nominal", ("high",), ("spoc",),
        "a border check for a ViSOR reference not in the case store: never dropped, goes to "
        "`triggers.unmatched_team` (else the first team)",
        _BORDER_EVENT, "acknowledged",
    ),
    AlertKind(
        # No route of its own until issue 13, so the fallback route; kept as it was.
        "travel.late_notice", ("medium", "high"), FALLBACK_RECEIVERS,
        "foreign travel notified (the trip's first notice; a later one with the same `trip_id` "
        "amends it) fewer than `travel_notice_days` [7] days before departure: medium, for the "
        "offender manager to check the reason (12 hours' notice is lawful only where the details "
        "were not known earlier); under 12 hours before departure, or after it: high, a possible "
        "breach (SOA 2003 s.86; SI 2004/1220 as amended by SI 2012/1876). Measured back from "
        "the start of the departure date (7 clear days; 12 hours before it), whatever the hour of "
        "the flight. Only for a nominal "
        "subject to the notification requirements on the departure day (registered, not after "
        "`notification_ends_on`: s.80(2), s.82(1)); a cancelled trip is flagged no further",
        "the travel event id", "acknowledged",
        severity_rule="medium (under 7 days); high (under 12 hours, or after departure)",
    ),
    AlertKind(
        "notification.due_soon", ("low", "medium"), ("owner",),
        "within `notification_reminder_days` [14] (weekly: `weekly_notification_reminder_days` "
        "[1]) of a due day (the clocks as for `notification.missed`); nothing while the person is "
        "held or abroad with no end in sight",
        _NOTIFICATION_SUBJECT, "the notification is received; or it turns into "
        "`notification.missed`; or the person is held; or the notification period ends (s.82(1))",
        severity_rule="low (periodic), medium (initial, weekly, change, return)", escalates=False,
    ),
    AlertKind(
        "notification.missed", ("critical", "high", "medium", "low"), ("owner", "team_channel"),
        "a due day ended (local time) with no notification; \"within 3 days beginning with\" a day "
        "counts it as day 1 (16 Nov, due 18 Nov, missed from 19 Nov) and disregards the days held "
        "(remand, sentence, hospital, recall) or abroad (s.83(6), s.84(5)). `requirement` initial: "
        "`initial_notification_days` [3] beginning with the relevant date (conviction, finding or "
        "caution: SOA 2003 s.82(6), s.83(1)), or with the release when no relevant date is "
        "recorded; periodic: `periodic_notification_years` [1] after the last initial, change, "
        "periodic or weekly notification (s.85(1), (5)(b); 29 February -> 28 February); weekly, "
        "for no fixed abode instead of the year: `weekly_notification_days` [7] after the last of "
        "those (s.85(5)(a), (6), SI 2012/1876); a periodic or weekly day that falls while held or "
        "abroad moves to the 3rd day beginning with the first day back (s.85(3)-(4)); change: a "
        "`change.detected` not answered within 3 days beginning with the change by a change "
        "notification about it (s.84(1), SI 2012/1876; notice in advance giving the date within 2 "
        "days either side answers it, s.84(2)-(4)), and a release after the relevant date not "
        "followed by a full notification within 3 days beginning with it (s.84(1)(d)); return: a "
        "return from a notified trip (its inbound border check) with no return notification "
        "within 3 days beginning with it (s.86, SI 2004/1220). Travel and return notifications "
        "restart neither clock. Nothing while held or abroad with no end in sight (a day missed "
        "before the detention stays missed). Only for a registered nominal, and nothing falls "
        "due after `notification_ends_on` (s.82(1))",
        _NOTIFICATION_SUBJECT, "the notification is received (or the person is held, or the "
        "nominal is no longer registered, or the notification period ended: s.82(1))",
        severity_rule="by days overdue, `missed_notification_severity` [1: high, 28: critical]; "
        "a step up re-notifies",
    ),
    AlertKind(
        "notification.late", ("medium",), ("owner", "team_channel"),
        "a `change.detected` answered by a change notification made after its due day (3 days "
        "beginning with the change, days held or abroad disregarded: s.84(1), (5)): once, when "
        "the second of the two arrives",
        "`change:<what>:<changed_on>`", "acknowledged",
    ),
    AlertKind(
        "action.due_soon", ("low",), ("owner",),
        "an open MAPP or RMP action within `action_reminder_days` [7] of its due date",
        "the action id", "the action is done", escalates=False,
    ),
    AlertKind(
        "action.overdue", ("critical", "high", "medium", "low"), ("owner",),
        "the due date passed and the action is open; acknowledging it means owned, not done: "
        "while it is live (open or acknowledged) it is sent again to its owner every "
        "`repeat_reminder_hours` [72] hours", "the action id", "the action is done",
        severity_rule="by days overdue, `action_overdue_severity` [1: medium, 28: high] (a "
        "configuration setting only `action_very_overdue_days` gets that day as its high step); "
        "a step up re-notifies",
    ),
    AlertKind(
        "mappa.level_changed", ("medium", "high"), ("team_channel", "npt"),
        "a `mappa.level_changed`, or a changed `mappa_level` in `nominal.upsert` (the same change "
        "sent both ways within 14 days is one change)",
        _CHANGE_EVENT, "acknowledged", severity_rule="high to level 3, else medium",
    ),
    AlertKind(
        "mappa.visor_update_due", ("medium",), ("owner",),
        "with every level change: update ViSOR within `visor_update_days` [3]",
        _CHANGE_EVENT, "acknowledged",
    ),
    AlertKind(
        "mappa.decrease_without_rationale", ("medium",), ("owner", "supervisors"),
        "a decrease with no rationale", _CHANGE_EVENT, "a `mappa.level_changed` gives the rationale",
    ),
    AlertKind(
        "recall.issued", ("critical",), ("control_room", "team_channel", "npt", "spoc"),
        "`recall.issued`", "the recall event id", "`recall.returned` (the nominal is back in custody)",
        severity_rule="critical (emergency recalls marked first)",
    ),
    AlertKind(
        # Its repeats are its escalation: recall.issued, opened with it, walks the chain.
        "recall.unlawfully_at_large", ("critical",), ("control_room", "team_channel"),
        "a scan finds a recall issued and not returned: the nominal is unlawfully at large; "
        "while it is live, acknowledged or not, it is sent again every `repeat_reminder_hours` "
        "[12] hours (issue 15)",
        "the recall event id", "`recall.returned` (the nominal is back in custody); or custody "
        "after the recall on record (a `detention.started` on or after its day, a return on a later "
        "recall), a later recall issued, a `release_date` after it, or the nominal not in the case "
        "store (the feed missed the return)", escalates=False,
    ),
    AlertKind(
        "recall.risk_review_due", ("medium",), ("owner",),
        "`recall.returned`: a task for the offender manager to review the risk assessment (RMP, "
        "OASys) after the recall", "the recall event id", "acknowledged (the review is owned)",
    ),
    AlertKind(
        "visit.due", ("low",), ("owner",),
        "within `visit_reminder_days` [7] of a home visit's due day: the last `visit.recorded` "
        "plus the RMP's `visit_every_days`, else `visit_every_days_by_risk` for the risk level "
        "[very_high 30, high 90, medium 180, low 365: local choice; a level left out has no "
        "routine visits]; never visited: counted from the latest of the relevant date, the release "
        "date and `visits_recorded_from` [unset: no clock, so a first deployment does not alert on "
        "every nominal]. For a registered nominal within the notification period, or any "
        "nominal whose RMP sets a frequency; nothing while detained (custody: remand, sentence, "
        "hospital, recall)",
        "`visit:<due date>`", "a later visit is recorded (the due date moves); or it turns into "
        "`visit.overdue`; or the nominal is detained, or the frequency changes",
        escalates=False,
    ),
    AlertKind(
        "visit.overdue", ("medium",), ("owner", "team_channel"),
        "a home visit's due day (as for `visit.due`) ended with no visit recorded",
        "`visit:<due date>`", "a later visit is recorded; or the nominal is detained, or the "
        "frequency changes",
    ),
    AlertKind(
        "order.expiring", ("medium",), ("owner", "spoc"),
        "an active court order (`order.upsert`) whose `expires_on` is within "
        "`order_expiry_notice_days` [56] (local days), so a renewal can be applied for in time "
        "(SHPO: SOA 2003 s.103C(2), s.103E, and on conviction since 1 Dec 2020 the Sentencing "
        "Act 2020 Part 11 Chapter 2; SRO: s.122B(2), s.122D)",
        "`<order_id>:<expires_on>`",
        "the order is discharged or expired, renewed or varied (`expires_on` moved: a new "
        "subject), or no longer on record; or the expiry day is over (local time)",
    ),
    AlertKind(
        "mappa.minutes_overdue", ("medium", "high"), ("owner", "supervisors"),
        "a level 2 or 3 MAPP meeting (`meeting.held`) with no `minutes_on_visor_on` once its due "
        "day is over: 5 working days after a level 3 meeting, 10 after a level 2 one (ViSOR "
        "Standards, 2011 MAPPA inspection para 8.21); working days leave out weekends and the "
        "bank holidays of England and Wales, substitute days included (the `holidays` package); "
        "for a nominal in the case store",
        "the meeting id", "a later `meeting.held` sets `minutes_on_visor_on`",
        severity_rule="high for a level 3 meeting, medium for level 2",
    ),
    AlertKind(
        "rmp.review_due", ("medium", "low"), ("owner",),
        "within `rmp_review_reminder_days` [14] of the day the risk management plan is due a "
        "review: `rmp_review_weeks` [16] after the last `rmp.reviewed` (ACPO NPIA 2010 "
        "Guidance, 2011 MAPPA inspection para 8.30); never reviewed: after the later of the "
        "newest MAPPA level change recorded and `rmp_reviews_recorded_from` [unset: no clock, so "
        "a first deployment does not alert on every nominal]; for an active nominal (registered within the "
        "notification period, or at a MAPPA level: para 8.22)",
        "`rmp:<due date>`", "a later review is recorded (the due date moves), or the nominal is "
        "no longer active",
        severity_rule="low before the due day is over, then medium (a step up re-notifies)",
    ),
    AlertKind(
        "risk.changed", ("medium", "high"), ("team_channel", "owner", "npt"),
        "a changed `risk_level` or MAPPA `category` in `nominal.upsert` (a known nominal's; the "
        "history is the risk_changes table), with from/to and the direction; the 2005 joint "
        "inspection found risk changes not passed on in 17 of 40 cases (para 9.10)",
        _CHANGE_EVENT, "acknowledged",
        severity_rule="high when the risk level rises (low < medium < high < very high); else "
        "medium: a fall, or a category changed alone (categories are eligibility routes, not a "
        "scale: local choice)",
    ),
    AlertKind(
        "area.moved_out", ("low", "medium"), ("npt",),
        "a changed `area` in `nominal.upsert`: the neighbourhood team of the old area is told, "
        "with the ViSOR reference only (no address, no personal data: issue 15)",
        _CHANGE_EVENT, "acknowledged (told for information: never escalates)",
        severity_rule="medium for a nominal at high or very high risk, else low (local choice)",
        escalates=False,
    ),
    AlertKind(
        "area.moved_in", ("low", "medium"), ("npt",),
        "a changed `area` in `nominal.upsert`: the neighbourhood team of the new area is told, "
        "with the ViSOR reference only (no address, no personal data: issue 15)",
        _CHANGE_EVENT, "acknowledged (told for information: never escalates)",
        severity_rule="medium for a nominal at high or very high risk, else low (local choice)",
        escalates=False,
    ),
    AlertKind(
        "feed.unreadable", ("high",), ("spoc",),
        "a feed received something it could not turn into events (a border-alert mail it cannot "
        "read or match to one nominal, a snapshot's bad rows, a probation domain event with a bad "
        "body): kept as received (`casewatch inbound show <item>`), never lost; to the SPOC of "
        "the feed's team (`[inbound_mail] team`, else `triggers.unmatched_team`, else the first "
        "team); at most 20 live a feed (a sender gone wrong: later items are kept, listed by "
        "`casewatch inbound list`)",
        "`<source>:<item id>`",
        "`casewatch inbound done <item>`: a person dealt with the item (taking the alert on is not enough)",
    ),
    AlertKind(
        "feed.nominal_missing", ("medium",), ("owner", "supervisors"),
        "a full snapshot extract no longer lists a nominal of a team it covers (transferred out? "
        "deleted at source?): reported for a person to decide; nothing is deleted",
        "the extract's file name", "acknowledged",
    ),
    AlertKind(
        # The admins fix a stale job; the team's supervisors could not.
        "system.job_stale", ("high",), ("admins",),
        "a scheduled job has not succeeded for its period plus `schedules.stale_after_seconds`",
        "the job name", "the job succeeds again", escalates=False,
    ),
    AlertKind(
        "system.delivery_failed", ("medium", "high"), ("admins",),
        "a delivery dead-lettered (a Slack channel that does not exist, an address refused): one "
        "alert per failing address while it is live",
        "`<channel>:<address>`", "acknowledged (after fixing the address)",
        severity_rule="high when the failing message was critical or high, else medium",
        escalates=False,
    ),
)}


@dataclass(frozen=True)
class AlertSpec:
    """What a rule asks for. `summary` is what chat may carry: no names, no markers."""

    kind: str
    severity: Severity
    visor_ref: str
    team: str
    subject: str = ""
    summary: str = ""
    owner: str | None = None
    due_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def live_key(self) -> str:
        return live_key(self.kind, self.visor_ref, self.subject)


def live_key(kind: str, visor_ref: str, subject: str) -> str:
    return f"{kind}|{visor_ref}|{subject}"


# An AlertSpec.details key: the neighbourhood whose NPT an `npt` receiver means for this alert (a
# move: rules.risk), instead of the nominal's area; told without personal data (routing).
NPT_AREA = "npt_area"
