"""Recall: `recall.issued` (critical) opens when a licence is revoked and stays open until the
nominal is returned to custody. Emergency recalls are marked as such, first in the summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from casewatch.model.alerts import AlertSpec
from casewatch.model.facts import NominalFacts, RecallFacts
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import LiveAlert, Resolution, RuleResult

ISSUED = "recall.issued"
KINDS = (ISSUED,)


def on_issued(
    recall: RecallFacts, nominal: NominalFacts | None, settings: TriggerPolicy
) -> RuleResult:
    if recall.returned_at is not None and recall.returned_at >= recall.issued_at:
        return RuleResult()  # the return was heard of first: nobody is at large
    emergency = recall.emergency or recall.recall_type == "emergency"
    label = "EMERGENCY recall" if emergency else f"Recall ({recall.recall_type.replace('_', ' ')})"
    return RuleResult((AlertSpec(
        kind=ISSUED, severity="critical", visor_ref=recall.visor_ref,
        team=nominal.team if nominal is not None else settings.unmatched_team,
        subject=recall.event_id,
        owner=(nominal.offender_manager or None) if nominal is not None else None,
        summary=f"{label} issued: {recall.visor_ref}: find and arrest; at large until returned",
        details={
            "recall": recall.event_id, "recall_type": recall.recall_type, "emergency": emergency,
            "issued_at": recall.issued_at.isoformat(),
            "area": nominal.area if nominal is not None else "",
        },
    ),))


def on_returned(
    returned_at: datetime, issued_at: Mapping[str, datetime], live: Sequence[LiveAlert]
) -> RuleResult:
    """Resolve the live recall alerts of a nominal returned to custody. `issued_at` maps a recall
    alert's subject (the recall event id) to when it was issued; a recall issued after this
    return (events out of order) stays open."""
    return RuleResult(resolves=tuple(
        Resolution(alert, "returned to custody")
        for alert in live
        if alert.kind == ISSUED
        and (alert.subject not in issued_at or issued_at[alert.subject] <= returned_at)
    ))
