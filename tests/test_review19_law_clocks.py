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
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import pytest

from casewatch.config.triggers import TriggerSection
from casewatch.model.facts import (
    ChangeDetected,
    DetentionFacts,
    NominalFacts,
    NotificationHistory,
)
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
        # (custody.periods ignores a notification ON the relevant date, assumes custody from
        # 2 Nov to 1 Mar and asks for an "initial" notification by 3 Mar.)
        pytest.param(
            nominal(**CONVICTED, last_notification_on=d("2026-11-02")), H(last_full_on=d("2026-11-02")),
            [Due("change", d("2027-03-03"), "release", d("2027-03-01"))],
            [Due("initial", d("2027-03-03"))],
            id="s83-1-notified-on-relevant-date-initial-is-met",
        ),
        # s.84(1)(b), (5), s.83(6): the same person, seen at a police station on 2 Nov, moves on
        # 20 Nov; nothing says he was held then, so no day is disregarded: due 22 Nov (the code
        # disregards 2 Nov - 1 Mar and puts it at 3 Mar: 3 months of a missed change unseen).
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
        # (the code assumes custody from the relevant date because release_date > relevant_date
        # and moves the initial notification to 3 Mar, resolving the 4 Nov missed alert.)
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
