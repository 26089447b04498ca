"""rules.minutes: MAPP meeting minutes on ViSOR within 5 working days of a level 3 meeting and 10
of a level 2 one (ViSOR Standards, 2011 joint inspection of MAPPA para 8.21), working days
leaving out weekends and the bank holidays of England and Wales (the `holidays` package)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import holidays
import pytest

from casewatch.model.facts import MeetingFacts, NominalFacts
from casewatch.model.results import LiveAlert
from casewatch.triggers.rules import minutes
from tests.test_rules_actions import TZ

BANK = minutes.england_and_wales()
NOMINAL = NominalFacts("VIS-TEST-0001", "north", "PC1")

# (day, n, expected, source)
WORKING_DAYS = [
    (date(2026, 3, 2), 5, date(2026, 3, 9), "8.21: level 3, Monday -> next Monday (a weekend skipped)"),
    (date(2026, 3, 2), 10, date(2026, 3, 16), "8.21: level 2, two weeks"),
    (date(2026, 3, 6), 0, date(2026, 3, 6), "n=0 is the day itself"),
    (date(2026, 3, 7), 1, date(2026, 3, 9), "a Saturday meeting: the Monday is the first working day"),
    # Easter 2026: Good Friday 3 April, Easter Monday 6 April.
    (date(2026, 4, 1), 5, date(2026, 4, 10), "Easter: Good Friday and Easter Monday are not working days"),
    (date(2026, 4, 2), 1, date(2026, 4, 7), "Easter: Thursday -> Tuesday"),
    # Christmas 2026: Boxing Day on a Saturday, substitute Monday 28 December.
    (date(2026, 12, 23), 5, date(2027, 1, 4), "Christmas Day Fri, Boxing Day Sat -> Mon 28 substitute"),
    (date(2026, 12, 24), 1, date(2026, 12, 29), "Christmas 2026: the 29th is the first working day"),
    # Christmas 2027 on a Saturday: substitutes Monday 27 and Tuesday 28 December.
    (date(2027, 12, 24), 1, date(2027, 12, 29), "Christmas 2027 on a weekend: both substitute days"),
    (date(2027, 12, 23), 5, date(2028, 1, 4), "and New Year's Day 2028 (Sat) -> Mon 3 Jan substitute"),
    # The late May (spring) bank holiday: the last Monday in May, 25 May 2026.
    (date(2026, 5, 22), 1, date(2026, 5, 26), "late May bank holiday Monday 25 May 2026"),
    (date(2026, 5, 20), 5, date(2026, 5, 28), "late May bank holiday inside five working days"),
    # Early May bank holiday, Monday 4 May 2026, and a one-off: the State Funeral, 19 Sep 2022.
    (date(2026, 5, 1), 1, date(2026, 5, 5), "early May bank holiday"),
    (date(2022, 9, 16), 1, date(2022, 9, 20), "a one-off bank holiday (19 September 2022)"),
]


@pytest.mark.parametrize(("day", "n", "expected", "source"), WORKING_DAYS, ids=[r[3] for r in WORKING_DAYS])
def test_add_working_days(day: date, n: int, expected: date, source: str) -> None:
    assert minutes.add_working_days(day, n, BANK) == expected, source


def test_england_and_wales_share_one_list() -> None:
    """Banking and Financial Dealings Act 1971 Sch.1 para 1: the same days in England and Wales;
    ENG is the list used."""
    years = range(2020, 2031)
    eng = holidays.country_holidays("GB", subdiv="ENG", years=years)
    wls = holidays.country_holidays("GB", subdiv="WLS", years=years)
    assert sorted(eng) == sorted(wls)
    scotland = holidays.country_holidays("GB", subdiv="SCT", years=years)
    assert date(2026, 1, 2) in scotland and date(2026, 1, 2) not in BANK  # Scotland's 2 January


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError):
        minutes.add_working_days(date(2026, 3, 2), -1, BANK)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (held_on, level, minutes_on, now, expected (severity, due) or None, source)
CASES = [
    (date(2026, 3, 2), 3, None, "2026-03-09T23:59:00", None, "8.21: due day 9 March not over yet"),
    (date(2026, 3, 2), 3, None, "2026-03-10T00:00:00", ("high", "2026-03-09"),
     "8.21: level 3, 10 March overdue"),
    (date(2026, 3, 2), 2, None, "2026-03-10T00:00:00", None, "8.21: level 2 has 10 working days"),
    (date(2026, 3, 2), 2, None, "2026-03-17T00:00:00", ("medium", "2026-03-16"), "8.21: level 2 overdue"),
    (date(2026, 3, 2), 3, date(2026, 3, 20), "2026-03-25T00:00:00", None,
     "minutes on ViSOR (late): owed no more"),
    (date(2026, 4, 1), 3, None, "2026-04-10T12:00:00", None, "Easter: due 10 April, not the 8th"),
    (date(2026, 4, 1), 3, None, "2026-04-11T00:00:00", ("high", "2026-04-10"), "Easter: overdue 11 April"),
    # Summer time: 10 April 00:00 BST is 9 April 23:00 UTC.
    (date(2026, 4, 1), 3, None, "2026-04-10T23:00:00", ("high", "2026-04-10"),
     "local midnight (BST) ends the day"),
]


@pytest.mark.parametrize(
    ("held_on", "level", "minutes_on", "now", "expected", "source"), CASES, ids=[c[5] for c in CASES]
)
def test_minutes_overdue(
    held_on: date, level: int, minutes_on: date | None, now: str, expected: tuple[str, str] | None,
    source: str,
) -> None:
    meeting = MeetingFacts("MTG-TEST-1", NOMINAL.visor_ref, held_on, level, minutes_on)
    result = minutes.evaluate(meeting, NOMINAL, [], _at(now), TZ)
    if expected is None:
        assert result.opens == (), source
        return
    (spec,) = result.opens
    assert (spec.severity, spec.details["due_on"]) == expected, source
    assert spec.kind == minutes.OVERDUE and spec.subject == "MTG-TEST-1"
    assert (spec.team, spec.owner) == ("north", "PC1")
    assert spec.summary == (
        f"MAPP level {level} meeting minutes not on ViSOR: held {held_on.isoformat()}, due "
        f"{expected[1]} ({minutes.MINUTES_WORKING_DAYS[level]} working days): VIS-TEST-0001"
    )


def test_minutes_recorded_resolve_the_alert() -> None:
    """Resolved when a later meeting.held sets minutes_on_visor_on."""
    live = [LiveAlert(minutes.OVERDUE, NOMINAL.visor_ref, "MTG-TEST-1", "high")]
    meeting = MeetingFacts("MTG-TEST-1", NOMINAL.visor_ref, date(2026, 3, 2), 3, date(2026, 3, 12))
    result = minutes.evaluate(meeting, NOMINAL, live, _at("2026-03-12T12:00:00"), TZ)
    assert result.opens == ()
    assert [(r.alert, r.reason) for r in result.resolves] == [(live[0], "minutes on ViSOR")]


def test_still_owed_keeps_the_alert_and_an_unknown_nominal_owes_nothing() -> None:
    live = [LiveAlert(minutes.OVERDUE, NOMINAL.visor_ref, "MTG-TEST-1", "high")]
    meeting = MeetingFacts("MTG-TEST-1", NOMINAL.visor_ref, date(2026, 3, 2), 3, None)
    kept = minutes.evaluate(meeting, NOMINAL, live, _at("2026-03-12T12:00:00"), TZ)
    assert kept.resolves == () and len(kept.opens) == 1
    unknown = minutes.evaluate(meeting, None, live, _at("2026-03-12T12:00:00"), TZ)
    assert unknown.opens == () and [r.reason for r in unknown.resolves] == ["no longer owed"]
    gone = minutes.evaluate(None, None, live, _at("2026-03-12T12:00:00"), TZ)
    assert [r.reason for r in gone.resolves] == ["no longer owed"]
