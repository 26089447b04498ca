"""The overdue-action rule, with a fixed clock in Europe/London."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from casewatch.clock import FixedClock
from casewatch.config.triggers import TriggerSection
from casewatch.model.facts import ActionFacts
from casewatch.model.results import LiveAlert
from casewatch.triggers.rules import actions
from casewatch.triggers.rules.actions import DUE_SOON, OVERDUE

TZ = ZoneInfo("Europe/London")
SETTINGS = TriggerSection()


def utc(text: str) -> datetime:
    return FixedClock(datetime.fromisoformat(text).replace(tzinfo=UTC)).now()


def action(due_on: date, **changes: object) -> ActionFacts:
    base = dict(
        action_id="MAPP-1",
        visor_ref="VS-0000002",
        owner="PC1234",
        due_on=due_on,
        status="open",
        nominal_team="north",
        owner_team="south",
    )
    return ActionFacts(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("due_on", "at", "expected"),
    [
        (date(2026, 11, 20), "2026-11-12T23:59:59", None),
        (date(2026, 11, 20), "2026-11-13T00:00:00", (DUE_SOON, "low")),  # 7 days before
        (date(2026, 11, 20), "2026-11-20T23:59:59", (DUE_SOON, "low")),
        (date(2026, 11, 20), "2026-11-21T00:00:00", (OVERDUE, "medium")),
        (date(2026, 11, 20), "2026-12-17T12:00:00", (OVERDUE, "medium")),  # 27 days late
        (date(2026, 11, 20), "2026-12-18T00:00:00", (OVERDUE, "high")),  # 28 days late
        # summer time and both changes of the clocks
        (date(2026, 7, 10), "2026-07-10T22:59:59", (DUE_SOON, "low")),
        (date(2026, 7, 10), "2026-07-10T23:00:00", (OVERDUE, "medium")),
        (date(2026, 3, 29), "2026-03-29T22:59:59", (DUE_SOON, "low")),
        (date(2026, 3, 29), "2026-03-29T23:00:00", (OVERDUE, "medium")),
        (date(2026, 10, 25), "2026-10-25T23:59:59", (DUE_SOON, "low")),
        (date(2026, 10, 25), "2026-10-26T00:00:00", (OVERDUE, "medium")),
        (date(2028, 2, 29), "2028-02-29T23:59:59", (DUE_SOON, "low")),
        (date(2028, 2, 29), "2028-03-01T00:00:00", (OVERDUE, "medium")),
    ],
)
def test_due_soon_and_overdue(due_on: date, at: str, expected: tuple[str, str] | None) -> None:
    spec = actions.wanted(action(due_on), utc(at), SETTINGS, TZ)
    assert (None if spec is None else (spec.kind, spec.severity)) == expected
    if spec is not None:
        assert (spec.owner, spec.subject, spec.team) == ("PC1234", "MAPP-1", "north")
        assert due_on.isoformat() in spec.summary  # the owner travels in spec.owner


def test_team_falls_back_to_the_owners_then_the_configured_default() -> None:
    at = utc("2026-12-01T00:00:00")
    unknown_nominal = action(date(2026, 11, 20), nominal_team=None)
    spec = actions.wanted(unknown_nominal, at, SETTINGS, TZ)
    assert spec is not None and spec.team == "south"
    nobody = action(date(2026, 11, 20), nominal_team=None, owner_team=None)
    spec = actions.wanted(nobody, at, TriggerSection(unmatched_team="mosovo"), TZ)
    assert spec is not None and spec.team == "mosovo"


@pytest.mark.parametrize(
    ("facts", "live", "resolved"),
    [
        (action(date(2026, 11, 20), status="done"), [OVERDUE], [OVERDUE]),  # done
        (action(date(2027, 1, 20)), [OVERDUE], [OVERDUE]),  # moved to a later date
        (None, [DUE_SOON], [DUE_SOON]),  # gone
        (action(date(2026, 11, 20)), [DUE_SOON], [DUE_SOON]),  # became overdue
        (action(date(2026, 11, 20)), [OVERDUE], []),  # still overdue
    ],
)
def test_resolving(facts: ActionFacts | None, live: list[str], resolved: list[str]) -> None:
    alerts = [LiveAlert(kind, "VS-0000002", "MAPP-1") for kind in live]
    result = actions.evaluate(facts, alerts, utc("2026-12-01T00:00:00"), SETTINGS, TZ)
    assert [r.alert.kind for r in result.resolves] == resolved
    if facts is not None and facts.status == "done":
        assert result.resolves[0].reason == "action done"
