"""Recall: critical until returned; emergency recalls marked first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from casewatch.config.triggers import TriggerSection
from casewatch.model.facts import NominalFacts, RecallFacts
from casewatch.model.results import LiveAlert
from casewatch.triggers.rules import recall

NOMINAL = NominalFacts(visor_ref="VS-0000005", team="north", offender_manager="PC1234", area="N1")
ISSUED = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def facts(recall_type: str = "standard", **changes: object) -> RecallFacts:
    base = dict(event_id="ev-recall-1", visor_ref="VS-0000005", recall_type=recall_type, issued_at=ISSUED)
    return RecallFacts(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("f", "summary_start", "emergency"),
    [
        (facts("emergency"), "EMERGENCY recall issued: VS-0000005", True),
        (facts("standard", emergency=True), "EMERGENCY recall issued: VS-0000005", True),
        (facts("fixed_term"), "Recall (fixed term) issued: VS-0000005", False),
        (facts("standard"), "Recall (standard) issued: VS-0000005", False),
    ],
)
def test_issued_is_critical(f: RecallFacts, summary_start: str, emergency: bool) -> None:
    (spec,) = recall.on_issued(f, NOMINAL, TriggerSection()).opens
    assert (spec.kind, spec.severity, spec.subject, spec.team) == (
        "recall.issued",
        "critical",
        "ev-recall-1",
        "north",
    )
    assert spec.summary.startswith(summary_start)
    assert spec.details["emergency"] is emergency


def test_a_return_heard_of_first_opens_nothing() -> None:
    returned = facts(returned_at=ISSUED + timedelta(hours=2))
    assert recall.on_issued(returned, NOMINAL, TriggerSection()).opens == ()
    older_return = facts(returned_at=ISSUED - timedelta(days=30))
    assert len(recall.on_issued(older_return, NOMINAL, TriggerSection()).opens) == 1


def test_returned_resolves_recalls_issued_before_it() -> None:
    live = [
        LiveAlert("recall.issued", "VS-0000005", "ev-recall-1"),
        LiveAlert("recall.issued", "VS-0000005", "ev-recall-2"),
        LiveAlert("recall.issued", "VS-0000005", "ev-unknown"),
    ]
    issued = {"ev-recall-1": ISSUED, "ev-recall-2": ISSUED + timedelta(days=2)}
    result = recall.on_returned(ISSUED + timedelta(days=1), issued, live)
    assert sorted(r.alert.subject for r in result.resolves) == ["ev-recall-1", "ev-unknown"]
