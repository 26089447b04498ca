"""When daily jobs are due in Europe/London, across both 2026 clock changes (29 March, 25 October),
and APScheduler's view of it through DailyLocalTrigger. Pure: no database, no sleeping."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from schedules.timing import DailyLocalTrigger, due_at, latest_due, next_due, slot_start

LONDON = ZoneInfo("Europe/London")
SPRING = date(2026, 3, 29)  # 01:00 GMT -> 02:00 BST
AUTUMN = date(2026, 10, 25)  # 02:00 BST -> 01:00 GMT


@pytest.mark.parametrize(
    ("day", "at", "expected_utc"),
    [
        (SPRING - timedelta(days=1), "07:00", datetime(2026, 3, 28, 7, 0, tzinfo=UTC)),
        (SPRING, "07:00", datetime(2026, 3, 29, 6, 0, tzinfo=UTC)),  # 07:00 BST
        (AUTUMN - timedelta(days=1), "07:00", datetime(2026, 10, 24, 6, 0, tzinfo=UTC)),
        (AUTUMN, "07:00", datetime(2026, 10, 25, 7, 0, tzinfo=UTC)),  # 07:00 GMT
        # 01:30 does not exist on the March day: due when the clocks jump, 02:00 BST = 01:00 UTC.
        (SPRING, "01:30", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        # 01:30 exists twice on the October day: the first occurrence (BST), once.
        (AUTUMN, "01:30", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        (SPRING, "00:00", datetime(2026, 3, 29, 0, 0, tzinfo=UTC)),
        (AUTUMN, "00:00", datetime(2026, 10, 24, 23, 0, tzinfo=UTC)),
    ],
)
def test_due_at(day: date, at: str, expected_utc: datetime) -> None:
    hours, minutes = map(int, at.split(":"))
    assert due_at(day, time(hours, minutes), LONDON) == expected_utc


@pytest.mark.parametrize(
    "start", [datetime(2026, 3, 26, 12, tzinfo=UTC), datetime(2026, 10, 22, 12, tzinfo=UTC)]
)
@pytest.mark.parametrize("at", [time(7, 0), time(1, 30), time(0, 0), time(23, 59)])
def test_the_trigger_fires_once_a_local_day_across_the_change(start: datetime, at: time) -> None:
    trigger = DailyLocalTrigger(at, LONDON)
    fired: list[datetime] = []
    previous = None
    now = start
    for _ in range(7):
        nxt = trigger.get_next_fire_time(previous, now)
        assert nxt is not None and nxt > now - timedelta(seconds=1)
        fired.append(nxt)
        previous, now = nxt, nxt
    days = [f.astimezone(LONDON).date() for f in fired]
    assert days == sorted(set(days)) and len(days) == 7  # one a day, no day twice or skipped
    assert [(b - a) for a, b in zip(days, days[1:], strict=False)] == [timedelta(days=1)] * 6
    for f in fired:
        local = f.astimezone(LONDON)
        assert local.time() >= at or (local.date() == SPRING and at == time(1, 30))


def test_seven_am_on_both_change_days_is_seven_am_local() -> None:
    trigger = DailyLocalTrigger(time(7, 0), LONDON)
    for day in (SPRING, AUTUMN):
        before = datetime.combine(day, time(0, 5), tzinfo=LONDON).astimezone(UTC)
        fire = trigger.get_next_fire_time(None, before)
        assert fire.astimezone(LONDON).replace(tzinfo=None) == datetime.combine(day, time(7, 0))
        assert trigger.get_next_fire_time(fire, fire).astimezone(LONDON).date() == day + timedelta(days=1)


def test_latest_and_next_due() -> None:
    at = time(7, 0)
    just_before = datetime(2026, 3, 29, 5, 59, tzinfo=UTC)  # 06:59 BST
    assert latest_due(just_before, at, LONDON)[0] == date(2026, 3, 28)
    assert latest_due(just_before + timedelta(minutes=1), at, LONDON) == (
        SPRING,
        datetime(2026, 3, 29, 6, tzinfo=UTC),
    )
    assert next_due(just_before, at, LONDON, inclusive=True) == (SPRING, datetime(2026, 3, 29, 6, tzinfo=UTC))
    on_time = datetime(2026, 10, 25, 7, tzinfo=UTC)
    assert next_due(on_time, at, LONDON, inclusive=True)[0] == AUTUMN
    assert next_due(on_time, at, LONDON, inclusive=False)[0] == AUTUMN + timedelta(days=1)


def test_interval_slots() -> None:
    at = datetime(2026, 11, 23, 10, 7, 31, tzinfo=UTC)
    assert slot_start(at, 300) == datetime(2026, 11, 23, 10, 5, tzinfo=UTC)
    assert slot_start(at + timedelta(minutes=2), 300) == datetime(2026, 11, 23, 10, 5, tzinfo=UTC)
    assert slot_start(at + timedelta(minutes=3), 300) == datetime(2026, 11, 23, 10, 10, tzinfo=UTC)
