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
        ("2026-07-02T22:59:59", False),  # 2 July local: 7 clear days before 10 July
        ("2026-07-02T23:00:00", False),  # 3 July 00:00 BST: exactly 7 days before the date
        # "not less than 7 days before that date" (SI 2004/1220 as amended): notice during 3 July
        # leaves 6 clear days (until the nineteenth session counted as in time)
        ("2026-07-03T09:00:00", "medium"),
        ("2026-07-03T23:00:00", "medium"),  # 4 July local (BST): 6 days
        ("2026-07-09T20:00:00", "high"),  # 3 hours before the departure date begins
    ],
)
def test_late_travel_notice(notified_at: str, flagged: str | bool) -> None:
    trip = TravelFacts(
        "ev-t4",
        REF,
        date(2026, 7, 10),
        None,
        "ES",
        datetime.fromisoformat(notified_at).replace(tzinfo=UTC),
    )
    result = travel_notice.evaluate(trip, NOMINAL, SETTINGS, TZ)
    assert bool(result.opens) is bool(flagged)
    if flagged:
        assert (result.opens[0].kind, result.opens[0].severity) == ("travel.late_notice", flagged)
    # travel_notice_days = 0 turns the 7-day flag off, not the 12 hours (the law)
    off = travel_notice.evaluate(trip, NOMINAL, TriggerSection(travel_notice_days=0), TZ).opens
    assert [s.severity for s in off] == (["high"] if flagged == "high" else [])


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


# --- issue 14, slice 3: travel as trips (SOA 2003 s.86; SI 2004/1220 as amended by SI 2012/1876) --


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def bc(event_id: str, direction: str, when: str) -> BorderCheckFacts:
    return BorderCheckFacts(event_id, REF, "Dover", direction, at(when))


def trip(
    event_id: str, departure: date, back: date | None, notified: str, trip_id: str | None = None,
    *, cancelled: bool = False, departure_at: str | None = None,
) -> TravelFacts:
    return TravelFacts(
        event_id, REF, departure, back, "ES", at(notified),
        departure_at=at(departure_at) if departure_at else None, trip_id=trip_id, cancelled=cancelled,
    )


T2024 = trip("ev-2024", date(2024, 3, 1), None, "2024-02-01T09:00:00")
JULY = trip("ev-july", date(2026, 7, 10), date(2026, 7, 20), "2026-06-01T09:00:00", "T-1")
JULY_MOVED = trip("ev-july-2", date(2026, 7, 24), date(2026, 7, 31), "2026-06-15T09:00:00", "T-1")
JULY_CANCELLED = trip(
    "ev-july", date(2026, 7, 10), date(2026, 7, 20), "2026-06-01T09:00:00", "T-1", cancelled=True
)


@pytest.mark.parametrize(
    ("checks", "travels", "expected"),
    [
        # s.86: a trip from 2024 with no return date does not confirm a 2026 return
        ([bc("b1", "inbound", "2026-05-01T09:00:00")], [T2024], {"b1": None}),
        # ... it matches the first inbound check within open_trip_max_days [90] of departure
        ([bc("b1", "inbound", "2024-05-30T09:00:00")], [T2024], {"b1": "ev-2024"}),  # day 90
        ([bc("b1", "inbound", "2024-05-31T09:00:00")], [T2024], {"b1": None}),  # day 91
        # s.86: an open return matches the *first* inbound check after departure, not a second
        (
            [bc("b1", "inbound", "2024-03-05T09:00:00"), bc("b2", "inbound", "2024-03-09T09:00:00")],
            [T2024],
            {"b1": "ev-2024", "b2": None},
        ),
        # s.86: one check matches one leg: two outbound checks, one trip
        (
            [bc("b1", "outbound", "2026-07-10T06:00:00"), bc("b2", "outbound", "2026-07-11T06:00:00")],
            [JULY],
            {"b1": "ev-july", "b2": None},
        ),
        # s.86: out and back on one trip: each leg once
        (
            [bc("b1", "outbound", "2026-07-10T06:00:00"), bc("b2", "inbound", "2026-07-20T18:00:00")],
            [JULY],
            {"b1": "ev-july", "b2": "ev-july"},
        ),
        # s.86: an inbound check before the outbound check of the trip is not its return
        (
            [bc("b1", "outbound", "2026-07-11T06:00:00"), bc("b2", "inbound", "2026-07-10T18:00:00")],
            [trip("ev-o", date(2026, 7, 10), None, "2026-06-01T09:00:00")],
            {"b1": "ev-o", "b2": None},
        ),
        # the trip amended (same trip_id, SI 2004/1220 as amended: notice of changed details):
        # the old dates match nothing once the amendment was made; before it, they still do
        ([bc("b1", "outbound", "2026-07-10T06:00:00")], [JULY, JULY_MOVED], {"b1": None}),
        ([bc("b1", "outbound", "2026-07-24T06:00:00")], [JULY, JULY_MOVED], {"b1": "ev-july-2"}),
        ([bc("b1", "outbound", "2026-06-10T06:00:00")], [trip("ev-j", date(2026, 6, 10), None,
          "2026-06-01T09:00:00", "T-1"), JULY_MOVED], {"b1": "ev-j"}),
        # a cancelled trip (travel.cancelled) matches nothing
        ([bc("b1", "outbound", "2026-07-10T06:00:00")], [JULY_CANCELLED], {"b1": None}),
        ([bc("b1", "outbound", "2026-07-24T06:00:00")], [JULY_CANCELLED, JULY_MOVED], {"b1": None}),
        # a departure with no outbound check is no alert: the return still matches
        ([bc("b1", "inbound", "2026-07-21T18:00:00")], [JULY], {"b1": "ev-july"}),
        # two trips: each check its own trip's leg
        (
            [bc("b1", "outbound", "2026-07-10T06:00:00"), bc("b2", "outbound", "2026-07-24T06:00:00")],
            [JULY, trip("ev-second", date(2026, 7, 24), None, "2026-06-01T09:00:00", "T-2")],
            {"b1": "ev-july", "b2": "ev-second"},
        ),
    ],
)
def test_trips(
    checks: list[BorderCheckFacts], travels: list[TravelFacts], expected: dict[str, str | None]
) -> None:
    for c in checks:
        found = border_travel.matching_travel(c, travels, SETTINGS, TZ, checks)
        assert (found.event_id if found else None) == expected[c.event_id], c.event_id
        result = border_travel.evaluate(c, NOMINAL, travels, [], SETTINGS, TZ, checks)
        opened = sorted(s.kind for s in result.opens)
        assert opened == ([CONFIRMED] if expected[c.event_id] else [RECORD_FTA, UNNOTIFIED])


