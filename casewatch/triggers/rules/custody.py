"""When the notification clocks stand still: custody and absence abroad.

- SOA 2003 s.83(6) (and s.84(5) for changes): in counting the 3 days, time when the person is
  remanded in or committed to custody, serving a sentence, detained in a hospital or outside
  the United Kingdom is disregarded.
- s.85(3)-(4): where the periodic period would end while the person is so held or abroad, it
  continues until the end of the period of 3 days beginning when that first ceases to apply.

A period away is whole local days: from the day it starts (detained or gone that day) to the day
it ends, which is the first day back (the release or return day counts as a free day: the issue's
"the 3 days begin on release", and at the end of that day the person is no longer held). So a
deadline that lands on the day of release is not moved by s.85(3): at the end of that day the
person is free (the release itself owes a notification within 3 days, s.84(1)(d)).

Where the periods come from (all pure, from the facts loaded by triggers.load):
- detention.started / detention.ended (contract v2), paired in date order: an end closes the
  period open at the time; a start while one is open changes nothing;
- a recall return (recall.returned): custody serving a sentence (s.85(4)(b)), ended by a
  detention.ended or a later release date;
- a release learned from another source (change.detected "release") ends the period open;
- an open period also ends on the first later day the person is known to have been at liberty:
  a notification made (in person at a police station, s.87: ViSOR's date, the newest full one,
  a change notification) or, for custody on a recall, a later recall issued (only a person out
  on licence is recalled); else one return with no release on record would silence the clocks
  for good;
- nominal.upsert release_date after relevant_date: detained from the one to the other (as before),
  unless a notification was made between the two (then the release ends a later custody);
- abroad: an outbound border check to the next inbound one (a second outbound check first: back
  by then, by the first trip's notified return if earlier, and within open_trip_max_days); an
  outbound check with no inbound
  one after it is abroad until the return date of the notified trip it matched, else for at most
  open_trip_max_days (a local choice: one unanswered outbound check must not silence the clocks
  for ever); an inbound check matched to a notified trip with no outbound check was abroad from
  the trip's departure date.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

from casewatch.model.clocks import local_date
from casewatch.model.facts import DetentionFacts, NominalFacts, NotificationHistory
from casewatch.model.policy import TriggerPolicy
from casewatch.triggers.rules import border_travel

# s.85(3): "the period of 3 days beginning when subsection (4) first ceases to apply".
AFTER_RELEASE_DAYS = 3
# A bound on counting through days away (100 years): past it, the person is treated as away.
_MAX_DAYS = 36525


@dataclass(frozen=True)
class Away:
    """Days `start` .. `end` - 1 the person is held or abroad; `end` is the first day back
    (None: still away)."""

    kind: str  # "remand", "sentence", "hospital", "recall", "detained", "abroad"
    start: date
    end: date | None

    def covers(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day < self.end)


def _closed_by_liberty(period: Away, notified: Sequence[date], recalled: Sequence[date]) -> Away:
    """An open period ends on the first day after it began that the person is known to have
    been at liberty: a notification made (in person, s.87), or, for custody on a recall, a later
    recall issued (only a person out on licence is recalled; a recall issued while remanded on
    a new charge proves nothing). Else one return with no release on record would silence every
    clock for good."""
    if period.end is not None:
        return period
    liberty = [*notified, *(recalled if period.kind == "recall" else ())]
    later = [day for day in liberty if day > period.start]
    return Away(period.kind, period.start, min(later)) if later else period


def _detention_periods(events: Sequence[DetentionFacts]) -> list[Away]:
    found: list[Away] = []
    open_since: DetentionFacts | None = None
    by_day: dict[date, list[DetentionFacts]] = {}
    for event in events:
        by_day.setdefault(event.on, []).append(event)
    for day in sorted(by_day):
        # On one day: with a period open, the end is heard first (released, then held again);
        # with none, the start first (held and released the same day: no whole day away).
        todays = sorted(by_day[day], key=lambda e: (e.started if open_since else not e.started, e.event_id))
        for event in todays:
            if event.started and open_since is None:
                open_since = event
            elif not event.started and open_since is not None:
                if day > open_since.on:
                    found.append(Away(open_since.kind or "detained", open_since.on, day))
                open_since = None
    if open_since is not None:
        found.append(Away(open_since.kind or "detained", open_since.on, None))
    return found


def _abroad_periods(history: NotificationHistory, settings: TriggerPolicy, tz: ZoneInfo) -> list[Away]:
    checks = sorted(history.border_checks, key=lambda c: (c.checked_at, c.event_id))
    matched = border_travel.assign(checks, history.travels, settings, tz) if history.travels else {}
    found: list[Away] = []
    gone: date | None = None
    gone_trip_return: date | None = None
    for check in checks:
        day = local_date(check.checked_at, tz)
        trip = matched.get(check.event_id)
        if check.direction == "outbound":
            if gone is not None and day > gone:
                # Leaving again: back in between, by the notified return if it was earlier.
                limit = min(day, gone + timedelta(days=settings.open_trip_max_days))
                earlier = gone_trip_return is not None and gone < gone_trip_return < limit
                back = gone_trip_return if earlier and gone_trip_return is not None else limit
                found.append(Away("abroad", gone, back))
            gone, gone_trip_return = day, trip.return_on if trip is not None else None
            continue
        if gone is not None:
            if day > gone:
                found.append(Away("abroad", gone, day))
            gone = None
        elif trip is not None and trip.departure_on < day:
            found.append(Away("abroad", trip.departure_on, day))
    if gone is not None:
        end = gone_trip_return if gone_trip_return is not None and gone_trip_return > gone else (
            gone + timedelta(days=settings.open_trip_max_days)
        )
        found.append(Away("abroad", gone, end))
    return found


def periods(
    nominal: NominalFacts, history: NotificationHistory, settings: TriggerPolicy, tz: ZoneInfo
) -> tuple[Away, ...]:
    """Every period the nominal was held or abroad, in start order."""
    events = list(history.detentions)
    if nominal.release_date is not None:
        # A release date ends a detention open before it (a recall return, say).
        events.append(DetentionFacts(on=nominal.release_date, started=False, event_id="~release_date"))
    # A release learned from another source (change.detected "release") ends one too.
    events.extend(
        DetentionFacts(on=d.changed_on, started=False, event_id=d.event_id)
        for d in history.detected
        if d.what == "release"
    )
    # Notifications made: ViSOR's record, the newest full one received, each change notified.
    made = (nominal.last_notification_on, history.last_full_on, *(c.notified_on for c in history.changes))
    notified = [day for day in made if day is not None]
    found = [_closed_by_liberty(p, notified, history.at_liberty) for p in _detention_periods(events)]
    relevant, release = nominal.relevant_date, nominal.release_date
    if (
        relevant is not None and release is not None and release > relevant
        and not any(relevant <= day < release for day in notified)
        and not any(d.started and relevant < d.on < release for d in history.detentions)
    ):
        # s.83(6): held from the relevant date to the release, unless the records say otherwise:
        # a notification from the relevant date on shows the person at liberty that day (made in
        # person at a police station, s.87(1)), so the release is a later custody's (a recall, a
        # new sentence); a detention on record that starts after the relevant date is that later
        # custody, and only "time when" the person is held is disregarded: the days before it
        # count (nineteenth session's review against the statute's text).
        found.append(Away("detained", relevant, release))
    found.extend(_abroad_periods(history, settings, tz))
    return tuple(sorted(found, key=lambda p: (p.start, p.end or date.max)))


def away_on(day: date, away: Sequence[Away]) -> Away | None:
    """The period covering `day` that ends last (None: the person is free that day)."""
    covering = [p for p in away if p.covers(day)]
    if not covering:
        return None
    return max(covering, key=lambda p: p.end or date.max)


def last_day_beginning_with(day: date, days: int, away: Sequence[Away]) -> date | None:
    """The last day of "the period of `days` days beginning with" `day` (day 1), days away
    disregarded (s.83(6), s.84(5)); None while the person is still away with no end in sight."""
    counted, current = 0, day
    for _ in range(_MAX_DAYS):
        held = away_on(current, away)
        if held is not None:
            if held.end is None:
                return None
            current = held.end
            continue
        counted += 1
        if counted == days:
            return current
        current += timedelta(days=1)
    return None


def extended(due: date, away: Sequence[Away]) -> date | None:
    """s.85(3): a periodic due day on which the person is held or abroad moves to the end of the
    3 days beginning with the day that "first ceases to apply" (the first day back; periods that
    run on into one another are one); None while still away with no end. Once: the Act moves
    the period that "would end whilst" the person is away, not the period it moved to."""
    held = away_on(due, away)
    if held is None:
        return due
    end = held.end
    for _ in range(len(away)):
        if end is None:
            return None
        following = [p for p in away if p.start <= end and (p.end is None or p.end > end)]
        if not following:
            break
        end = None if any(p.end is None for p in following) else max(p.end for p in following if p.end)
    if end is None:
        return None
    return end + timedelta(days=AFTER_RELEASE_DAYS - 1)
