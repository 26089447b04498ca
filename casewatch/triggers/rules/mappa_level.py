"""MAPPA level changes: tell the team (`mappa.level_changed`, high when the new level is 3), give
the offender manager a task to put it on ViSOR within visor_update_days
(`mappa.visor_update_due`, due at the end of that local day), and flag a decrease that has no
rationale (`mappa.decrease_without_rationale`). The history itself is the level_changes table.
No level (null) counts as below level 1."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from zoneinfo import ZoneInfo

from casewatch.model.alerts import AlertSpec
from casewatch.model.clocks import end_of_day, local_date
from casewatch.model.facts import LevelChangeFacts, NominalFacts
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import LiveAlert, Resolution, RuleResult

LEVEL_CHANGED = "mappa.level_changed"
VISOR_UPDATE_DUE = "mappa.visor_update_due"
DECREASE_WITHOUT_RATIONALE = "mappa.decrease_without_rationale"
KINDS = (LEVEL_CHANGED, VISOR_UPDATE_DUE, DECREASE_WITHOUT_RATIONALE)


def _name(level: int | None) -> str:
    return "none" if level is None else str(level)


def on_rationale_given(change_event_id: str, live: Sequence[LiveAlert]) -> RuleResult:
    """A rationale arrived for a change already recorded: its decrease flag is answered."""
    return RuleResult(resolves=tuple(
        Resolution(alert, "rationale recorded")
        for alert in live
        if alert.kind == DECREASE_WITHOUT_RATIONALE and alert.subject == change_event_id
    ))


def evaluate(
    change: LevelChangeFacts, nominal: NominalFacts | None, settings: TriggerPolicy, tz: ZoneInfo
) -> RuleResult:
    before, after = change.from_level or 0, change.to_level or 0
    if before == after:
        return RuleResult()
    team = nominal.team if nominal is not None else settings.unmatched_team
    owner = nominal.offender_manager or None if nominal is not None else None
    move = f"{_name(change.from_level)} -> {_name(change.to_level)}"
    changed_on = local_date(change.changed_at, tz)
    update_by = changed_on + timedelta(days=settings.visor_update_days)
    details = {
        "level_change": change.event_id, "from_level": change.from_level,
        "to_level": change.to_level, "changed_at": change.changed_at.isoformat(),
        "rationale_given": bool(change.rationale.strip()), "recorded_by": change.recorded_by,
        "direction": "increase" if after > before else "decrease",
        # An increase to level 2 or 3 needs the MAPPA coordinator and the neighbourhood team.
        "area": nominal.area if nominal is not None else "",
    }
    ref = change.visor_ref
    specs = [
        AlertSpec(
            kind=LEVEL_CHANGED, severity="high" if after == 3 else "medium", visor_ref=ref,
            team=team, subject=change.event_id, owner=owner,
            summary=f"MAPPA level {move}: {ref}", details=details,
        ),
        AlertSpec(
            kind=VISOR_UPDATE_DUE, severity="medium", visor_ref=ref, team=team,
            subject=change.event_id, owner=owner, due_at=end_of_day(update_by, tz),
            summary=f"Update ViSOR with MAPPA level {move} by {update_by.isoformat()}: {ref}",
            details={**details, "update_by": update_by.isoformat()},
        ),
    ]
    if after < before and not change.rationale.strip():
        specs.append(AlertSpec(
            kind=DECREASE_WITHOUT_RATIONALE, severity="medium", visor_ref=ref, team=team,
            subject=change.event_id, owner=owner,
            summary=f"MAPPA level decrease {move} has no rationale: {ref}", details=details,
        ))
    return RuleResult(tuple(specs))