def test_the_open_trip_length_is_a_setting() -> None:
    c = bc("b1", "inbound", "2024-05-31T09:00:00")
    longer = TriggerSection(open_trip_max_days=91)
    assert border_travel.matching_travel(c, [T2024], longer, TZ) == T2024


@pytest.mark.parametrize(
    ("departure_at", "notified", "severity"),
    [
        # SI 2004/1220 (as amended by SI 2012/1876): "not less than 7 days before" the date of
        # departure, counted back from its start (10 July 00:00 BST = 9 July 23:00 UTC), whatever
        # the hour of the flight (09:00 UTC here)
        ("2026-07-10T09:00:00", "2026-07-02T23:00:00", None),  # exactly 7 days before the date
        ("2026-07-10T09:00:00", "2026-07-02T23:00:01", "medium"),
        ("2026-07-10T09:00:00", "2026-07-03T09:00:00", "medium"),  # 7 days before the flight: late
        # ... else (details not known earlier) "not less than 12 hours before" it: by 12:00 BST on
        # 9 July; flagged to check the reason
        ("2026-07-10T09:00:00", "2026-07-09T11:00:00", "medium"),  # exactly 12 hours before the date
        ("2026-07-10T09:00:00", "2026-07-09T11:00:01", "high"),  # under 12 hours: possible breach
        ("2026-07-10T09:00:00", "2026-07-09T21:00:00", "high"),  # 12 h before the flight, not the date
        ("2026-07-10T09:00:00", "2026-07-10T10:00:00", "high"),  # after departure
        # BST begins 29 March 2026: 7 calendar days before 1 April 00:00 BST is 25 March 00:00 GMT
        ("2026-04-01T09:00:00", "2026-03-25T00:00:00", None),
        ("2026-04-01T09:00:00", "2026-03-25T00:00:01", "medium"),
        # BST ends 25 October 2026: 12 elapsed hours before 25 October 00:00 BST (24 Oct 23:00 UTC)
        ("2026-10-25T10:00:00", "2026-10-24T11:00:00", "medium"),
        ("2026-10-25T10:00:00", "2026-10-24T11:00:01", "high"),
    ],
)
def test_notice_with_departure_times(departure_at: str, notified: str, severity: str | None) -> None:
    dep = at(departure_at)
    t = trip("ev-n", dep.astimezone(TZ).date(), None, notified, departure_at=departure_at)
    opens = travel_notice.evaluate(t, NOMINAL, SETTINGS, TZ).opens
    assert [s.severity for s in opens] == ([severity] if severity else [])


def test_notice_without_a_time_counts_from_the_start_of_the_departure_date() -> None:
    # SI 2004/1220 (as amended): "before the date of departure": 12 hours before 10 July 00:00 BST
    t = trip("ev-n", date(2026, 7, 10), None, "2026-07-09T11:00:00")  # 12:00 BST on 9 July
    assert [s.severity for s in travel_notice.evaluate(t, NOMINAL, SETTINGS, TZ).opens] == ["medium"]
    t = trip("ev-n", date(2026, 7, 10), None, "2026-07-09T11:00:01")
    assert [s.severity for s in travel_notice.evaluate(t, NOMINAL, SETTINGS, TZ).opens] == ["high"]


def test_an_amended_trip_counts_notice_from_its_first_notification() -> None:
    # s.86: the trip was notified on 1 June; moving its date on 8 July keeps that notice
    first = trip("ev-a", date(2026, 7, 10), None, "2026-06-01T09:00:00", "T-9")
    amended = trip("ev-b", date(2026, 7, 12), None, "2026-07-08T09:00:00", "T-9")
    assert travel_notice.evaluate(amended, NOMINAL, SETTINGS, TZ, [first]).opens == ()
    assert [s.severity for s in travel_notice.evaluate(amended, NOMINAL, SETTINGS, TZ).opens] == ["medium"]
    # a cancelled trip is flagged no further
    cancelled = trip("ev-c", date(2026, 7, 12), None, "2026-07-11T20:00:00", "T-8", cancelled=True)
    assert travel_notice.evaluate(cancelled, NOMINAL, SETTINGS, TZ).opens == ()
