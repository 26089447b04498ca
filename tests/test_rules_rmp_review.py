"""rules.rmp_review: a risk management plan reviewed at least every 16 weeks (ACPO NPIA 2010
Guidance, cited by the 2011 joint inspection of MAPPA para 8.30), for every active nominal
(para 8.22); reminded 14 days ahead and the reminder days, and the count from a level change or
from rmp_reviews_recorded_from when never reviewed, are local choices."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from casewatch.config.triggers import TriggerSection
from casewatch.model.facts import NominalFacts
from casewatch.model.results import LiveAlert
from casewatch.triggers.rules import rmp_review
from tests.test_rules_actions import TZ

POLICY = TriggerSection()
REF = "VIS-TEST-0002"
ACTIVE = NominalFacts(REF, "north", "PC1")
JAN_1 = date(2026, 1, 1)  # + 16 weeks: due by the end of 23 April 2026


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (nominal, last reviewed, level changed, now, expected (severity, subject) or None, source)
CASES = [
    (ACTIVE, JAN_1, None, "2026-04-08T22:59:00", None,
     "local choice: reminded from 14 days before (9 April)"),
    (ACTIVE, JAN_1, None, "2026-04-08T23:00:00", ("low", "rmp:2026-04-23"), "9 April 00:00 BST: due soon"),
    (ACTIVE, JAN_1, None, "2026-04-23T22:59:00", ("low", "rmp:2026-04-23"),
     "8.30: due by the end of 23 April"),
    (ACTIVE, JAN_1, None, "2026-04-23T23:00:00", ("medium", "rmp:2026-04-23"), "8.30: overdue from 24 April"),
    (ACTIVE, date(2026, 4, 1), JAN_1, "2026-04-24T12:00:00", None, "8.30: counted from the last review"),
    (ACTIVE, None, JAN_1, "2026-04-24T12:00:00", None,
     "first deployment: never reviewed, rmp_reviews_recorded_from unset: no clock from the level change"),
    (ACTIVE, None, None, "2026-04-24T12:00:00", None, "local choice: nothing to count from"),
    # Not registered, but managed at MAPPA level 2 (a category 2 nominal): still active (8.22).
    (NominalFacts(REF, "north", "PC1", registered=False, mappa_level=2), JAN_1, None,
     "2026-04-24T12:00:00", ("medium", "rmp:2026-04-23"), "8.22: a MAPPA-managed nominal who is no RSO"),
    # Notification period over (SOA 2003 s.82(1)) and no MAPPA level: no longer an active nominal.
    (NominalFacts(REF, "north", "PC1", notification_ends_on=date(2026, 3, 1)), JAN_1, None,
     "2026-04-24T12:00:00", None, "8.22: not active once the notification period has ended"),
    (NominalFacts(REF, "north", "PC1", registered=False), JAN_1, None,
     "2026-04-24T12:00:00", None, "8.22: neither registered nor at a MAPPA level"),
]


@pytest.mark.parametrize(
    ("nominal", "reviewed", "changed", "now", "expected", "source"), CASES, ids=[c[5] for c in CASES]
)
def test_review_due(
    nominal: NominalFacts, reviewed: date | None, changed: date | None, now: str,
    expected: tuple[str, str] | None, source: str,
) -> None:
    result = rmp_review.evaluate(nominal, reviewed, changed, [], _at(now), POLICY, TZ)
    if expected is None:
        assert result.opens == (), source
        return
    (spec,) = result.opens
    assert (spec.severity, spec.subject) == expected, source
    assert (spec.kind, spec.team, spec.owner) == (rmp_review.REVIEW_DUE, "north", "PC1")
    due = expected[1].removeprefix("rmp:")
    overdue = spec.severity == "medium"
    wording = f"RMP review overdue (due {due})" if overdue else f"RMP review due by {due}"
    assert spec.summary == f"{wording}: {REF}"


def test_the_weeks_and_reminder_are_settings() -> None:
    """rmp_review_weeks: a force may review more often (8.30: "depending on the level of risk")."""
    policy = TriggerSection(rmp_review_weeks=12, rmp_review_reminder_days=0)
    assert rmp_review.due_on(JAN_1, None, policy) == date(2026, 3, 26)
    assert rmp_review.evaluate(ACTIVE, JAN_1, None, [], _at("2026-03-25T12:00:00"), policy, TZ).opens == ()
    (on_the_day,) = rmp_review.evaluate(ACTIVE, JAN_1, None, [], _at("2026-03-26T12:00:00"), policy, TZ).opens
    assert (on_the_day.subject, on_the_day.severity) == ("rmp:2026-03-26", "low")
    with pytest.raises(ValidationError, match="rmp_review_reminder_days"):
        TriggerSection(rmp_review_weeks=2, rmp_review_reminder_days=14)


def test_a_review_moves_the_due_day_and_resolves_the_old_alert() -> None:
    live = [LiveAlert(rmp_review.REVIEW_DUE, REF, "rmp:2026-04-23", "medium")]
    now = _at("2026-04-28T12:00:00")
    result = rmp_review.evaluate(ACTIVE, date(2026, 4, 28), None, live, now, POLICY, TZ)
    assert result.opens == ()
    assert [(r.alert, r.reason) for r in result.resolves] == [(live[0], "reviewed, or no longer owed")]
    unknown = rmp_review.evaluate(None, JAN_1, None, live, now, POLICY, TZ)
    assert [r.alert for r in unknown.resolves] == live


def test_still_owed_keeps_the_alert_and_raises_it() -> None:
    """The same due day: the low reminder becomes medium (reconcile.apply raises and re-notifies)."""
    live = [LiveAlert(rmp_review.REVIEW_DUE, REF, "rmp:2026-04-23", "low")]
    result = rmp_review.evaluate(ACTIVE, JAN_1, None, live, _at("2026-04-24T12:00:00"), POLICY, TZ)
    assert result.resolves == ()
    raised = [(s.subject, s.severity, s.details["days_overdue"]) for s in result.opens]
    assert raised == [("rmp:2026-04-23", "medium", 1)]


# Never reviewed: (newest level change, rmp_reviews_recorded_from, now, expected or None, source)
NEVER_REVIEWED = [
    (JAN_1, None, "2026-04-24T12:00:00", None,
     "first deployment: rmp_reviews_recorded_from unset, level changes on record for years: no clock"),
    (date(2019, 5, 1), None, "2026-04-24T12:00:00", None,
     "first deployment: a level change in 2019 and no review feed yet: no clock, not overdue by years"),
    (JAN_1, date(2025, 12, 1), "2026-04-24T12:00:00", ("medium", "rmp:2026-04-23"),
     "local choice: the feed complete before the level change: from the level change (para 8.23)"),
    (date(2019, 5, 1), JAN_1, "2026-04-24T12:00:00", ("medium", "rmp:2026-04-23"),
     "first deployment: an old level change counts from rmp_reviews_recorded_from (1 Jan + 16 weeks)"),
    (date(2019, 5, 1), date(2026, 3, 1), "2026-04-24T12:00:00", None,
     "first deployment: the feed complete from 1 March, due 21 June: nothing yet"),
    (None, JAN_1, "2026-04-10T12:00:00", ("low", "rmp:2026-04-23"),
     "8.22: an active nominal with no level change, the feed complete from 1 Jan: due soon"),
]


@pytest.mark.parametrize(
    ("changed", "since", "now", "expected", "source"), NEVER_REVIEWED, ids=[c[4] for c in NEVER_REVIEWED]
)
def test_never_reviewed(
    changed: date | None, since: date | None, now: str, expected: tuple[str, str] | None, source: str
) -> None:
    policy = TriggerSection(rmp_reviews_recorded_from=since)
    result = rmp_review.evaluate(ACTIVE, None, changed, [], _at(now), policy, TZ)
    assert [(s.severity, s.subject) for s in result.opens] == ([expected] if expected else []), source


def test_a_review_counts_whatever_rmp_reviews_recorded_from_says() -> None:
    """A recorded review is the clock (8.30), before or after the feed's start."""
    policy = TriggerSection(rmp_reviews_recorded_from=date(2026, 3, 1))
    (spec,) = rmp_review.evaluate(ACTIVE, JAN_1, None, [], _at("2026-04-24T12:00:00"), policy, TZ).opens
    assert spec.subject == "rmp:2026-04-23"
    assert POLICY.rmp_reviews_recorded_from is None


def test_the_flood_resolves_once_the_setting_is_unset() -> None:
    """Alerts raised for plans never reviewed before the setting existed resolve on the next scan."""
    live = [LiveAlert(rmp_review.REVIEW_DUE, REF, "rmp:2019-08-21", "medium")]
    result = rmp_review.evaluate(ACTIVE, None, date(2019, 5, 1), live, _at("2026-04-24T12:00:00"), POLICY, TZ)
    assert result.opens == () and [r.alert for r in result.resolves] == live
