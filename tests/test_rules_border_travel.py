"""Border checks against travel notifications, and late travel notice."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from casewatch.config.triggers import TriggerSection
from casewatch.model.facts import BorderCheckFacts, NominalFacts, TravelFacts
from casewatch.model.results import LiveAlert
from casewatch.triggers.rules import border_travel, travel_notice
from casewatch.triggers.rules.border_travel import CONFIRMED, RECORD_FTA, UNMATCHED_NOMINAL, UNNOTIFIED

TZ = ZoneInfo("Europe/London")
SETTINGS = TriggerSection()  # border_match_window_days = 2
REF = "VS-0000003"
NOMINAL = NominalFacts(visor_ref=REF, team="north", offender_manager="PC1234")
TRIP = TravelFacts(
    event_id="ev-travel-1",
    visor_ref=REF,
    departure_on=date(2026, 7, 10),
    return_on=date(2026, 7, 20),
    destination="ES",
    notified_at=datetime(2026, 6, 1, 9, tzinfo=UTC),
)
OPEN_ENDED = TravelFacts(
    event_id="ev-travel-2",
    visor_ref=REF,
    departure_on=date(2026, 7, 10),
    return_on=None,
    destination="FR",
    notified_at=datetime(2026, 6, 1, 9, tzinfo=UTC),
)


def check(direction: str, at: str) -> BorderCheckFacts:
    return BorderCheckFacts(
        event_id="ev-border-1",
        visor_ref=REF,
        port="Dover",
        direction=direction,
        checked_at=datetime.fromisoformat(at).replace(tzinfo=UTC),
    )


def kinds(
    c: BorderCheckFacts, travels: list[TravelFacts], nominal: NominalFacts | None = NOMINAL
) -> list[str]:
    result = border_travel.evaluate(c, nominal, travels, [], SETTINGS, TZ)
    return sorted(s.kind for s in result.opens)


@pytest.mark.parametrize(
    ("direction", "at", "travels", "expected"),
    [
        # outbound: near the departure date (10 July, +-2 days), local day in BST
        ("outbound", "2026-07-08T00:00:00", [TRIP], [CONFIRMED]),
        ("outbound", "2026-07-07T22:59:59", [TRIP], [RECORD_FTA, UNNOTIFIED]),  # 7 July local
        ("outbound", "2026-07-07T23:00:00", [TRIP], [CONFIRMED]),  # 00:00 BST on 8 July
        ("outbound", "2026-07-12T22:59:59", [TRIP], [CONFIRMED]),
        ("outbound", "2026-07-12T23:00:00", [TRIP], [RECORD_FTA, UNNOTIFIED]),  # 13 July local
        # inbound: near the return date (20 July, +-2 days), not the departure
        ("inbound", "2026-07-18T09:00:00", [TRIP], [CONFIRMED]),
        ("inbound", "2026-07-22T21:00:00", [TRIP], [CONFIRMED]),
        ("inbound", "2026-07-23T09:00:00", [TRIP], [RECORD_FTA, UNNOTIFIED]),
        ("inbound", "2026-07-10T09:00:00", [TRIP], [RECORD_FTA, UNNOTIFIED]),
        ("outbound", "2026-07-20T09:00:00", [TRIP], [RECORD_FTA, UNNOTIFIED]),
        # open-ended: any inbound check from departure (less the window) on
        ("inbound", "2026-09-30T09:00:00", [OPEN_ENDED], [CONFIRMED]),
        ("inbound", "2026-07-08T09:00:00", [OPEN_ENDED], [CONFIRMED]),
        ("inbound", "2026-07-07T09:00:00", [OPEN_ENDED], [RECORD_FTA, UNNOTIFIED]),
        # nothing notified at all
        ("inbound", "2026-07-20T09:00:00", [], [RECORD_FTA, UNNOTIFIED]),
        # the notification was made after the check: it does not excuse it
        (
            "inbound",
            "2026-05-31T09:00:00",
            [
                TravelFacts(
                    "ev-t3", REF, date(2026, 5, 20), date(2026, 5, 31), "ES", datetime(2026, 6, 1, tzinfo=UTC)
                )
            ],
            [RECORD_FTA, UNNOTIFIED],
        ),
    ],
)
def test_matching(direction: str, at: str, travels: list[TravelFacts], expected: list[str]) -> None:
    assert kinds(check(direction, at), travels) == expected


def test_unnotified_travel_alerts_the_spoc_and_tasks_the_offender_manager() -> None:
    result = border_travel.evaluate(check("inbound", "2026-07-20T09:00:00"), NOMINAL, [], [], SETTINGS, TZ)
    by_kind = {s.kind: s for s in result.opens}
    assert by_kind[UNNOTIFIED].severity == "high" and by_kind[UNNOTIFIED].owner is None
    assert by_kind[RECORD_FTA].owner == "PC1234"
    assert "Foreign Travel Attachment" in by_kind[RECORD_FTA].summary
    assert {s.subject for s in result.opens} == {"ev-border-1"}
    assert {s.team for s in result.opens} == {"north"}


def test_a_confirmation_is_low_and_names_the_notification() -> None:
    (spec,) = border_travel.evaluate(
        check("inbound", "2026-07-20T09:00:00"), NOMINAL, [TRIP], [], SETTINGS, TZ
    ).opens
    assert (spec.kind, spec.severity, spec.details["travel_notification"]) == (
        CONFIRMED,
        "low",
        "ev-travel-1",
    )


def test_an_unknown_nominal_is_still_raised_for_the_spoc() -> None:
    c = check("inbound", "2026-07-20T09:00:00")
    (spec,) = border_travel.evaluate(c, None, [], [], TriggerSection(unmatched_team="mosovo"), TZ).opens
    assert (spec.kind, spec.severity, spec.team, spec.visor_ref) == (UNMATCHED_NOMINAL, "high", "mosovo", REF)
    (spec,) = border_travel.evaluate(c, None, [], [], SETTINGS, TZ).opens
    assert spec.team == ""


def test_a_late_arriving_notification_resolves_the_unnotified_alerts() -> None:
    live = [LiveAlert(UNNOTIFIED, REF, "ev-border-1"), LiveAlert(RECORD_FTA, REF, "ev-border-1")]
    result = border_travel.evaluate(
        check("inbound", "2026-07-20T09:00:00"), NOMINAL, [TRIP], live, SETTINGS, TZ
    )
    assert [s.kind for s in result.opens] == [CONFIRMED]
    assert sorted(r.alert.kind for r in result.resolves) == [RECORD_FTA, UNNOTIFIED]
    still = border_travel.evaluate(check("inbound", "2026-07-20T09:00:00"), NOMINAL, [], live, SETTINGS, TZ)
    assert still.resolves == ()


def test_the_window_is_a_setting() -> None:
    c = check("inbound", "2026-07-21T09:00:00")
    narrow = TriggerSection(border_match_window_days=0)
    assert [s.kind for s in border_travel.evaluate(c, NOMINAL, [TRIP], [], narrow, TZ).opens] == [
        UNNOTIFIED,
        RECORD_FTA,
    ]


@pytest.mark.parametrize(
    ("notified_at", "flagged"),
    [
        ("2026-07-02T22:59:59", False),  # 2 July local: 8 days' notice
        ("2026-07-03T09:00:00", False),  # 7 days: in time
        ("2026-07-03T23:00:00", True),  # 4 July local (BST): 6 days
        ("2026-07-09T20:00:00", True),
    ],
)
def test_late_travel_notice(notified_at: str, flagged: bool) -> None:
    trip = TravelFacts(
        "ev-t4",
        REF,
        date(2026, 7, 10),
        None,
        "ES",
        datetime.fromisoformat(notified_at).replace(tzinfo=UTC),
    )
    result = travel_notice.evaluate(trip, NOMINAL, SETTINGS, TZ)
    assert bool(result.opens) is flagged
    if flagged:
        assert (result.opens[0].kind, result.opens[0].severity) == ("travel.late_notice", "low")
    assert travel_notice.evaluate(trip, NOMINAL, TriggerSection(travel_notice_days=0), TZ).opens == ()


# --- issue 14, slice 2: only a relevant offender owes travel notice ----------------------------

UNREGISTERED = NominalFacts(visor_ref=REF, team="north", offender_manager="PC1234", registered=False)
ENDS_9_JULY = NominalFacts(
    visor_ref=REF, team="north", offender_manager="PC1234", notification_ends_on=date(2026, 7, 9)
)


@pytest.mark.parametrize(
    ("nominal", "at", "travels", "expected"),
    [
        # s.80(2), s.86: not registered (MAPPA category 2-4, a PDP, no RSO): owes no travel
        # notice, so an unnotified check is no breach and raises nothing
        (UNREGISTERED, "2026-07-20T09:00:00", [], []),
        (UNREGISTERED, "2026-07-10T09:00:00", [TRIP], [CONFIRMED]),
        # s.82(1): the period ended 9 July: a check on 10 July (local) is after it
        (ENDS_9_JULY, "2026-07-10T09:00:00", [], []),
        # s.82(1): the last day of the period is inside it (9 July BST ends 22:59:59 UTC)
        (ENDS_9_JULY, "2026-07-09T22:59:59", [], [RECORD_FTA, UNNOTIFIED]),
        (ENDS_9_JULY, "2026-07-09T23:00:00", [], []),
    ],
)
def test_no_travel_breach_for_a_nominal_not_subject_to_the_requirements(
    nominal: NominalFacts, at: str, travels: list[TravelFacts], expected: list[str]
) -> None:
    assert kinds(check("outbound", at), travels, nominal) == expected


def test_the_unnotified_alerts_of_a_nominal_owing_no_notice_resolve() -> None:
    # s.80(2): the nominal turned out not to be registered: the breach alerts are not wanted
    live = [LiveAlert(UNNOTIFIED, REF, "ev-border-1"), LiveAlert(RECORD_FTA, REF, "ev-border-1")]
    result = border_travel.evaluate(
        check("inbound", "2026-07-20T09:00:00"), UNREGISTERED, [], live, SETTINGS, TZ
    )
    assert result.opens == ()
    assert sorted(r.alert.kind for r in result.resolves) == [RECORD_FTA, UNNOTIFIED]


@pytest.mark.parametrize(
    ("nominal", "departure", "flagged"),
    [
        # s.80(2), s.86: not registered: no late-notice flag
        (UNREGISTERED, date(2026, 7, 5), False),
        # s.82(1): departure on the last day of the period (9 July): still owed, 4 days' notice
        (ENDS_9_JULY, date(2026, 7, 9), True),
        # s.82(1): departure after the period: owed no notice
        (ENDS_9_JULY, date(2026, 7, 10), False),
        (NOMINAL, date(2026, 7, 10), True),
    ],
)
def test_late_notice_only_for_a_relevant_offender(
    nominal: NominalFacts, departure: date, flagged: bool
) -> None:
    trip = TravelFacts("ev-t5", REF, departure, None, "ES", datetime(2026, 7, 5, 9, tzinfo=UTC))
    assert bool(travel_notice.evaluate(trip, nominal, SETTINGS, TZ).opens) is flagged
