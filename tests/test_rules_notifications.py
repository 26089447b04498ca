"""The missed-notification rule: due dates and the exact instants, in Europe/London."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from casewatch.clock import FixedClock
from casewatch.config.triggers import TriggerSection
from casewatch.model.clocks import add_years, end_of_day
from casewatch.model.facts import FULL_NOTIFICATION_KINDS, NominalFacts, NotificationHistory
from casewatch.model.results import LiveAlert
from casewatch.triggers.rules import notifications
from casewatch.triggers.rules.notifications import DUE_SOON, MISSED, Due, dues

TZ = ZoneInfo("Europe/London")
SETTINGS = TriggerSection()
REF = "VS-0000001"


def nominal(**changes: object) -> NominalFacts:
    base = dict(visor_ref=REF, team="north", offender_manager="PC1234")
    return NominalFacts(**{**base, **changes})  # type: ignore[arg-type]


def utc(text: str) -> datetime:
    return FixedClock(datetime.fromisoformat(text).replace(tzinfo=UTC)).now()


def kinds_at(n: NominalFacts, history: NotificationHistory, at: str) -> list[tuple[str, str]]:
    result = notifications.evaluate(n, history, [], utc(at), SETTINGS, TZ)
    return sorted((s.kind, s.subject) for s in result.opens)


@pytest.mark.parametrize(
    ("day", "overdue_at"),
    [
        (date(2026, 11, 20), "2026-11-21T00:00:00"),  # winter: GMT, local midnight = UTC midnight
        (date(2026, 7, 10), "2026-07-10T23:00:00"),  # summer: BST, local midnight = 23:00 UTC
        (date(2026, 3, 28), "2026-03-29T00:00:00"),  # the day before the spring change
        (date(2026, 3, 29), "2026-03-29T23:00:00"),  # spring change day: 23 hours long
        (date(2026, 10, 24), "2026-10-24T23:00:00"),  # the day before the autumn change
        (date(2026, 10, 25), "2026-10-26T00:00:00"),  # autumn change day: 25 hours long
    ],
)
def test_end_of_day_is_local_midnight_in_utc(day: date, overdue_at: str) -> None:
    assert end_of_day(day, TZ) == utc(overdue_at)


@pytest.mark.parametrize(
    ("last", "years", "due"),
    [
        (date(2024, 2, 29), 1, date(2025, 2, 28)),  # leap day -> 28 Feb in a common year
        (date(2024, 2, 29), 4, date(2028, 2, 29)),  # leap day -> leap day when there is one
        (date(2023, 2, 28), 1, date(2024, 2, 28)),  # 28 Feb stays 28 Feb in a leap year
        (date(2024, 3, 1), 1, date(2025, 3, 1)),
        (date(2025, 11, 20), 1, date(2026, 11, 20)),
    ],
)
def test_add_years(last: date, years: int, due: date) -> None:
    assert add_years(last, years) == due


@pytest.mark.parametrize(
    ("facts", "history", "expected"),
    [
        # s.85(1), (5)(b): a year after the newest of ViSOR's record and a full notification
        (
            nominal(last_notification_on=date(2025, 11, 20)),
            NotificationHistory(),
            [Due("periodic", date(2026, 11, 20))],
        ),
        # s.85(1), (2)(b)-(c), (5)(b): the newer full notification received restarts the year
        (
            nominal(last_notification_on=date(2025, 1, 5)),
            NotificationHistory(last_full_on=date(2025, 11, 20)),
            [Due("periodic", date(2026, 11, 20))],
        ),
        # s.85(1), (5)(b): a leap-day notification: due 28 February of the next year
        (
            nominal(last_notification_on=date(2024, 2, 29)),
            NotificationHistory(),
            [Due("periodic", date(2025, 2, 28))],
        ),
        # s.85(1), (5)(b): 28 February stays 28 February into a leap year
        (
            nominal(last_notification_on=date(2023, 2, 28)),
            NotificationHistory(),
            [Due("periodic", date(2024, 2, 28))],
        ),
        # s.85(1), (5)(b): a month end stays a month end
        (
            nominal(last_notification_on=date(2025, 12, 31)),
            NotificationHistory(),
            [Due("periodic", date(2026, 12, 31))],
        ),
        # s.83(1), s.84(1)(d): released 16 Nov, the 3 days beginning with it end on 18 Nov;
        # no periodic clock while the initial one is pending
        (
            nominal(release_date=date(2026, 11, 16), last_notification_on=date(2020, 1, 1)),
            NotificationHistory(),
            [Due("initial", date(2026, 11, 18))],
        ),
        # s.83(1): the 3 days run over a month end (30 Nov, 1 Dec, 2 Dec)
        (
            nominal(release_date=date(2026, 11, 30)),
            NotificationHistory(),
            [Due("initial", date(2026, 12, 2))],
        ),
        # s.83(1): over the year end (30 Dec, 31 Dec, 1 Jan)
        (
            nominal(release_date=date(2026, 12, 30)),
            NotificationHistory(),
            [Due("initial", date(2027, 1, 1))],
        ),
        # s.83(1): over 29 February in a leap year (28 Feb, 29 Feb, 1 Mar)
        (
            nominal(release_date=date(2028, 2, 28)),
            NotificationHistory(),
            [Due("initial", date(2028, 3, 1))],
        ),
        # s.83(1): and in a common year (28 Feb, 1 Mar, 2 Mar)
        (
            nominal(release_date=date(2027, 2, 28)),
            NotificationHistory(),
            [Due("initial", date(2027, 3, 2))],
        ),
        # s.83(1), s.85(1): released and notified on the day of release: periodic from then
        (
            nominal(release_date=date(2026, 1, 16)),
            NotificationHistory(last_full_on=date(2026, 1, 16)),
            [Due("periodic", date(2027, 1, 16))],
        ),
        # s.85(5)(a), (6), SI 2012/1876: no fixed abode: one week after the last notification,
        # instead of the year (no periodic clock beside it)
        (
            nominal(no_fixed_abode=True, last_notification_on=date(2026, 6, 1)),
            NotificationHistory(last_full_on=date(2026, 11, 16)),
            [Due("weekly", date(2026, 11, 23))],
        ),
        # s.85(5)(a), SI 2012/1876: the week runs over a month end and 29 February
        (
            nominal(no_fixed_abode=True),
            NotificationHistory(last_full_on=date(2028, 2, 25)),
            [Due("weekly", date(2028, 3, 3))],
        ),
        # s.83(1) before s.85: no fixed abode and released since the last notification: the
        # initial notification is owed, not the weekly one
        (
            nominal(no_fixed_abode=True, release_date=date(2026, 11, 16)),
            NotificationHistory(last_full_on=date(2026, 3, 1)),
            [Due("initial", date(2026, 11, 18))],
        ),
        # s.82: not registered: owes nothing
        (nominal(registered=False, last_notification_on=date(2020, 1, 1)), NotificationHistory(), []),
        # nothing known: nothing to compute
        (nominal(), NotificationHistory(), []),
        (nominal(no_fixed_abode=True), NotificationHistory(), []),
    ],
)
def test_due_dates(facts: NominalFacts, history: NotificationHistory, expected: list[Due]) -> None:
    assert dues(facts, history, SETTINGS) == expected


@pytest.mark.parametrize(
    ("days", "release", "due"),
    [
        # s.83(1) "the period of N days beginning with": the release day is day 1
        (3, date(2026, 11, 16), date(2026, 11, 18)),
        # N = 1: the deadline is the day of release itself
        (1, date(2026, 11, 16), date(2026, 11, 16)),
        (2, date(2026, 11, 16), date(2026, 11, 17)),
    ],
)
def test_initial_days_count_the_release_day_as_day_one(days: int, release: date, due: date) -> None:
    settings = TriggerSection(initial_notification_days=days)
    assert dues(nominal(release_date=release), NotificationHistory(), settings) == [Due("initial", due)]


PERIODIC = nominal(last_notification_on=date(2025, 11, 20))  # due 2026-11-20 (GMT)
SUMMER = nominal(last_notification_on=date(2025, 7, 10))  # due 2026-07-10 (BST)
SPRING = nominal(last_notification_on=date(2025, 3, 29))  # due 2026-03-29: BST starts that day
AUTUMN = nominal(last_notification_on=date(2025, 10, 25))  # due 2026-10-25: GMT returns that day
LEAP = nominal(last_notification_on=date(2024, 2, 29))  # due 2025-02-28
NONE = NotificationHistory()


@pytest.mark.parametrize(
    ("facts", "at", "expected"),
    [
        # winter: overdue at 2026-11-21T00:00Z exactly
        (PERIODIC, "2026-11-05T23:59:59", []),
        (PERIODIC, "2026-11-06T00:00:00", [(DUE_SOON, "periodic:2026-11-20")]),  # 14 days before
        (PERIODIC, "2026-11-20T23:59:59", [(DUE_SOON, "periodic:2026-11-20")]),
        (PERIODIC, "2026-11-21T00:00:00", [(MISSED, "periodic:2026-11-20")]),
        (PERIODIC, "2026-11-21T00:00:01", [(MISSED, "periodic:2026-11-20")]),
        # summer time: local midnight is 23:00 UTC
        (SUMMER, "2026-06-25T22:59:59", []),
        (SUMMER, "2026-06-25T23:00:00", [(DUE_SOON, "periodic:2026-07-10")]),
        (SUMMER, "2026-07-10T22:59:59", [(DUE_SOON, "periodic:2026-07-10")]),
        (SUMMER, "2026-07-10T23:00:00", [(MISSED, "periodic:2026-07-10")]),
        # the spring change day (last Sunday of March) ends at 23:00 UTC
        (SPRING, "2026-03-29T22:59:59", [(DUE_SOON, "periodic:2026-03-29")]),
        (SPRING, "2026-03-29T23:00:00", [(MISSED, "periodic:2026-03-29")]),
        # the autumn change day (last Sunday of October) ends at midnight UTC of the next day
        (AUTUMN, "2026-10-25T23:00:00", [(DUE_SOON, "periodic:2026-10-25")]),
        (AUTUMN, "2026-10-25T23:59:59", [(DUE_SOON, "periodic:2026-10-25")]),
        (AUTUMN, "2026-10-26T00:00:00", [(MISSED, "periodic:2026-10-25")]),
        # a leap-day notification is missed at the end of 28 February
        (LEAP, "2025-02-28T23:59:59", [(DUE_SOON, "periodic:2025-02-28")]),
        (LEAP, "2025-03-01T00:00:00", [(MISSED, "periodic:2025-02-28")]),
    ],
)
def test_due_soon_and_missed_at_the_exact_instants(
    facts: NominalFacts, at: str, expected: list[tuple[str, str]]
) -> None:
    assert kinds_at(facts, NONE, at) == expected


@pytest.mark.parametrize(
    ("notified_on", "at", "expected"),
    [
        # notified the day before it was due: the next cycle, nothing now
        (date(2026, 11, 19), "2026-11-21T00:00:00", []),
        # notified on the due day: in time
        (date(2026, 11, 20), "2026-11-21T00:00:00", []),
        # notified the day after: the old cycle is over; the new one is a year off
        (date(2026, 11, 21), "2026-11-22T00:00:00", []),
    ],
)
def test_a_notification_around_the_due_date_starts_a_new_cycle(
    notified_on: date, at: str, expected: list[tuple[str, str]]
) -> None:
    history = NotificationHistory(last_full_on=notified_on)
    assert kinds_at(PERIODIC, history, at) == expected


def test_the_missed_alert_says_who_and_when_and_nothing_personal() -> None:
    result = notifications.evaluate(PERIODIC, NONE, [], utc("2026-11-21T00:00:00"), SETTINGS, TZ)
    (spec,) = result.opens
    assert (spec.severity, spec.team, spec.owner) == ("high", "north", "PC1234")
    assert spec.due_at == utc("2026-11-21T00:00:00")
    assert spec.summary == "Missed periodic notification: VS-0000001, due 2026-11-20"


@pytest.mark.parametrize(
    ("release", "at", "expected"),
    [
        # s.83(1), s.84(1)(d): released 16 Nov (GMT): due by the end of 18 Nov, missed from 19 Nov
        ("2026-11-16", "2026-11-18T23:59:59", [(DUE_SOON, "initial:2026-11-18")]),
        ("2026-11-16", "2026-11-19T00:00:00", [(MISSED, "initial:2026-11-18")]),
        # s.83(1): over the spring change (BST from 01:00 UTC, 29 Mar 2026): the due day 29 Mar
        # is 23 hours long and ends at 23:00 UTC
        ("2026-03-27", "2026-03-29T22:59:59", [(DUE_SOON, "initial:2026-03-29")]),
        ("2026-03-27", "2026-03-29T23:00:00", [(MISSED, "initial:2026-03-29")]),
        # s.83(1): over the autumn change (GMT from 01:00 UTC, 25 Oct 2026): the due day 25 Oct
        # is 25 hours long and ends at midnight UTC
        ("2026-10-23", "2026-10-25T23:59:59", [(DUE_SOON, "initial:2026-10-25")]),
        ("2026-10-23", "2026-10-26T00:00:00", [(MISSED, "initial:2026-10-25")]),
        # s.83(1): in summer time the due day ends at 23:00 UTC
        ("2026-07-08", "2026-07-10T22:59:59", [(DUE_SOON, "initial:2026-07-10")]),
        ("2026-07-08", "2026-07-10T23:00:00", [(MISSED, "initial:2026-07-10")]),
        # s.83(1): over 29 February (released 28 Feb 2028, due 1 Mar)
        ("2028-02-28", "2028-03-01T23:59:59", [(DUE_SOON, "initial:2028-03-01")]),
        ("2028-02-28", "2028-03-02T00:00:00", [(MISSED, "initial:2028-03-01")]),
    ],
)
def test_initial_notification_at_the_exact_instants(
    release: str, at: str, expected: list[tuple[str, str]]
) -> None:
    released = nominal(release_date=date.fromisoformat(release))
    assert kinds_at(released, NONE, at) == expected


def test_initial_reminder_is_medium_and_a_notification_on_release_day_meets_it() -> None:
    released = nominal(release_date=date(2026, 11, 16))
    result = notifications.evaluate(released, NONE, [], utc("2026-11-17T00:00:00"), SETTINGS, TZ)
    assert result.opens[0].severity == "medium"
    # s.83(1): notified on the release day (day 1): in time, nothing owed until the year is up
    on_the_day = NotificationHistory(last_full_on=date(2026, 11, 16))
    assert kinds_at(released, on_the_day, "2026-11-19T00:00:00") == []


def test_a_deadline_on_the_day_of_release_is_missed_at_its_end() -> None:
    # s.83(1) with a period of 1 day beginning with the release: the release day is the due day
    settings = TriggerSection(initial_notification_days=1)
    released = nominal(release_date=date(2026, 11, 16))
    at_noon = notifications.evaluate(released, NONE, [], utc("2026-11-16T12:00:00"), settings, TZ)
    assert [(s.kind, s.subject) for s in at_noon.opens] == [(DUE_SOON, "initial:2026-11-16")]
    at_midnight = notifications.evaluate(released, NONE, [], utc("2026-11-17T00:00:00"), settings, TZ)
    assert [(s.kind, s.subject) for s in at_midnight.opens] == [(MISSED, "initial:2026-11-16")]


def test_weekly_reminder_is_the_day_before() -> None:
    # s.85(5)(a), SI 2012/1876: notified 16 Nov, due by the end of 23 Nov
    nfa = nominal(no_fixed_abode=True)
    history = NotificationHistory(last_full_on=date(2026, 11, 16))
    assert kinds_at(nfa, history, "2026-11-21T23:59:59") == []
    assert kinds_at(nfa, history, "2026-11-22T00:00:00") == [(DUE_SOON, "weekly:2026-11-23")]
    assert kinds_at(nfa, history, "2026-11-23T23:59:59") == [(DUE_SOON, "weekly:2026-11-23")]
    assert kinds_at(nfa, history, "2026-11-24T00:00:00") == [(MISSED, "weekly:2026-11-23")]


def test_a_compliant_weekly_reporter_has_no_alert_after_13_months() -> None:
    # s.85(1), (2)(c), (5)(a), SI 2012/1876: each weekly notification is the periodic
    # notification and restarts the clock; no "missed annual notification" ever opens.
    first = date(2025, 10, 1)
    nfa = nominal(no_fixed_abode=True, last_notification_on=first)
    day = first
    while day < date(2026, 11, 1):  # 13 months of weekly notifications, each on its due day
        history = NotificationHistory(last_full_on=day)
        for hour in ("T00:00:00", "T12:00:00", "T23:59:59"):
            opened = kinds_at(nfa, history, day.isoformat() + hour)
            assert all(kind != MISSED for kind, _ in opened), (day, opened)
        day += timedelta(days=7)
    assert kinds_at(nfa, NotificationHistory(last_full_on=day), day.isoformat() + "T12:00:00") == []


def test_a_travel_notification_does_not_move_the_weekly_clock() -> None:
    # s.85(2) lists s.83(1), s.84(1) and s.85(1) notifications only: a travel or return
    # notification (s.86) restarts neither clock, so a weekly reporter who notified travel on
    # 20 Nov still owes the weekly notification by 23 Nov.
    assert "weekly" in FULL_NOTIFICATION_KINDS
    assert "travel" not in FULL_NOTIFICATION_KINDS and "return" not in FULL_NOTIFICATION_KINDS
    nfa = nominal(no_fixed_abode=True)
    history = NotificationHistory(last_full_on=date(2026, 11, 16))  # the travel one is not in it
    assert kinds_at(nfa, history, "2026-11-24T00:00:00") == [(MISSED, "weekly:2026-11-23")]


def test_weekly_reminder_must_be_shorter_than_the_week() -> None:
    with pytest.raises(ValueError, match="weekly_notification_reminder_days"):
        TriggerSection(weekly_notification_reminder_days=7)


@pytest.mark.parametrize(
    ("history", "at", "live", "resolved"),
    [
        # the notification arrived: the missed alert resolves
        (
            NotificationHistory(last_full_on=date(2026, 11, 22)),
            "2026-11-22T10:00:00",
            [LiveAlert(MISSED, REF, "periodic:2026-11-20")],
            [(MISSED, "periodic:2026-11-20")],
        ),
        # the reminder became missed: the reminder resolves, the missed one is wanted instead
        (
            NONE,
            "2026-11-21T00:00:00",
            [LiveAlert(DUE_SOON, REF, "periodic:2026-11-20")],
            [(DUE_SOON, "periodic:2026-11-20")],
        ),
        # still missed: nothing resolves
        (NONE, "2026-11-22T00:00:00", [LiveAlert(MISSED, REF, "periodic:2026-11-20")], []),
    ],
)
def test_resolving(
    history: NotificationHistory, at: str, live: list[LiveAlert], resolved: list[tuple[str, str]]
) -> None:
    result = notifications.evaluate(PERIODIC, history, live, utc(at), SETTINGS, TZ)
    assert sorted((r.alert.kind, r.alert.subject) for r in result.resolves) == resolved


def test_a_nominal_no_longer_registered_resolves_everything() -> None:
    live = [LiveAlert(MISSED, REF, "periodic:2026-11-20"), LiveAlert("action.overdue", REF, "A1")]
    result = notifications.evaluate(
        nominal(registered=False), NONE, live, utc("2026-12-01T00:00:00"), SETTINGS, TZ
    )
    assert result.opens == ()
    assert [r.alert.kind for r in result.resolves] == [MISSED]  # other kinds are not its business
    assert notifications.evaluate(None, NONE, live, utc("2026-12-01T00:00:00"), SETTINGS, TZ).resolves


def test_reminder_lead_is_a_setting() -> None:
    custom = TriggerSection(notification_reminder_days=3)
    at = utc("2026-11-16T12:00:00")
    assert notifications.evaluate(PERIODIC, NONE, [], at, custom, TZ).opens == ()
    at += timedelta(days=1, hours=-12)  # 2026-11-17T00:00Z: 3 days before
    assert [s.kind for s in notifications.evaluate(PERIODIC, NONE, [], at, custom, TZ).opens] == [DUE_SOON]


# --- issue 14, slice 2: who owes, from when, until when ----------------------------------------

CAUTIONED = nominal(relevant_date=date(2026, 11, 16))  # s.82(6)(c): the caution's date


@pytest.mark.parametrize(
    ("facts", "history", "expected"),
    [
        # s.83(1): a caution on 16 Nov (s.82(6)(c): the relevant date is the caution's date), no
        # release: the 3 days beginning with 16 Nov end on 18 Nov
        (nominal(relevant_date=date(2026, 11, 16)), NONE, [Due("initial", date(2026, 11, 18))]),
        # s.83(1): a community sentence on 30 Nov: over the month end (30 Nov, 1 Dec, 2 Dec)
        (nominal(relevant_date=date(2026, 11, 30)), NONE, [Due("initial", date(2026, 12, 2))]),
        # s.83(1): over 29 February in a leap year (28 Feb, 29 Feb, 1 Mar)
        (nominal(relevant_date=date(2028, 2, 28)), NONE, [Due("initial", date(2028, 3, 1))]),
        # s.83(1): notified on the relevant date (day 1): nothing initial; s.85(1) a year on
        (
            nominal(relevant_date=date(2026, 11, 16)),
            NotificationHistory(last_full_on=date(2026, 11, 16)),
            [Due("periodic", date(2027, 11, 16))],
        ),
        # s.83(1): a notification from before the relevant date does not meet it
        (
            nominal(relevant_date=date(2026, 11, 16), last_notification_on=date(2026, 11, 15)),
            NONE,
            [Due("initial", date(2026, 11, 18))],
        ),
        # s.83(6): convicted 2 Nov and detained on it (remanded, then sentenced), released 20 Nov:
        # the detained time is disregarded, the 3 days begin with the release (20-22 Nov)
        (
            nominal(relevant_date=date(2026, 11, 2), release_date=date(2026, 11, 20)),
            NONE,
            [Due("initial", date(2026, 11, 22))],
        ),
        # s.83(1) met on 3 Nov, then held until 20 Nov (a notification between the two shows the
        # custody began later): the release owes a notification of its own (s.84(1)(d))
        (
            nominal(relevant_date=date(2026, 11, 2), release_date=date(2026, 11, 20)),
            NotificationHistory(last_full_on=date(2026, 11, 3)),
            [Due("change", date(2026, 11, 22), "release", date(2026, 11, 20))],
        ),
        # s.83(6): released on the relevant date itself (time served): from that day
        (
            nominal(relevant_date=date(2026, 11, 16), release_date=date(2026, 11, 16)),
            NONE,
            [Due("initial", date(2026, 11, 18))],
        ),
        # s.83(1): a release before the relevant date (an earlier custody) does not delay it
        (
            nominal(relevant_date=date(2026, 11, 16), release_date=date(2025, 6, 1)),
            NONE,
            [Due("initial", date(2026, 11, 18))],
        ),
        # s.84(1)(d): no relevant date recorded: the release date, as before
        (nominal(release_date=date(2026, 11, 16)), NONE, [Due("initial", date(2026, 11, 18))]),
        # s.82(1): the period ends 17 Nov, before the initial due day: nothing falls due
        (
            nominal(relevant_date=date(2026, 11, 16), notification_ends_on=date(2026, 11, 17)),
            NONE,
            [],
        ),
        # s.82(1): the period ends on the due day itself: still owed
        (
            nominal(relevant_date=date(2026, 11, 16), notification_ends_on=date(2026, 11, 18)),
            NONE,
            [Due("initial", date(2026, 11, 18))],
        ),
        # s.82(1), s.85(1): the period ends before the anniversary: no periodic notification
        (
            nominal(relevant_date=date(2021, 11, 16), notification_ends_on=date(2026, 11, 15)),
            NotificationHistory(last_full_on=date(2025, 11, 20)),
            [],
        ),
        # s.80(2): not registered (a MAPPA category 2-4 nominal or PDP who is no RSO): nothing
        (nominal(registered=False, relevant_date=date(2026, 11, 16)), NONE, []),
    ],
)
def test_who_owes_from_when_and_until_when(
    facts: NominalFacts, history: NotificationHistory, expected: list[Due]
) -> None:
    assert dues(facts, history, SETTINGS) == expected


@pytest.mark.parametrize(
    ("facts", "at", "expected"),
    [
        # s.83(1): a caution on 16 Nov (GMT): due by the end of 18 Nov, missed from 19 Nov
        (CAUTIONED, "2026-11-18T23:59:59", [(DUE_SOON, "initial:2026-11-18")]),
        (CAUTIONED, "2026-11-19T00:00:00", [(MISSED, "initial:2026-11-18")]),
        # s.83(1): in summer time (BST) the due day ends at 23:00 UTC
        (nominal(relevant_date=date(2026, 7, 8)), "2026-07-10T23:00:00", [(MISSED, "initial:2026-07-10")]),
        # s.83(6): detained from the relevant date (2 Nov) to the release (20 Nov): the 3 days
        # begin with the release, so on 10 Nov nothing is missed (a reminder within the lead)
        (
            nominal(relevant_date=date(2026, 11, 2), release_date=date(2026, 11, 20)),
            "2026-11-10T12:00:00",
            [(DUE_SOON, "initial:2026-11-22")],
        ),
        (
            nominal(relevant_date=date(2026, 11, 2), release_date=date(2026, 11, 20)),
            "2026-11-23T00:00:00",
            [(MISSED, "initial:2026-11-22")],
        ),
        # s.82(1): missed 18 Nov, the period ended 20 Nov: from 21 Nov nothing is wanted
        (
            nominal(relevant_date=date(2026, 11, 16), notification_ends_on=date(2026, 11, 20)),
            "2026-11-20T23:59:59",
            [(MISSED, "initial:2026-11-18")],
        ),
        (
            nominal(relevant_date=date(2026, 11, 16), notification_ends_on=date(2026, 11, 20)),
            "2026-11-21T00:00:00",
            [],
        ),
    ],
)
def test_initial_from_the_relevant_date_at_the_exact_instants(
    facts: NominalFacts, at: str, expected: list[tuple[str, str]]
) -> None:
    assert kinds_at(facts, NONE, at) == expected


def test_after_the_notification_period_the_live_alerts_resolve() -> None:
    # s.82(1): the requirements ended on 30 Nov; from 1 Dec the missed and reminder alerts go
    ended = nominal(last_notification_on=date(2025, 11, 20), notification_ends_on=date(2026, 11, 30))
    live = [LiveAlert(MISSED, REF, "periodic:2026-11-20"), LiveAlert("action.overdue", REF, "A1")]
    before = notifications.evaluate(ended, NONE, live, utc("2026-11-30T23:59:59"), SETTINGS, TZ)
    assert before.resolves == ()
    after = notifications.evaluate(ended, NONE, live, utc("2026-12-01T00:00:00"), SETTINGS, TZ)
    assert after.opens == ()
    assert [(r.alert.kind, r.alert.subject) for r in after.resolves] == [(MISSED, "periodic:2026-11-20")]
