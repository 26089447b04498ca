"""When a registered nominal must next notify the police (Sexual Offences Act 2003, Part 2):
a pure function of case state, for display. The triggers decide what is missed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from casewatch.config.triggers import TriggerSection

DueKind = Literal["initial", "periodic", "weekly"]
# Notifications that restart the periodic year (s.83 initial, s.84 change, s.85 periodic and
# weekly); travel notifications (s.86) do not.
RESTARTING_KINDS = ("initial", "periodic", "change", "weekly")


@dataclass(frozen=True)
class NotificationDue:
    due_on: date
    kind: DueKind


def add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a year without one
        return day.replace(year=day.year + years, day=28)


def next_notification_due(
    *,
    registered: bool,
    no_fixed_abode: bool,
    last_notified_on: date | None,
    release_date: date | None,
    clocks: TriggerSection,
) -> NotificationDue | None:
    """None when the nominal is not registered or no notification or release is on record."""
    if not registered:
        return None
    if release_date is not None and (last_notified_on is None or last_notified_on < release_date):
        return NotificationDue(release_date + timedelta(days=clocks.initial_notification_days), "initial")
    if last_notified_on is None:
        return None
    due = NotificationDue(add_years(last_notified_on, clocks.periodic_notification_years), "periodic")
    if no_fixed_abode:
        weekly = last_notified_on + timedelta(days=clocks.weekly_notification_days)
        if weekly < due.due_on:
            due = NotificationDue(weekly, "weekly")
    return due
