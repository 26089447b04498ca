"""Issue 15, pure: the recall rules (unlawfully at large, the risk review after a return), when a
live alert is due a reminder, the overdue-action severity steps and their configuration, and the
reminder's text. Tables of worked examples; each row says what it encodes.

A recall is policy, not the Sexual Offences Act 2003 (a licence recall is under the Criminal
Justice Act 2003 s.254(6): on revocation, if at large, the nominal is unlawfully at large until back
in custody); the intervals and steps are local choices in config (triggers.*).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from casewatch.alerts.reminders import reminder_due
from casewatch.config import ConfigError, load_config
from casewatch.config.triggers import TriggerSection
from casewatch.delivery import render
from casewatch.model.alerts import Severity
from casewatch.model.facts import ActionFacts, NominalFacts, RecallFacts
from casewatch.model.results import LiveAlert
from casewatch.triggers.rules import actions, recall

TZ = ZoneInfo("Europe/London")
POLICY = TriggerSection()
REF = "VIS-TEST-0001"
NOMINAL = NominalFacts(visor_ref=REF, team="north", offender_manager="PC1234", area="N1")
ISSUED = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


def _recall(returned_at: datetime | None = None, recall_type: str = "standard") -> RecallFacts:
    return RecallFacts("ev-recall-1", REF, recall_type, ISSUED, returned_at=returned_at)


AT_LARGE = LiveAlert(recall.AT_LARGE, REF, "ev-recall-1", "critical")
ISSUED_ALERT = LiveAlert(recall.ISSUED, REF, "ev-recall-1", "critical")


@pytest.mark.parametrize(
    ("why", "facts", "live", "now", "opens", "resolves"),
    [
        ("issued, not returned: at large, so the alert is wanted",
         _recall(), [], ISSUED + H, [recall.AT_LARGE], []),
        ("already live: still wanted (reconcile.apply skips the open), nothing resolves",
         _recall(), [AT_LARGE], ISSUED + 30 * H, [recall.AT_LARGE], []),
        ("returned to custody: the live alert resolves",
         _recall(ISSUED + 30 * H), [AT_LARGE], ISSUED + 31 * H, [], ["returned to custody"]),
        ("a return before the recall is an earlier custody: still at large",
         _recall(ISSUED - 48 * H), [], ISSUED + H, [recall.AT_LARGE], []),
        ("a scan as of an instant before the recall: nothing yet, nothing resolved",
         _recall(), [AT_LARGE], ISSUED - H, [], []),
        ("recall.issued is the event's alert: left alone here",
         _recall(ISSUED + 2 * H), [ISSUED_ALERT], ISSUED + 3 * H, [], []),
    ],
)
def test_unlawfully_at_large_while_not_returned(
    why: str, facts: RecallFacts, live: list[LiveAlert], now: datetime, opens: list[str], resolves: list[str]
) -> None:
    result = recall.at_large(facts, NOMINAL, live, now, POLICY, TZ)
    assert [s.kind for s in result.opens] == opens, why
    assert [r.reason for r in result.resolves] == resolves, why
    assert all(r.alert.kind == recall.AT_LARGE for r in result.resolves), why


LATER = ISSUED + 30 * H  # 21 Nov 2026, 15:00 UTC
RECORD = recall.CustodyRecord


@pytest.mark.parametrize(
    ("why", "nominal", "record", "reason"),
    [
        # CJA 2003 s.254(6): unlawfully at large only until back in custody. Any custody after the
        # recall is on record means the feed missed the return (the review's "first deployment":
        # every historical recall with no return repeated critical every 12 hours for ever).
        ("a detention started the day after the recall: in custody, not at large",
         NOMINAL, RECORD(detention_started_on=date(2026, 11, 21)),
         "in custody since the recall (detention started)"),
        ("... started the same local day as the recall counts (dates have no time of day)",
         NOMINAL, RECORD(detention_started_on=date(2026, 11, 20)),
         "in custody since the recall (detention started)"),
        ("a detention that started before the recall is an earlier custody: still at large",
         NOMINAL, RECORD(detention_started_on=date(2026, 11, 19)), None),
        ("the return on a later recall: back in custody since this one",
         NOMINAL, RECORD(recall_returned_at=LATER), "returned to custody on a later recall"),
        ("a return on an earlier recall, before this one: still at large",
         NOMINAL, RECORD(recall_returned_at=ISSUED - 48 * H), None),
        ("a later recall issued: only a person out on licence is recalled, so this one was served",
         NOMINAL, RECORD(recall_issued_at=LATER), "superseded by a later recall"),
        ("this recall itself as the newest issued: still at large",
         NOMINAL, RECORD(recall_issued_at=ISSUED), None),
        ("released again after the recall (release_date after issued_at): the feed missed the return",
         replace(NOMINAL, release_date=date(2027, 3, 1)), RECORD(),
         "released after the recall (the return was not received)"),
        ("a release date on or before the recall's day is the release it recalls from: at large",
         replace(NOMINAL, release_date=date(2026, 11, 20)), RECORD(), None),
        ("nominal unknown or no longer in the case store: no alert for nobody's team",
         None, RECORD(), "nominal not in the case store"),
    ],
)
def test_custody_or_liberty_on_record_ends_the_time_at_large(
    why: str, nominal: NominalFacts | None, record: recall.CustodyRecord, reason: str | None
) -> None:
    now = ISSUED + 100 * H
    result = recall.at_large(_recall(), nominal, [AT_LARGE, ISSUED_ALERT], now, POLICY, TZ, record)
    if reason is None:
        assert [s.kind for s in result.opens] == [recall.AT_LARGE] and not result.resolves, why
        return
    assert not result.opens, why
    assert [(r.alert, r.reason) for r in result.resolves] == [(AT_LARGE, reason)], why
    fresh = recall.at_large(_recall(), nominal, [], now, POLICY, TZ, record)
    assert not fresh.opens and not fresh.resolves, why


@pytest.mark.parametrize(
    ("why", "issued_at", "shown"),
    [
        ("winter: GMT, the UTC wall clock", ISSUED, "2026-11-20 09:00 (London time)"),
        ("summer: BST, an hour ahead of UTC", datetime(2026, 6, 1, 8, 30, tzinfo=UTC),
         "2026-06-01 09:30 (London time)"),
        ("just before midnight UTC in summer is the next day in London",
         datetime(2026, 6, 1, 23, 15, tzinfo=UTC), "2026-06-02 00:15 (London time)"),
    ],
)
def test_the_at_large_summary_shows_the_service_time(why: str, issued_at: datetime, shown: str) -> None:
    facts = RecallFacts("ev-recall-1", REF, "emergency", issued_at)
    (spec,) = recall.at_large(facts, NOMINAL, [], issued_at, POLICY, TZ).opens
    assert spec.summary == (
        f"Unlawfully at large: {REF}: emergency recall issued {shown}, not returned to custody"
    ), why
    assert spec.details["issued_at"] == issued_at.isoformat(), why


def test_the_at_large_alert_is_critical_for_the_team_with_no_personal_data() -> None:
    (spec,) = recall.at_large(_recall(recall_type="emergency"), NOMINAL, [], ISSUED, POLICY, TZ).opens
    assert (spec.severity, spec.team, spec.owner, spec.subject) == (
        "critical", "north", "PC1234", "ev-recall-1",
    )
    assert spec.summary == (
        f"Unlawfully at large: {REF}: emergency recall issued 2026-11-20 09:00 (London time), "
        "not returned to custody"
    )
    assert spec.details["emergency"] is True


@pytest.mark.parametrize(
    ("why", "facts", "wanted"),
    [
        ("returned: the offender manager reviews the risk assessment (RMP/OASys) after a recall",
         _recall(ISSUED + 30 * H), True),
        ("not returned: no review yet", _recall(), False),
        ("a return before the recall is not its return", _recall(ISSUED - H), False),
    ],
)
def test_a_return_owes_a_risk_review(why: str, facts: RecallFacts, wanted: bool) -> None:
    opens = recall.risk_review(facts, NOMINAL, POLICY).opens
    assert bool(opens) == wanted, why
    if wanted:
        (spec,) = opens
        assert (spec.kind, spec.severity, spec.owner, spec.subject) == (
            "recall.risk_review_due", "medium", "PC1234", "ev-recall-1",
        )
        assert spec.summary == (
            f"Review the risk assessment after the recall: {REF}, returned to custody 2026-11-21"
        )


def test_a_return_resolves_both_recall_alerts_issued_before_it() -> None:
    later = LiveAlert(recall.AT_LARGE, REF, "ev-recall-2")
    result = recall.on_returned(
        ISSUED + H, {"ev-recall-1": ISSUED, "ev-recall-2": ISSUED + 2 * H}, [ISSUED_ALERT, AT_LARGE, later]
    )
    assert sorted((r.alert.kind, r.alert.subject) for r in result.resolves) == [
        (recall.ISSUED, "ev-recall-1"), (recall.AT_LARGE, "ev-recall-1"),
    ]


T = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("why", "last", "now", "every", "due"),
    [
        ("72 h: not a minute before", None, T + 72 * H - timedelta(minutes=1), 72 * H, False),
        ("72 h after the opening", None, T + 72 * H, 72 * H, True),
        ("from the last reminder, not the opening", T + 72 * H, T + 100 * H, 72 * H, False),
        ("72 h after the last reminder", T + 72 * H, T + 144 * H, 72 * H, True),
        ("a scan that missed a slot sends one, then counts from it", T + 80 * H, T + 150 * H, 72 * H, False),
        ("12 h (a recall) after the opening", None, T + 12 * H, 12 * H, True),
        ("a re-run as of the same instant: nothing", T + 12 * H, T + 12 * H, 12 * H, False),
        ("sent as of a later instant (scan --at ahead): not again before then", T + 30 * H, T + 24 * H,
         12 * H, False),
    ],
)
def test_reminder_due(why: str, last: datetime | None, now: datetime, every: timedelta, due: bool) -> None:
    assert reminder_due(T, last, now, every) is due, why


DUE = date(2026, 11, 20)
FOUR: dict[int, Severity] = {1: "low", 7: "medium", 28: "high", 90: "critical"}


def _late(days: int) -> datetime:
    """Noon, `days` days after the due day (local)."""
    return datetime.combine(DUE + timedelta(days=days), datetime.min.time(), TZ) + 12 * H


@pytest.mark.parametrize(
    ("why", "settings", "days", "severity"),
    [
        ("default: medium from day 1", {}, 1, "medium"),
        ("default: still medium on day 27", {}, 27, "medium"),
        ("default: high from day 28 (after the 2011 inspection)", {}, 28, "high"),
        ("legacy: action_very_overdue_days alone is the high step", {"action_very_overdue_days": 14}, 13,
         "medium"),
        ("legacy: ... from that day", {"action_very_overdue_days": 14}, 14, "high"),
        ("a table of four steps", {"action_overdue_severity": FOUR}, 6, "low"),
        ("... critical from day 90", {"action_overdue_severity": FOUR}, 90, "critical"),
        ("table and day agreeing", {"action_overdue_severity": {1: "medium", 10: "high"},
                                    "action_very_overdue_days": 10}, 10, "high"),
    ],
)
def test_action_overdue_severity_steps(
    why: str, settings: dict[str, Any], days: int, severity: Severity
) -> None:
    policy = TriggerSection(**settings)
    action = ActionFacts("MAPP-1", REF, "PC1234", DUE, "open", "north")
    (spec,) = actions.evaluate(action, [], _late(days), policy, TZ).opens
    assert (spec.kind, spec.severity, spec.details["days_overdue"]) == ("action.overdue", severity, days), why


@pytest.mark.parametrize(
    ("why", "settings", "error"),
    [
        ("steps that fall", {"action_overdue_severity": {1: "high", 28: "medium"}}, "must not fall"),
        ("no day 1", {"action_overdue_severity": {2: "medium"}}, "from day 1"),
        ("table and day disagreeing", {"action_overdue_severity": {1: "medium", 28: "high"},
                                       "action_very_overdue_days": 14}, "disagrees"),
        ("an unknown kind", {"repeat_reminder_hours": {"action.overdew": 72}}, "unknown alert kind"),
        ("0 hours", {"repeat_reminder_hours": {"action.overdue": 0}}, "1 to 720"),
        ("over 30 days", {"repeat_reminder_hours": {"recall.unlawfully_at_large": 721}}, "1 to 720"),
    ],
)
def test_bad_trigger_settings_are_refused(why: str, settings: Mapping[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        TriggerSection(**settings)


def test_the_defaults_and_the_toml_tables(tmp_path: Path) -> None:
    assert POLICY.repeat_reminder_hours == {"action.overdue": 72, "recall.unlawfully_at_large": 12}
    assert POLICY.action_overdue_steps == {1: "medium", 28: "high"}
    path = tmp_path / "casewatch.toml"
    path.write_text(
        '[triggers.repeat_reminder_hours]\n"recall.unlawfully_at_large" = 6\n'
        '[triggers.action_overdue_severity]\n1 = "medium"\n14 = "high"\n', encoding="utf-8",
    )
    triggers = load_config(path, environ={}).triggers
    assert triggers.repeat_reminder_hours == {"recall.unlawfully_at_large": 6}  # replaces the defaults
    assert triggers.action_overdue_steps == {1: "medium", 14: "high"}
    path.write_text('[triggers.repeat_reminder_hours]\n"nope" = 6\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"triggers\.repeat_reminder_hours.*unknown alert kind"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("payload", "line"),
    [
        ({"open_hours": 12, "state": "open"}, "Reminder: still outstanding after 12 hours"),
        ({"open_hours": 1, "state": "open"}, "Reminder: still outstanding after 1 hour"),
        ({"open_hours": 72, "state": "acknowledged", "acknowledged_by": "PC1234"},
         "Reminder: still outstanding after 3 days; acknowledged by PC1234, not yet done"),
        ({"open_hours": 60, "state": "open"}, "Reminder: still outstanding after 2 days 12 hours"),
        ({"state": "open"}, "Reminder: still outstanding"),
        ({"open_hours": "<!channel>", "state": "open"}, "Reminder: still outstanding"),
    ],
)
def test_the_reminder_says_what_is_outstanding_and_for_how_long(payload: dict[str, Any], line: str) -> None:
    p = {
        "alert_id": "A-TEST51", "kind": "action.overdue", "severity": "medium", "visor_ref": REF,
        "team": "north", "change": "reminder", "summary": f"Action MAPP-1 overdue: {REF}, due 2026-11-20",
        **payload,
    }
    assert render.change_line(p) == line
    assert render.subject(p) == f"[casewatch] MEDIUM action.overdue {REF} A-TEST51: {line}"
    assert render.chat_text(p) == f"[MEDIUM] action.overdue {REF} (A-TEST51): {p['summary']} | {line}"
    assert line in render.plain_text(p) and p["summary"] in render.plain_text(p)
