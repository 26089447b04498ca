"""rules.visits: home visits due soon and overdue, worked examples. Each row cites its source: the
RMP's frequency (contract v2 `visit_every_days`), the configured risk bands (local choice, after
the 2005 joint inspection's Table 1 and domain.md), or the custody rule (rules.custody). All
references are fictional."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from casewatch.config import load_config
from casewatch.config.triggers import TriggerSection
from casewatch.model.facts import DetentionFacts, NominalFacts, NotificationHistory
from casewatch.model.results import LiveAlert
from casewatch.triggers.rules import visits

TZ = ZoneInfo("Europe/London")
POLICY = TriggerSection()
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # local 20 Nov 2026
REF = "VIS-TEST-0001"


@dataclass(frozen=True)
class Row:
    why: str
    nominal: dict[str, Any]
    last_visit: date | None
    want: tuple[str, str, str] | None  # (kind, severity, subject), None: nothing
    history: NotificationHistory = field(default_factory=NotificationHistory)
    settings: dict[str, Any] = field(default_factory=dict)


def _nominal(**kw: Any) -> NominalFacts:
    values: dict[str, Any] = {
        "visor_ref": REF, "team": "north", "offender_manager": "PC1234", "risk_level": "high",
    }
    values.update(kw)
    return NominalFacts(**values)


ROWS = [
    Row("high band 90 days (local choice; 2005 inspection Table 1: 3-monthly): visited 1 Sep, due "
        "30 Nov, beyond the 7-day reminder", {}, date(2026, 9, 1), None),
    Row("high band: visited 20 Aug, due 18 Nov, the due day over: overdue (medium)",
        {}, date(2026, 8, 20), ("visit.overdue", "medium", "visit:2026-11-18")),
    Row("high band: visited 25 Aug, due 23 Nov, within the 7-day reminder: due soon (low)",
        {}, date(2026, 8, 25), ("visit.due", "low", "visit:2026-11-23")),
    Row("high band: due today (20 Nov) is not yet overdue: due soon",
        {}, date(2026, 8, 22), ("visit.due", "low", "visit:2026-11-20")),
    Row("the reminder starts exactly visit_reminder_days [7] before the due day (27 Nov)",
        {}, date(2026, 8, 29), ("visit.due", "low", "visit:2026-11-27")),
    Row("8 days ahead: no reminder yet", {}, date(2026, 8, 30), None),
    Row("the RMP's visit_every_days (contract v2) beats the band: every 28 days, visited 20 Oct, "
        "due 17 Nov: overdue", {"visit_every_days": 28}, date(2026, 10, 20),
        ("visit.overdue", "medium", "visit:2026-11-17")),
    Row("very high band 30 days (monthly, 2005 inspection Forces B and E): visited 1 Oct, due 31 Oct",
        {"risk_level": "very_high"}, date(2026, 10, 1), ("visit.overdue", "medium", "visit:2026-10-31")),
    Row("low band 365 days: visited 1 Dec 2025, due 1 Dec 2026: nothing yet",
        {"risk_level": "low"}, date(2025, 12, 1), None),
    Row("a risk level left out of the bands: reactive management (domain.md), no routine visits",
        {"risk_level": "low"}, date(2020, 1, 1), None, settings={"visit_every_days_by_risk": {"high": 90}}),
    Row("no risk level and no RMP frequency: no clock", {"risk_level": ""}, date(2020, 1, 1), None),
    Row("first deployment: never visited, visits_recorded_from unset: no clock (released 1 Aug + 90 "
        "= 30 Oct is not an overdue visit: the visit may predate the feed)",
        {"relevant_date": date(2024, 5, 1), "release_date": date(2026, 8, 1)}, None, None),
    Row("first deployment: released in 2019 and never visited on record, setting unset: no alert",
        {"relevant_date": date(2018, 5, 1), "release_date": date(2019, 3, 1)}, None, None),
    Row("never visited, feed complete from 1 Jun: counted from the later release (local choice), "
        "1 Aug + 90 = 30 Oct: overdue",
        {"relevant_date": date(2024, 5, 1), "release_date": date(2026, 8, 1)}, None,
        ("visit.overdue", "medium", "visit:2026-10-30"), settings={"visits_recorded_from": date(2026, 6, 1)}),
    Row("first deployment: released in 2019, the feed complete from 25 Aug 2026: counted from the "
        "feed, due 23 Nov: due soon, not years overdue",
        {"relevant_date": date(2018, 5, 1), "release_date": date(2019, 3, 1)}, None,
        ("visit.due", "low", "visit:2026-11-23"), settings={"visits_recorded_from": date(2026, 8, 25)}),
    Row("first deployment: released in 2019, the feed complete from 1 Sep 2026: due 30 Nov, nothing yet",
        {"release_date": date(2019, 3, 1)}, None, None, settings={"visits_recorded_from": date(2026, 9, 1)}),
    Row("never visited, caution only: from the relevant date (SOA 2003 s.82(6)), 1 Sep + 90 = 30 Nov",
        {"relevant_date": date(2026, 9, 1)}, None, None, settings={"visits_recorded_from": date(2026, 1, 1)}),
    Row("never visited, no relevant or release date, the feed complete from 1 Jul: 29 Sep, overdue",
        {}, None, ("visit.overdue", "medium", "visit:2026-09-29"),
        settings={"visits_recorded_from": date(2026, 7, 1)}),
    Row("never visited and no date to count from (setting unset): no clock", {}, None, None),
    Row("a visit recorded before visits_recorded_from still counts: 20 Aug + 90 = 18 Nov, overdue",
        {}, date(2026, 8, 20), ("visit.overdue", "medium", "visit:2026-11-18"),
        settings={"visits_recorded_from": date(2026, 11, 1)}),
    Row("the notification period ended (s.82(1)) and no RMP frequency: not visited",
        {"notification_ends_on": date(2026, 11, 1)}, date(2026, 1, 1), None),
    Row("not registered but the RMP sets a frequency (a MAPPA category 2 nominal): visited",
        {"registered": False, "visit_every_days": 60}, date(2026, 9, 1),
        ("visit.overdue", "medium", "visit:2026-10-31")),
    Row("not registered, no RMP frequency: not visited", {"registered": False}, date(2026, 1, 1), None),
    Row("remanded since 10 Nov (rules.custody): detained nominals owe no visit",
        {}, date(2026, 6, 1), None,
        history=NotificationHistory(detentions=(DetentionFacts(date(2026, 11, 10), True, "remand", "d1"),))),
    Row("released 15 Nov after a remand: the clock runs on from the last visit, overdue at once",
        {}, date(2026, 6, 1), ("visit.overdue", "medium", "visit:2026-08-30"),
        history=NotificationHistory(detentions=(
            DetentionFacts(date(2026, 10, 1), True, "remand", "d1"),
            DetentionFacts(date(2026, 11, 15), False, "", "d2"),
        ))),
    Row("held from the relevant date to a release date still to come (rules.custody): none",
        {"relevant_date": date(2025, 1, 1), "release_date": date(2027, 1, 1)}, None, None,
        settings={"visits_recorded_from": date(2025, 1, 1)}),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.why for r in ROWS])
def test_visit_clock(row: Row) -> None:
    settings = POLICY.model_copy(update=row.settings) if row.settings else POLICY
    result = visits.evaluate(_nominal(**row.nominal), row.last_visit, row.history, [], NOW, settings, TZ)
    got = [(s.kind, s.severity, s.subject) for s in result.opens]
    assert got == ([row.want] if row.want else [])
    for spec in result.opens:  # the owner, the team; no personal data in the summary
        assert spec.owner == "PC1234" and spec.team == "north" and spec.summary.startswith("Home visit")
        assert REF in spec.summary and spec.details["due_on"] == spec.subject.removeprefix("visit:")


def test_a_later_visit_resolves_the_old_due_date() -> None:
    """Subject visit:<due date>: a visit recorded moves the due date, so the old alert resolves."""
    live = [LiveAlert("visit.overdue", REF, "visit:2026-11-18", "medium")]
    result = visits.evaluate(_nominal(), date(2026, 11, 19), NotificationHistory(), live, NOW, POLICY, TZ)
    assert result.opens == () and [r.alert for r in result.resolves] == live


def test_due_soon_becomes_overdue_on_the_same_subject() -> None:
    live = [LiveAlert("visit.due", REF, "visit:2026-11-18", "low")]
    result = visits.evaluate(_nominal(), date(2026, 8, 20), NotificationHistory(), live, NOW, POLICY, TZ)
    assert [(s.kind, s.subject) for s in result.opens] == [("visit.overdue", "visit:2026-11-18")]
    assert [r.alert for r in result.resolves] == live


def test_a_nominal_gone_resolves_its_visit_alerts() -> None:
    live = [LiveAlert("visit.due", REF, "visit:2026-11-23", "low")]
    result = visits.evaluate(None, None, NotificationHistory(), live, NOW, POLICY, TZ)
    assert result.opens == () and [r.alert for r in result.resolves] == live


def test_the_bands_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown risk level"):
        TriggerSection(visit_every_days_by_risk={"severe": 30})
    with pytest.raises(ValueError, match="1 to 730"):
        TriggerSection(visit_every_days_by_risk={"high": 0})
    assert POLICY.visit_every_days_by_risk == {"very_high": 30, "high": 90, "medium": 180, "low": 365}
    assert POLICY.visit_reminder_days == 7


def test_the_feed_start_dates_load_from_toml(tmp_path: Path) -> None:
    """config.example.toml shows visits_recorded_from and rmp_reviews_recorded_from as commented
    TOML dates: uncommented, they load as dates; left commented, they are unset (no clock)."""
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    text = example.read_text(encoding="utf-8")
    for key in ("visits_recorded_from", "rmp_reviews_recorded_from"):
        text = text.replace(f"# {key} = 2026-12-01", f"{key} = 2026-12-01")
    path = tmp_path / "casewatch.toml"
    path.write_text(text, encoding="utf-8")
    triggers = load_config(path, environ={}).triggers
    assert (triggers.visits_recorded_from, triggers.rmp_reviews_recorded_from) == (date(2026, 12, 1),) * 2
    unset = load_config(example, environ={}).triggers
    assert (unset.visits_recorded_from, unset.rmp_reviews_recorded_from) == (None, None)
