"""When a daily job is due: a local wall-clock time in the service timezone, right across the
daylight-saving changes.

The rule: a daily job for local day D runs at the first instant at which the local clock on day D
shows its time (or later). So
  - a time that exists once runs then (07:00 on both change days in Europe/London: 06:00 UTC on
    29 March 2026, 07:00 UTC on 25 October 2026);
  - a time that exists twice (01:30 on the October change) runs at its first occurrence, once;
  - a time that does not exist (01:30 on the March change, skipped from 01:00 to 02:00) runs when
    the clocks jump past it (02:00 BST, 01:00 UTC), not an hour late and not skipped.
Run keys name the local day, so the job still runs once a day whatever the clocks do.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger


def parse_hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def due_at(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant the daily job for local `day` at local time `at` is due (module docstring)."""
    candidates = sorted(
        datetime.combine(day, at, tzinfo=tz).replace(fold=fold).astimezone(UTC) for fold in (0, 1)
    )
    wall = datetime.combine(day, at)
    for candidate in candidates:
        if candidate.astimezone(tz).replace(tzinfo=None) == wall:
            return candidate  # exists: the first occurrence
    # In a gap: the first minute whose local time is at or past the wall time (the change itself).
    instant = candidates[0]
    for _ in range(48 * 60):
        if instant.astimezone(tz).replace(tzinfo=None) >= wall:
            return instant
        instant += timedelta(minutes=1)
    raise ValueError(f"no instant shows {wall} in {tz}")  # pragma: no cover: no zone has such a gap


def local_day(at: datetime, tz: ZoneInfo) -> date:
    return at.astimezone(tz).date()


def latest_due(now: datetime, at: time, tz: ZoneInfo) -> tuple[date, datetime]:
    """The local day and instant of the most recent daily run due at or before `now`."""
    day = local_day(now, tz) + timedelta(days=1)
    while True:
        instant = due_at(day, at, tz)
        if instant <= now:
            return day, instant
        day -= timedelta(days=1)


def next_due(after: datetime, at: time, tz: ZoneInfo, *, inclusive: bool) -> tuple[date, datetime]:
    """The local day and instant of the first daily run at (if `inclusive`) or after `after`."""
    day = local_day(after, tz) - timedelta(days=1)
    while True:
        instant = due_at(day, at, tz)
        if instant > after or (inclusive and instant == after):
            return day, instant
        day += timedelta(days=1)


def slot_start(now: datetime, seconds: int) -> datetime:
    """The start of the interval slot `now` falls in (slots counted from the Unix epoch): the run
    key of an interval job, so two processes in one slot do not both run it."""
    stamp = int(now.timestamp())
    return datetime.fromtimestamp(stamp - stamp % seconds, UTC)


class DailyLocalTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 has no types
    """An APScheduler 3 trigger that fires at `due_at` every local day."""

    __slots__ = ("at", "tz")

    def __init__(self, at: time, tz: ZoneInfo) -> None:
        self.at = at
        self.tz = tz

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        if previous_fire_time is not None:
            return next_due(previous_fire_time, self.at, self.tz, inclusive=False)[1]
        return next_due(now, self.at, self.tz, inclusive=True)[1]

    def __str__(self) -> str:
        return f"daily at {self.at:%H:%M} {self.tz}"
