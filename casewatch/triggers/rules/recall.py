"""Recall: `recall.issued` (critical) opens when a licence is revoked and stays open until the
nominal is returned to custody. Emergency recalls are marked as such, first in the summary.

While a recall is not returned the nominal is unlawfully at large: the scan keeps
`recall.unlawfully_at_large` (critical) live for it, and that alert repeats to the control room
and the team (triggers.repeat_reminder_hours) whether or not anyone acknowledged it, until
`recall.returned` (issue 15), or until custody or liberty after the recall is on record
(CustodyRecord): a detention started on or after the recall's local date, a return on a later
recall, a later recall issued, or a release date after it. A return opens
`recall.risk_review_due` for the offender manager: a recall needs the risk assessment (the RMP,
OASys) reviewed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from casewatch.model.alerts import AlertSpec
from casewatch.model.clocks import local_date
from casewatch.model.facts import NominalFacts, RecallFacts
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import NOTHING, Desired, LiveAlert, Resolution, RuleResult

ISSUED = "recall.issued"
AT_LARGE = "recall.unlawfully_at_large"
RISK_REVIEW = "recall.risk_review_due"
# The kinds a return resolves (a risk review is opened by it, and resolves by acknowledgement).
KINDS = (ISSUED, AT_LARGE)


@dataclass(frozen=True)
class CustodyRecord:
    """What the case store says of one nominal's custody, newest first: the facts that end a
    recall's time at large when the feed missed its `recall.returned`."""

    detention_started_on: date | None = None  # the newest detention.started `started_on`
    recall_returned_at: datetime | None = None  # the newest return on any of the nominal's recalls
    recall_issued_at: datetime | None = None  # the newest recall issued


def returned(recall: RecallFacts) -> bool:
    """Back in custody: a return at or after the recall (one before it is an earlier custody)."""
    return recall.returned_at is not None and recall.returned_at >= recall.issued_at


def _team(nominal: NominalFacts | None, settings: TriggerPolicy) -> str:
    return nominal.team if nominal is not None else settings.unmatched_team


def _owner(nominal: NominalFacts | None) -> str | None:
    return (nominal.offender_manager or None) if nominal is not None else None


def _label(recall: RecallFacts) -> tuple[str, bool]:
    emergency = recall.emergency or recall.recall_type == "emergency"
    label = "EMERGENCY recall" if emergency else f"Recall ({recall.recall_type.replace('_', ' ')})"
    return label, emergency


def on_issued(
    recall: RecallFacts, nominal: NominalFacts | None, settings: TriggerPolicy
) -> RuleResult:
    if returned(recall):
        return RuleResult()  # the return was heard of first: nobody is at large
    label, emergency = _label(recall)
    return RuleResult((AlertSpec(
        kind=ISSUED, severity="critical", visor_ref=recall.visor_ref,
        team=_team(nominal, settings),
        subject=recall.event_id,
        owner=_owner(nominal),
        summary=f"{label} issued: {recall.visor_ref}: find and arrest; at large until returned",
        details={
            "recall": recall.event_id, "recall_type": recall.recall_type, "emergency": emergency,
            "issued_at": recall.issued_at.isoformat(),
            "area": nominal.area if nominal is not None else "",
        },
    ),))


def no_longer_at_large(
    recall: RecallFacts, nominal: NominalFacts | None, record: CustodyRecord, tz: ZoneInfo
) -> str | None:
    """Why the nominal is not (or no longer known to be) at large on this recall, or None.
    Without these a recall whose return the feed never sent would repeat critical for ever."""
    if returned(recall):
        return "returned to custody"
    if nominal is None:
        return "nominal not in the case store"
    issued_on = local_date(recall.issued_at, tz)
    if record.detention_started_on is not None and record.detention_started_on >= issued_on:
        return "in custody since the recall (detention started)"
    if record.recall_returned_at is not None and record.recall_returned_at >= recall.issued_at:
        return "returned to custody on a later recall"
    if record.recall_issued_at is not None and record.recall_issued_at > recall.issued_at:
        # Only a person out on licence is recalled: a later recall means this one was served.
        return "superseded by a later recall"
    if nominal.release_date is not None and nominal.release_date > issued_on:
        return "released after the recall (the return was not received)"
    return None


def _local_time(at: datetime, tz: ZoneInfo) -> str:
    """'2026-06-01 09:30 (London time)': the service's wall clock, named."""
    place = tz.key.rsplit("/", 1)[-1].replace("_", " ")
    return f"{at.astimezone(tz).strftime('%Y-%m-%d %H:%M')} ({place} time)"


def at_large(
    recall: RecallFacts,
    nominal: NominalFacts | None,
    live: Sequence[LiveAlert],
    now: datetime,
    settings: TriggerPolicy,
    tz: ZoneInfo,
    record: CustodyRecord = CustodyRecord(),
) -> RuleResult:
    """The scan's view of one recall: `recall.unlawfully_at_large` wanted while it is issued (by
    `now`) and the nominal is still at large on it (no_longer_at_large); a live one resolves,
    with the reason, once not. `live`: the live alerts whose subject is this recall's event id
    (other kinds are left alone)."""
    mine = [a for a in live if a.kind == AT_LARGE]
    ended = no_longer_at_large(recall, nominal, record, tz)
    if ended is not None:
        return RuleResult(resolves=tuple(Resolution(a, ended) for a in mine))
    if recall.issued_at > now:
        return NOTHING  # a scan as of an earlier instant: not yet issued, and not over either
    label, emergency = _label(recall)
    desired = Desired()
    desired.want(AlertSpec(
        kind=AT_LARGE, severity="critical", visor_ref=recall.visor_ref, team=_team(nominal, settings),
        subject=recall.event_id, owner=_owner(nominal),
        summary=f"Unlawfully at large: {recall.visor_ref}: {label.lower()} issued "
        f"{_local_time(recall.issued_at, tz)}, not returned to custody",
        details={
            "recall": recall.event_id, "recall_type": recall.recall_type, "emergency": emergency,
            "issued_at": recall.issued_at.isoformat(),
        },
    ))
    return desired.against(mine, "returned to custody")


def risk_review(
    recall: RecallFacts, nominal: NominalFacts | None, settings: TriggerPolicy
) -> RuleResult:
    """A returned recall: the offender manager reviews the risk assessment (issue 15; a recall
    is one of the events that need an RMP/OASys review)."""
    if not returned(recall):
        return NOTHING
    assert recall.returned_at is not None
    return RuleResult((AlertSpec(
        kind=RISK_REVIEW, severity="medium", visor_ref=recall.visor_ref, team=_team(nominal, settings),
        subject=recall.event_id, owner=_owner(nominal),
        summary=f"Review the risk assessment after the recall: {recall.visor_ref}, returned to "
        f"custody {recall.returned_at.date().isoformat()}",
        details={
            "recall": recall.event_id, "recall_type": recall.recall_type,
            "issued_at": recall.issued_at.isoformat(), "returned_at": recall.returned_at.isoformat(),
        },
    ),))


def on_returned(
    returned_at: datetime, issued_at: Mapping[str, datetime], live: Sequence[LiveAlert]
) -> RuleResult:
    """Resolve the live recall alerts (issued, unlawfully at large) of a nominal returned to
    custody. `issued_at` maps a recall alert's subject (the recall event id) to when it was
    issued; a recall issued after this return (events out of order) stays open."""
    return RuleResult(resolves=tuple(
        Resolution(alert, "returned to custody")
        for alert in live
        if alert.kind in KINDS
        and (alert.subject not in issued_at or issued_at[alert.subject] <= returned_at)
    ))
