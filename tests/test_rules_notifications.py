"""The missed-notification rule: due dates and the exact instants, in Europe/London."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from casewatch.clock import FixedClock
from casewatch.config.triggers import TriggerSection
from casewatch.model.clocks import add_years, end_of_day
from casewatch.model.facts import NominalFacts, NotificationHistory
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
        # periodic: a year from the newest of ViSOR's record and a full notification received
        (
            nominal(last_notification_on=date(2025, 11, 20)),
            NotificationHistory(),
            [Due("periodic", date(2026, 11, 20))],
        ),
        (
            nominal(last_notification_on=date(2025, 1, 5)),
            NotificationHistory(last_full_on=date(2025, 11, 20), last_any_on=date(2025, 11, 20)),
            [Due("periodic", date(2026, 11, 20))],
        ),
        # a leap-day notification: due 28 February of the next year
        (
            nominal(last_notification_on=date(2024, 2, 29)),
            NotificationHistory(),
            [Due("periodic", date(2025, 2, 28))],
        ),
        # a travel notification does not restart the year
        (
            nominal(last_notification_on=date(2025, 11, 20)),
            NotificationHistory(last_full_on=None, last_any_on=date(2026, 3, 1)),
            [Due("periodic", date(2026, 11, 20))],
        ),
        # released, nothing since: initial, 3 days after release; no periodic while it is pending
        (
            nominal(release_date=date(2026, 11, 16), last_notification_on=date(2020, 1, 1)),
            NotificationHistory(),
            [Due("initial", date(2026, 11, 19))],
        ),
        # released and notified on the day of release: periodic from then
        (
            nominal(release_date=date(2026, 1, 16)),
            NotificationHistory(last_full_on=date(2026, 1, 16), last_any_on=date(2026, 1, 16)),
            [Due("periodic", date(2027, 1, 16))],
        ),
        # no fixed abode: weekly from the newest notification of any kind, plus periodic
        (
            nominal(no_fixed_abode=True, last_notification_on=date(2026, 6, 1)),
            NotificationHistory(last_full_on=date(2026, 6, 1), last_any_on=date(2026, 11, 16)),
            [Due("periodic", date(2027, 6, 1)), Due("weekly", date(2026, 11, 23))],
        ),
        # not registered: owes nothing
        (nominal(registered=False, last_notification_on=date(2020, 1, 1)), NotificationHistory(), []),
        # nothing known: nothing to compute
        (nominal(), NotificationHistory(), []),
    ],
)
def test_due_dates(facts: NominalFacts, history: NotificationHistory, expected: list[Due]) -> None:
    assert dues(facts, history, SETTINGS) == expected


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
    history = NotificationHistory(last_full_on=notified_on, last_any_on=notified_on)
    assert kinds_at(PERIODIC, history, at) == expected


def test_the_missed_alert_says_who_and_when_and_nothing_personal() -> None:
    result = notifications.evaluate(PERIODIC, NONE, [], utc("2026-11-21T00:00:00"), SETTINGS, TZ)
    (spec,) = result.opens
    assert (spec.severity, spec.team, spec.owner) == ("high", "north", "PC1234")
    assert spec.due_at == utc("2026-11-21T00:00:00")
    assert spec.summary == "Missed periodic notification: VS-0000001, due 2026-11-20"


def test_initial_notification_after_release() -> None:
    released = nominal(release_date=date(2026, 11, 16))  # due 2026-11-19
    assert kinds_at(released, NONE, "2026-11-19T23:59:59") == [(DUE_SOON, "initial:2026-11-19")]
    assert kinds_at(released, NONE, "2026-11-20T00:00:00") == [(MISSED, "initial:2026-11-19")]
    result = notifications.evaluate(released, NONE, [], utc("2026-11-18T00:00:00"), SETTINGS, TZ)
    assert result.opens[0].severity == "medium"


def test_weekly_reminder_is_the_day_before() -> None:
    nfa = nominal(no_fixed_abode=True)
    history = NotificationHistory(last_full_on=None, last_any_on=date(2026, 11, 16))  # due 11-23
    assert kinds_at(nfa, history, "2026-11-21T23:59:59") == []
    assert kinds_at(nfa, history, "2026-11-22T00:00:00") == [(DUE_SOON, "weekly:2026-11-23")]
    assert kinds_at(nfa, history, "2026-11-24T00:00:00") == [(MISSED, "weekly:2026-11-23")]


def test_weekly_reminder_must_be_shorter_than_the_week() -> None:
    with pytest.raises(ValueError, match="weekly_notification_reminder_days"):
        TriggerSection(weekly_notification_reminder_days=7)


@pytest.mark.parametrize(
    ("history", "at", "live", "resolved"),
    [
        # the notification arrived: the missed alert resolves
        (
            NotificationHistory(last_full_on=date(2026, 11, 22), last_any_on=date(2026, 11, 22)),
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
