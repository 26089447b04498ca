"""The nineteenth session's review of the notification clocks against the statute's text (not the
project's docs): only time when a nominal is actually held is disregarded.

- SOA 2003 s.83(1): notify "within the period of 3 days beginning with the relevant date";
  s.83(6) (applied to changes by s.84(5)): in determining that period "there is to be disregarded
  any time when the relevant offender is" remanded or committed to custody, serving a sentence,
  detained in a hospital or outside the United Kingdom; s.87(1): a notification is given by
  attending at a police station, so a notification shows the person at liberty that day.

casewatch.triggers.rules.custody assumed custody from the relevant date to a later release date
unless a notification fell strictly between them: a notification on the relevant date itself, or a
detention on record starting later, did not count, and a change made at liberty (a home move on
20 Nov) was given a due date after the release (3 Mar): a missed change unseen for three months.
Each row failed before the change.

- SI 2004/1220 (travel, as amended by SI 2012/1876): notification "not less than 7 days before"
  the date of departure, else "not less than 12 hours before" it (the Northern Ireland twin, SR
  2014/185 reg 7: "before the date of his intended departure"). The rule measured from the hour
  of the flight when a departure_at was given, so the same notice was in time or late by the hour;
  and it took notice on 3 July as in time for 10 July, where "not less than 7 days before" is
  read as 7 clear days. Both limits now count back from the start of the departure date.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from casewatch.config.triggers import TriggerSection
from casewatch.model.facts import (
    ChangeDetected,
    DetentionFacts,
    NominalFacts,
    NotificationHistory,
    TravelFacts,
)
from casewatch.triggers.rules import travel_notice
from casewatch.triggers.rules.notifications import Due, dues

TZ = ZoneInfo("Europe/London")
SETTINGS = TriggerSection()
REF = "VIS-TEST-0001"
H = NotificationHistory


def d(text: str) -> date:
    return date.fromisoformat(text)


def nominal(**changes: object) -> NominalFacts:
    base = dict(visor_ref=REF, team="north", offender_manager="PC1234")
    return NominalFacts(**{**base, **changes})  # type: ignore[arg-type]


MOVED_20_NOV = ChangeDetected(what="home_address", changed_on=d("2026-11-20"), event_id="cd-1", source="TEST")
SENTENCED_10_DEC = (
    DetentionFacts(on=d("2026-12-10"), started=True, kind="sentence", event_id="det-1"),
    DetentionFacts(on=d("2027-03-01"), started=False, event_id="end-1"),
)
# Convicted 2 Nov 2026, released 1 Mar 2027 (nominal.upsert relevant_date / release_date).
CONVICTED = dict(relevant_date=d("2026-11-02"), release_date=d("2027-03-01"))


@pytest.mark.parametrize(
    ("facts", "history", "owed", "not_owed"),
    [
        # s.83(1), s.87(1): notified in person on the relevant date (day 1 of "the period of
        # 3 days beginning with the relevant date"): the initial notification is made, so no
        # initial notification is owed; the release owes its own (s.84(1)(d)), due 3 Mar.
        # (custody.periods ignored a notification ON the relevant date, assumed custody from
        # 2 Nov to 1 Mar and asked for an "initial" notification by 3 Mar.)
        pytest.param(
            nominal(**CONVICTED, last_notification_on=d("2026-11-02")), H(last_full_on=d("2026-11-02")),
            [Due("change", d("2027-03-03"), "release", d("2027-03-01"))],
            [Due("initial", d("2027-03-03"))],
            id="s83-1-notified-on-relevant-date-initial-is-met",
        ),
        # s.84(1)(b), (5), s.83(6): the same person, seen at a police station on 2 Nov, moves on
        # 20 Nov; nothing says he was held then, so no day is disregarded: due 22 Nov (the rule
        # disregarded 2 Nov - 1 Mar and put it at 3 Mar: 3 months of a missed change unseen).
        pytest.param(
            nominal(**CONVICTED, last_notification_on=d("2026-11-02")),
            H(last_full_on=d("2026-11-02"), detected=(MOVED_20_NOV,)),
            [Due("change", d("2026-11-22"), "home_address", d("2026-11-20"))],
            [Due("change", d("2027-03-03"), "home_address", d("2026-11-20"))],
            id="s84-5-change-while-at-liberty-after-relevant-date",
        ),
        # s.83(1), (6): convicted 2 Nov, custody on record only from 10 Dec (detention.started,
        # sentence) to 1 Mar. Only "time when" he is held is disregarded: 2, 3, 4 Nov are the
        # 3 days, due 4 Nov, missed; a due day that ended before the detention stays missed.
        # (the rule assumed custody from the relevant date because release_date > relevant_date
        # and moved the initial notification to 3 Mar, resolving the 4 Nov missed alert.)
        pytest.param(
            nominal(**CONVICTED), H(detentions=SENTENCED_10_DEC),
            [Due("initial", d("2026-11-04"))],
            [Due("initial", d("2027-03-03"))],
            id="s83-6-known-custody-start-after-relevant-date",
        ),
    ],
)
def test_only_time_actually_held_is_disregarded(
    facts: NominalFacts, history: NotificationHistory, owed: list[Due], not_owed: list[Due]
) -> None:
    found = dues(facts, history, SETTINGS, TZ)
    for due in owed:
        assert due in found, f"{due} not owed; found {found}"
    for due in not_owed:
        assert due not in found, f"{due} should not be owed; found {found}"


def trip(departure_on: str, notified_at: str, departure_at: str | None = None) -> TravelFacts:
    return TravelFacts(
        "tr-1", REF, d(departure_on), None, "FR", datetime.fromisoformat(notified_at),
        departure_at=datetime.fromisoformat(departure_at) if departure_at else None,
    )


def severity(t: TravelFacts) -> str | None:
    opens = travel_notice.evaluate(t, nominal(), SETTINGS, TZ).opens
    return opens[0].severity if opens else None


@pytest.mark.parametrize(
    ("departure_on", "departure_at", "notified_at", "expected"),
    [
        # SI 2004/1220 as amended: "not less than 12 hours before" the date of departure, i.e. by
        # 12:00 on 9 July for any departure on 10 July. Notice given on 10 July itself, 13 hours
        # before a 21:00 flight, is not before that date at all: high (before: medium).
        pytest.param("2026-07-10", "2026-07-10T21:00:00+01:00", "2026-07-10T08:00:00+01:00", "high",
                     id="notice-on-the-day-of-departure"),
        # the same: 13:00 on 9 July is 11 hours before the date of departure (20 hours before
        # a 09:00 flight): high (before: medium)
        pytest.param("2026-07-10", "2026-07-10T09:00:00+01:00", "2026-07-09T13:00:00+01:00", "high",
                     id="eleven-hours-before-the-date"),
        # the regulation counts the 7 days back from the date of departure, not from a time of
        # day: notice on 3 July for 10 July is the same notice whatever time the flight leaves
        # on 10 July. Before, without a time: in time; with a 06:00 flight: medium.
        pytest.param("2026-07-10", "2026-07-10T06:00:00+01:00", "2026-07-03T07:00:00+01:00",
                     severity(trip("2026-07-10", "2026-07-03T07:00:00+01:00")),
                     id="seven-days-counted-from-the-date-not-the-hour"),
    ],
)
def test_travel_notice_is_measured_from_the_date_of_departure(
    departure_on: str, departure_at: str, notified_at: str, expected: str | None
) -> None:
    # SOA 2003 s.86; SI 2004/1220 (as amended by SI 2012/1876): the reference point is "the date
    # of departure", so a departure_at must not change the outcome of the same notice.
    with_time = severity(trip(departure_on, notified_at, departure_at))
    without_time = severity(trip(departure_on, notified_at))
    assert with_time == expected
    assert with_time == without_time


@pytest.mark.parametrize(
    ("notified_at", "expected"),
    [
        # SI 2004/1220 as amended: "not less than 7 days before that date". In English law "not
        # less than N days before" means N clear days, both the day of the notice and the day of
        # departure left out (Re Railway Sleepers Supply Co (1885) 29 Ch D 204; Re Hector Whaling
        # [1936] Ch 208). For a departure on 10 July the 7 clear days are 3-9 July: notice by the
        # end of 2 July. Notice on 3 July leaves 6 (4-9 July): under 7 days (before: in time).
        pytest.param("2026-07-03T09:00:00+01:00", "medium", id="notice-on-3-july-6-clear-days"),
        pytest.param("2026-07-02T23:59:00+01:00", None, id="notice-on-2-july-7-clear-days"),
    ],
)
def test_seven_days_notice_is_seven_clear_days(notified_at: str, expected: str | None) -> None:
    assert severity(trip("2026-07-10", notified_at)) == expected
