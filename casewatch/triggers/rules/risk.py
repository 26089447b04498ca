"""Risk changes and moves (issue 15), from the change a nominal.upsert recorded (risk_changes).

`risk.changed`: a changed risk level or MAPPA category goes to the team, the offender manager and
the neighbourhood team, with from/to and the direction. The 2005 joint inspection found, in 17 of
40 cases, a change in risk of harm with no sign it had been passed on (para 9.10).

- The risk level is the OASys risk of serious harm, low < medium < high < very high (2005 joint
  inspection, glossary). A rise is an increase, high severity (issue 15); a fall is a decrease,
  medium.
- A MAPPA category is the route by which the offender is eligible for MAPPA (1 registered sexual
  offender, 2 violent or other sexual offender, 3 other dangerous offender: 2011 joint
  inspection para 2.8; the contract adds 4), not a scale of risk. So casewatch reads neither an
  increase nor a decrease into a change of category (local choice): on its own it is direction
  "changed", medium; with a rise of risk level in the same upsert, the rise makes it high.

`area.moved_out` / `area.moved_in`: a changed area tells the neighbourhood team of the old area
that the nominal moved out and the one of the new area that the nominal moved in ("NPTs should be
notified, as appropriate, about the details of sexual and violent offenders ... in their
geographic area": APP, public protection and neighbourhood policing). Least information: the
ViSOR reference and the move, never the address; routing names the area's NPT from the alert's
details (NPT_AREA) and sends no personal data with it. Low, or medium for a nominal at high or
very high risk (local choice); nobody is chased for them (the NPT is told for information).
"""

from __future__ import annotations

from typing import Literal

from casewatch.model.alerts import NPT_AREA, AlertSpec, Severity
from casewatch.model.facts import NominalFacts, RiskChangeFacts
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import RuleResult

RISK_CHANGED = "risk.changed"
MOVED_OUT = "area.moved_out"
MOVED_IN = "area.moved_in"
KINDS = (RISK_CHANGED, MOVED_OUT, MOVED_IN)

RISK_ORDER = ("low", "medium", "high", "very_high")  # OASys risk of serious harm, lowest first
_HIGH_RISK = ("high", "very_high")

Direction = Literal["increase", "decrease", "changed"]


def _rank(level: str | None) -> int:
    """A level's place in RISK_ORDER; an unknown or missing level is below low."""
    return RISK_ORDER.index(level) if level in RISK_ORDER else -1


def risk_direction(before: str | None, after: str | None) -> Direction | None:
    """The direction of a change of risk level; None when it did not change."""
    if before == after:
        return None
    return "increase" if _rank(after) > _rank(before) else "decrease"


def direction(change: RiskChangeFacts) -> Direction | None:
    """The direction of the whole change: the risk level's when it changed, else "changed" for a
    category changed alone; None when neither changed (a move alone)."""
    moved = risk_direction(change.from_risk, change.to_risk)
    if moved is not None:
        return moved
    return "changed" if change.from_category != change.to_category else None


def _name(value: str | None) -> str:
    return (value or "none").replace("_", " ")


def _summary(change: RiskChangeFacts, way: Direction) -> str:
    parts = []
    if change.from_risk != change.to_risk:
        parts.append(f"Risk level {_name(change.from_risk)} -> {_name(change.to_risk)}")
    if change.from_category != change.to_category:
        parts.append(f"MAPPA category {_name(change.from_category)} -> {_name(change.to_category)}")
    return f"{', '.join(parts)} ({way}): {change.visor_ref}"


def evaluate(change: RiskChangeFacts, nominal: NominalFacts | None, settings: TriggerPolicy) -> RuleResult:
    team = nominal.team if nominal is not None else settings.unmatched_team
    owner = (nominal.offender_manager or None) if nominal is not None else None
    specs: list[AlertSpec] = []
    way = direction(change)
    if way is not None:
        specs.append(AlertSpec(
            kind=RISK_CHANGED, severity="high" if way == "increase" else "medium",
            visor_ref=change.visor_ref, team=team, subject=change.event_id, owner=owner,
            summary=_summary(change, way),
            details={
                "risk_change": change.event_id, "direction": way,
                "from_risk": change.from_risk, "to_risk": change.to_risk,
                "from_category": change.from_category, "to_category": change.to_category,
                "changed_at": change.changed_at.isoformat(),
            },
        ))
    if change.from_area != change.to_area:
        risk = change.to_risk or (nominal.risk_level if nominal is not None else "")
        severity: Severity = "medium" if risk in _HIGH_RISK else "low"
        moves = ((MOVED_OUT, change.from_area, "out of"), (MOVED_IN, change.to_area, "into"))
        for kind, area, words in moves:
            if not area:  # no neighbourhood on that side: nobody to tell
                continue
            specs.append(AlertSpec(
                kind=kind, severity=severity, visor_ref=change.visor_ref, team=team,
                subject=change.event_id, summary=f"{change.visor_ref} has moved {words} your area",
                details={
                    NPT_AREA: area, "from_area": change.from_area, "to_area": change.to_area,
                    "changed_at": change.changed_at.isoformat(),
                },
            ))
    return RuleResult(tuple(specs))
