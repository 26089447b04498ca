"""rules.risk: `risk.changed` for a changed risk level or MAPPA category, and `area.moved_out` /
`area.moved_in` for the neighbourhood teams of the old and the new area. Each row cites its source:
the 2005 joint inspection of sex offender management (shared/seeds/004: the OASys levels of risk
of serious harm, glossary; risk changes not passed on in 17 of 40 cases, para 9.10), the 2011
joint inspection of MAPPA (shared/seeds/002: categories are eligibility routes, para 2.8), APP on
managing sexual offenders (shared/seeds/003: "NPTs should be notified ... in their geographic
area"), issue 15, or "local choice"."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from casewatch.config.triggers import TriggerSection
from casewatch.model.alerts import NPT_AREA
from casewatch.model.facts import NominalFacts, RiskChangeFacts
from casewatch.triggers.rules import risk
from casewatch.triggers.rules.risk import MOVED_IN, MOVED_OUT, RISK_CHANGED

REF = "VIS-TEST-0001"
AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
POLICY = TriggerSection()
OUT = f"{REF} has moved out of your area"  # the least information: no address, no name
IN = f"{REF} has moved into your area"
NOMINAL = NominalFacts(
    visor_ref=REF, team="north", offender_manager="PC1234", area="N02", risk_level="medium", category="1"
)


def change(
    risk_from: str | None = None,
    risk_to: str | None = None,
    category_from: str | None = None,
    category_to: str | None = None,
    area_from: str | None = None,
    area_to: str | None = None,
) -> RiskChangeFacts:
    return RiskChangeFacts(
        event_id="ev-risk-1", visor_ref=REF, from_risk=risk_from, to_risk=risk_to,
        from_category=category_from, to_category=category_to, from_area=area_from, to_area=area_to,
        changed_at=AT,
    )


@pytest.mark.parametrize(
    ("facts", "severity", "direction", "summary"),
    [
        # 2005 inspection glossary: low < medium < high < very high; issue 15: an increase is high.
        (change("medium", "high"), "high", "increase", "Risk level medium -> high (increase)"),
        (change("low", "very_high"), "high", "increase", "Risk level low -> very high (increase)"),
        (change("high", "very_high"), "high", "increase", "Risk level high -> very high (increase)"),
        # 2005 inspection para 9.10: a fall is passed on too; medium (local choice).
        (change("very_high", "high"), "medium", "decrease", "Risk level very high -> high (decrease)"),
        (change("medium", "low"), "medium", "decrease", "Risk level medium -> low (decrease)"),
        # 2011 inspection para 2.8: a category is an eligibility route, not a scale: "changed",
        # medium, in either direction of the number (local choice).
        (change(category_from="1", category_to="3"), "medium", "changed", "MAPPA category 1 -> 3 (changed)"),
        (change(category_from="4", category_to="2"), "medium", "changed", "MAPPA category 4 -> 2 (changed)"),
        # Both in one upsert: the risk level's direction decides (issue 15: an increase is high).
        (
            change("low", "medium", "2", "1"), "high", "increase",
            "Risk level low -> medium, MAPPA category 2 -> 1 (increase)",
        ),
        (
            change("high", "medium", "1", "3"), "medium", "decrease",
            "Risk level high -> medium, MAPPA category 1 -> 3 (decrease)",
        ),
    ],
)
def test_risk_changed(facts: RiskChangeFacts, severity: str, direction: str, summary: str) -> None:
    [spec] = risk.evaluate(facts, NOMINAL, POLICY).opens
    assert (spec.kind, spec.severity, spec.subject) == (RISK_CHANGED, severity, "ev-risk-1")
    assert spec.summary == f"{summary}: {REF}"  # no name, no address
    # issue 15: to the team and the offender manager (the route adds the NPT), with from/to.
    assert (spec.team, spec.owner, spec.visor_ref) == ("north", "PC1234", REF)
    assert spec.details["direction"] == direction
    assert (spec.details["from_risk"], spec.details["to_risk"]) == (facts.from_risk, facts.to_risk)
    categories = (spec.details["from_category"], spec.details["to_category"])
    assert categories == (facts.from_category, facts.to_category)
    assert NPT_AREA not in spec.details  # the NPT of the nominal's own area hears of it


@pytest.mark.parametrize(
    ("facts", "risk_level", "expected"),
    [
        # APP (NPTs notified of offenders in their area): the old area hears "moved out", the new
        # one "moved in"; low for a low or medium risk nominal (local choice).
        (
            change(area_from="N01", area_to="N02"), "medium",
            {(MOVED_OUT, "N01", "low", OUT), (MOVED_IN, "N02", "low", IN)},
        ),
        # Medium for a nominal at high or very high risk (local choice).
        (
            change(area_from="N01", area_to="N02"), "very_high",
            {(MOVED_OUT, "N01", "medium", OUT), (MOVED_IN, "N02", "medium", IN)},
        ),
        # The level the same upsert sets counts, not the one before (local choice).
        (
            change("high", "low", area_from="N01", area_to="N02"), "low",
            {(RISK_CHANGED, None, "medium", f"Risk level high -> low (decrease): {REF}"),
             (MOVED_OUT, "N01", "low", OUT), (MOVED_IN, "N02", "low", IN)},
        ),
        # No neighbourhood on one side: nobody there to tell (local choice).
        (change(area_from="", area_to="N02"), "low", {(MOVED_IN, "N02", "low", IN)}),
        (change(area_from="N01", area_to=""), "low", {(MOVED_OUT, "N01", "low", OUT)}),
        # Nothing of these changed (the record is the change of something else): nothing.
        (change(), "medium", set()),
    ],
)
def test_moves(facts: RiskChangeFacts, risk_level: str, expected: set[tuple[object, ...]]) -> None:
    nominal = NominalFacts(REF, "north", "PC1234", area="N02", risk_level=risk_level)
    opens = risk.evaluate(facts, nominal, POLICY).opens
    assert {(s.kind, s.details.get(NPT_AREA), s.severity, s.summary) for s in opens} == expected
    for spec in opens:
        assert spec.subject == "ev-risk-1" and spec.team == "north"
        if spec.kind != RISK_CHANGED:
            # issue 15, no personal data: the reference and the move; no owner to chase.
            assert spec.owner is None
            assert set(spec.details) == {NPT_AREA, "from_area", "to_area", "changed_at"}


def test_an_unknown_nominal_goes_to_the_unmatched_team() -> None:
    policy = TriggerSection(unmatched_team="south")
    [spec] = risk.evaluate(change("low", "high"), None, policy).opens
    assert (spec.team, spec.owner, spec.severity) == ("south", None, "high")


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ("low", "medium", "increase"), ("medium", "high", "increase"), ("high", "very_high", "increase"),
        ("very_high", "low", "decrease"), (None, "low", "increase"), ("high", None, "decrease"),
        ("medium", "medium", None),
    ],
)
def test_risk_direction_follows_the_oasys_order(
    before: str | None, after: str | None, expected: str | None
) -> None:
    # 2005 inspection glossary: low, medium, high, very high; a missing level is below low.
    assert risk.risk_direction(before, after) == expected
