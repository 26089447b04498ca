"""MAPPA level changes: the team alert, the ViSOR update task and the missing-rationale flag."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from casewatch.config.triggers import TriggerSection
from casewatch.model.facts import LevelChangeFacts, NominalFacts
from casewatch.triggers.rules import mappa_level
from casewatch.triggers.rules.mappa_level import DECREASE_WITHOUT_RATIONALE, LEVEL_CHANGED, VISOR_UPDATE_DUE

TZ = ZoneInfo("Europe/London")
SETTINGS = TriggerSection()
NOMINAL = NominalFacts(visor_ref="VS-0000004", team="north", offender_manager="PC1234", area="N1")


def change(
    before: int | None, after: int | None, rationale: str = "", at: str = "2026-11-20T09:30:00"
) -> LevelChangeFacts:
    return LevelChangeFacts(
        event_id="ev-level-1",
        visor_ref="VS-0000004",
        from_level=before,
        to_level=after,
        rationale=rationale,
        changed_at=datetime.fromisoformat(at).replace(tzinfo=UTC),
        recorded_by="visor-export",
    )


@pytest.mark.parametrize(
    ("before", "after", "rationale", "expected"),
    [
        (2, 3, "", {LEVEL_CHANGED: "high", VISOR_UPDATE_DUE: "medium"}),
        (1, 2, "", {LEVEL_CHANGED: "medium", VISOR_UPDATE_DUE: "medium"}),
        (None, 3, "", {LEVEL_CHANGED: "high", VISOR_UPDATE_DUE: "medium"}),
        (3, 2, "stable for a year", {LEVEL_CHANGED: "medium", VISOR_UPDATE_DUE: "medium"}),
        (
            3,
            1,
            "  ",
            {LEVEL_CHANGED: "medium", VISOR_UPDATE_DUE: "medium", DECREASE_WITHOUT_RATIONALE: "medium"},
        ),
        (
            2,
            None,
            "",
            {LEVEL_CHANGED: "medium", VISOR_UPDATE_DUE: "medium", DECREASE_WITHOUT_RATIONALE: "medium"},
        ),
        (2, 2, "", {}),
    ],
)
def test_alerts_for_a_change(
    before: int | None, after: int | None, rationale: str, expected: dict[str, str]
) -> None:
    result = mappa_level.evaluate(change(before, after, rationale), NOMINAL, SETTINGS, TZ)
    assert {s.kind: s.severity for s in result.opens} == expected
    assert all(s.subject == "ev-level-1" and s.team == "north" for s in result.opens)


@pytest.mark.parametrize(
    ("at", "due_at"),
    [
        ("2026-11-20T09:30:00", "2026-11-24T00:00:00"),  # 20 Nov + 3 days, end of the day in GMT
        ("2026-07-20T22:30:00", "2026-07-23T23:00:00"),  # 23:30 BST: still 20 July locally
        ("2026-07-20T23:30:00", "2026-07-24T23:00:00"),  # 00:30 BST: 21 July locally
        ("2026-10-22T12:00:00", "2026-10-26T00:00:00"),  # due on the autumn change day
    ],
)
def test_visor_update_is_due_at_the_end_of_the_third_local_day(at: str, due_at: str) -> None:
    result = mappa_level.evaluate(change(1, 2, at=at), NOMINAL, SETTINGS, TZ)
    task = next(s for s in result.opens if s.kind == VISOR_UPDATE_DUE)
    assert task.owner == "PC1234"
    assert task.due_at == datetime.fromisoformat(due_at).replace(tzinfo=UTC)


def test_an_unknown_nominal_still_gets_the_alert() -> None:
    result = mappa_level.evaluate(change(1, 3), None, TriggerSection(unmatched_team="mosovo"), TZ)
    assert {s.team for s in result.opens} == {"mosovo"}
    assert {s.owner for s in result.opens} == {None}


def test_summary_carries_no_rationale() -> None:
    result = mappa_level.evaluate(change(3, 2, "disclosed to partner agency"), NOMINAL, SETTINGS, TZ)
    assert all("partner" not in s.summary for s in result.opens)
    assert result.opens[0].summary == "MAPPA level 3 -> 2: VS-0000004"
    assert result.opens[0].details["rationale_given"] is True
