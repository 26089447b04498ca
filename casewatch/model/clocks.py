"""Calendar arithmetic for due dates, in the service timezone.

A due date is a local calendar day: it is still in time until the end of that day, so it becomes
overdue at the local midnight that starts the next day. Local midnight always exists in
Europe/London (the clocks change at 01:00 UTC), and zoneinfo gives the right offset either side
of both changes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def local_date(at: datetime, tz: ZoneInfo) -> date:
    """The calendar day `at` falls on in the service timezone."""
    return at.astimezone(tz).date()


def start_of_day(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which local `day` begins."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def end_of_day(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant at which local `day` is over: the first instant something due on it is late."""
    return start_of_day(day + timedelta(days=1), tz)


def add_years(day: date, years: int) -> date:
    """The same day `years` later. 29 February becomes 28 February in a common year: the earlier
    day, so a reminder or a missed notification is never reported later than the law allows."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)
