"""The notification clocks to the letter of the law (issue 14): custody and absence abroad
(SOA 2003 s.83(6), s.84(5), s.85(3)-(4)), releases (s.84(1)(d)), detected changes (s.84(1)-(5),
SI 2012/1876), returns (s.86, SI 2004/1220), the end of the requirements (s.82(1)), severity by
days overdue, and late change notifications. Tables of worked examples, each row citing its law.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from casewatch.config.triggers import TriggerSection
from casewatch.model.alerts import ALERT_KINDS
from casewatch.model.facts import (
    BorderCheckFacts,
    ChangeDetected,
    ChangeNotified,
    DetentionFacts,
    NominalFacts,
    NotificationHistory,
    TravelFacts,
)
from casewatch.model.results import LiveAlert
from casewatch.triggers.rules import notifications
from casewatch.triggers.rules.notifications import DUE_SOON, LATE, MISSED, Due, dues

TZ = ZoneInfo("Europe/London")
SETTINGS = TriggerSection()
REF = "VIS-TEST-0001"
NONE = NotificationHistory()


def nominal(**changes: object) -> NominalFacts:
    base = dict(visor_ref=REF, team="north", offender_manager="PC1234")
    return NominalFacts(**{**base, **changes})  # type: ignore[arg-type]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def d(text: str) -> date:
    return date.fromisoformat(text)


def held(start: str, end: str | None = None, kind: str = "remand") -> tuple[DetentionFacts, ...]:
    """A detention.started on `start` and, if given, a detention.ended on `end` (the first day
    free)."""
    began = DetentionFacts(on=d(start), started=True, kind=kind, event_id=f"det-{start}")
    if end is None:
        return (began,)
    return began, DetentionFacts(on=d(end), started=False, event_id=f"end-{end}")


def check(at: str, direction: str) -> BorderCheckFacts:
    return BorderCheckFacts(f"bc-{direction}-{at}", REF, "DOVER", direction, utc(at))


def trip(departure: str, back: str | None) -> TravelFacts:
    notified = utc(f"{departure}T09:00:00") - timedelta(days=30)  # a month's notice (s.86)
    return TravelFacts(f"tr-{departure}", REF, d(departure), d(back) if back else None, "FR", notified)


def detected(what: str, on: str, event_id: str = "cd-1") -> ChangeDetected:
    return ChangeDetected(what=what, changed_on=d(on), event_id=event_id, source="DVLA-TEST")


def told(
    on: str, what: str | None = None, changed: str | None = None, event_id: str = "cn-1"
) -> ChangeNotified:
    return ChangeNotified(d(on), what, d(changed) if changed else None, event_id)


HOME16 = (detected("home_address", "2026-11-16"),)  # s.84(1): due 18 Nov
YEAR_AGO = nominal(last_notification_on=d("2025-11-20"))  # periodic due 2026-11-20
RECENT = nominal(last_notification_on=d("2026-06-01"))  # periodic due 2027-06-01: out of the way
PERIODIC_LATER = Due("periodic", d("2027-06-01"))
H = NotificationHistory


def change(due: str, what: str, since: str) -> Due:
    return Due("change", d(due), what, d(since))


@pytest.mark.parametrize(
    ("facts", "history", "expected"),
    [
        # --- initial (s.83(1), (6)) -----------------------------------------------------------
        # s.83(1), (6): cautioned 16 Nov, remanded 17 Nov (another matter), free 20 Nov: 16 Nov is
        # day 1, 17-19 Nov are disregarded, 20 and 21 Nov are days 2 and 3. The release (s.84(1)(d))
        # falls within that period: one notification on 20 or 21 Nov answers both, one alert
        (nominal(relevant_date=d("2026-11-16")), H(detentions=held("2026-11-17", "2026-11-20")),
         [Due("initial", d("2026-11-21"))]),
        # s.83(1), s.84(1)(d): notified on the caution day, then remanded 17-20 Nov: the initial
        # one is met; the release owes its own notification (20-22 Nov)
        (nominal(relevant_date=d("2026-11-16")),
         NotificationHistory(last_full_on=d("2026-11-16"), detentions=held("2026-11-17", "2026-11-20")),
         # (the periodic one, 16 Nov 2027, waits: the release's notification restarts the year)
         [change("2026-11-22", "release", "2026-11-20")]),
        # s.83(6): remanded the day after the relevant date and still held: the period stands
        # still, nothing is due yet
        (nominal(relevant_date=d("2026-11-16")), H(detentions=held("2026-11-17")), []),
        # s.83(1): the 3 days ended (3 Nov) before the remand began (10 Nov): still owed, missed
        (nominal(relevant_date=d("2026-11-01")), H(detentions=held("2026-11-10")),
         [Due("initial", d("2026-11-03"))]),
        # s.83(6), s.84(1)(d): detained on conviction (2 Nov) to 20 Nov by detention events: the
        # 3 days begin with the release; the initial notification covers the release (one alert)
        (nominal(relevant_date=d("2026-11-02")), H(detentions=held("2026-11-02", "2026-11-20")),
         [Due("initial", d("2026-11-22"))]),
        # s.83(1), (6): abroad on the relevant date (border checks out 15 Nov, in 19 Nov): from
        # the day back
        (nominal(relevant_date=d("2026-11-16")),
         NotificationHistory(border_checks=(check("2026-11-15T09:00:00", "outbound"),
                                            check("2026-11-19T09:00:00", "inbound"))),
         [Due("initial", d("2026-11-21"))]),
        # --- periodic and weekly (s.85(1), (3)-(5)) --------------------------------------------
        # s.85(3), (4)(a): the year ends 20 Nov while remanded (15-25 Nov): 3 days beginning with
        # the release, 27 Nov. The release owes a notification by that same day (s.84(1)(d)),
        # which restarts the year (s.85(2)): one requirement, shown as the release
        (YEAR_AGO, H(detentions=held("2026-11-15", "2026-11-25")),
         [change("2026-11-27", "release", "2026-11-25")]),
        # s.85(3) not applied: released on the due day itself (20 Nov is a free day: at its end
        # the person is no longer held), so due that day; the release owes its own notification
        # within 3 days beginning with it (s.84(1)(d)), 22 Nov
        (YEAR_AGO, H(detentions=held("2026-11-10", "2026-11-20")),
         [Due("periodic", d("2026-11-20")), change("2026-11-22", "release", "2026-11-20")]),
        # s.85(3), (4)(d): abroad on the due day (out 10 Nov, in 24 Nov, no notified trip so no
        # return notification): 3 days beginning with the return, 26 Nov
        (YEAR_AGO,
         NotificationHistory(border_checks=(check("2026-11-10T09:00:00", "outbound"),
                                            check("2026-11-24T09:00:00", "inbound"))),
         [Due("periodic", d("2026-11-26"))]),
        # s.85(4)(b): recalled and returned to custody (a recall return is a detention): nothing
        # is due while serving the sentence
        (YEAR_AGO, H(detentions=held("2026-11-01", kind="recall")), []),
        # s.85(3): remanded 15 Nov and still held: the year ending 20 Nov stands still
        (YEAR_AGO, H(detentions=held("2026-11-15")), []),
        # s.85(1): the year ended 20 Nov, the remand began 25 Nov: the missed day stays missed
        (YEAR_AGO, H(detentions=held("2026-11-25")), [Due("periodic", d("2026-11-20"))]),
        # s.85(5)(a), (3), SI 2012/1876: the week ends 23 Nov while in hospital (21-24 Nov): 26 Nov,
        # the discharge's own due day (s.84(1)(d)): shown as the release
        (nominal(no_fixed_abode=True),
         H(last_full_on=d("2026-11-16"), detentions=held("2026-11-21", "2026-11-24", "hospital")),
         [change("2026-11-26", "release", "2026-11-24")]),
        # s.85(5)(a), (3), (4)(d): the week ends 23 Nov while abroad (out 21 Nov, back 25 Nov, no
        # notified trip): 3 days beginning with the return, 27 Nov
        (nominal(no_fixed_abode=True),
         H(last_full_on=d("2026-11-16"), border_checks=(check("2026-11-21T09:00:00", "outbound"),
                                                        check("2026-11-25T09:00:00", "inbound"))),
         [Due("weekly", d("2026-11-27"))]),
        # --- release (s.84(1)(d)) ------------------------------------------------------------
        # s.84(1)(d): remanded 1-16 Nov after the relevant date: a notification within 3 days
        # beginning with the release (16-18 Nov); the year runs on as before
        (nominal(relevant_date=d("2025-01-10"), last_notification_on=d("2026-06-01")),
         H(detentions=held("2026-11-01", "2026-11-16")),
         [change("2026-11-18", "release", "2026-11-16")]),  # it restarts the year (s.85(2))
        # s.84(1)(d), s.85(2): answered by any full notification on or after the release day,
        # which restarts the year
        (nominal(relevant_date=d("2025-01-10"), last_notification_on=d("2026-06-01")),
         NotificationHistory(last_full_on=d("2026-11-16"), detentions=held("2026-11-01", "2026-11-16")),
         [Due("periodic", d("2027-11-16"))]),
        # s.84(1)(d): a release learned from another source (change.detected "release") is the same
        # requirement, and a detention.ended the same day does not make it two
        (RECENT,
         NotificationHistory(detected=(detected("release", "2026-11-16"),),
                             detentions=held("2026-11-01", "2026-11-16")),
         [change("2026-11-18", "release", "2026-11-16")]),  # it restarts the year (s.85(2))
        # s.84(1)(d): a release on or before the relevant date is no release from it
        (nominal(relevant_date=d("2026-11-16"), last_notification_on=d("2026-11-16")),
         H(detentions=held("2026-11-01", "2026-11-16")),
         [Due("periodic", d("2027-11-16"))]),
        # --- change (s.84(1)-(5), SI 2012/1876) ---------------------------------------------
        # s.84(1): a home address change on 16 Nov: within 3 days beginning with it, 18 Nov
        (RECENT, H(detected=HOME16),
         [PERIODIC_LATER, change("2026-11-18", "home_address", "2026-11-16")]),
        # s.84(1): over a month end (30 Nov, 1 Dec, 2 Dec)
        (RECENT, NotificationHistory(detected=(detected("name", "2026-11-30"),)),
         [PERIODIC_LATER, change("2026-12-02", "name", "2026-11-30")]),
        # s.84(1): over 29 February in a leap year (28 Feb, 29 Feb, 1 Mar) and in a common year
        (nominal(last_notification_on=d("2027-06-01")), H(detected=(detected("bank_card", "2028-02-28"),)),
         [Due("periodic", d("2028-06-01")), change("2028-03-01", "bank_card", "2028-02-28")]),
        (nominal(last_notification_on=d("2026-06-01")), H(detected=(detected("bank_card", "2027-02-28"),)),
         [PERIODIC_LATER, change("2027-03-02", "bank_card", "2027-02-28")]),
        # s.84(5): remanded 17-20 Nov, in the middle of the 3 days: 16, 20 and 21 Nov
        (RECENT,
         H(detected=HOME16, detentions=held("2026-11-17", "2026-11-20")),
         [change("2026-11-22", "release", "2026-11-20"),
          change("2026-11-21", "home_address", "2026-11-16")]),
        # s.84(1): a change notification after the change (not saying when) answers it
        (RECENT,
         H(detected=HOME16, changes=(told("2026-11-17", "home_address"),)),
         [Due("periodic", d("2027-11-17"))]),
        # s.84(1): a change notification not saying what changed answers it too
        (RECENT, H(detected=HOME16, changes=(told("2026-11-17"),)),
         [Due("periodic", d("2027-11-17"))]),
        # s.84(1): one made before the change, not saying when, is about an earlier change
        (RECENT, H(detected=HOME16, changes=(told("2026-11-15"),)),
         [Due("periodic", d("2027-11-15")), change("2026-11-18", "home_address", "2026-11-16")]),
        # s.84(1): a notification of another change does not answer it
        (RECENT, H(detected=HOME16, changes=(told("2026-11-17", "name"),)),
         [Due("periodic", d("2027-11-17")), change("2026-11-18", "home_address", "2026-11-16")]),
        # s.84(2)-(4): notice in advance (10 Nov) of a move expected on 14 Nov: the move on 16 Nov
        # is within 2 days of the date given, so the notice answers it
        (RECENT,
         H(detected=HOME16,
                             changes=(told("2026-11-10", "home_address", "2026-11-14"),)),
         [Due("periodic", d("2027-11-10"))]),
        # s.84(2)-(4): 2 days the other way (expected 18 Nov) answers it as well
        (RECENT,
         H(detected=HOME16,
                             changes=(told("2026-11-10", "home_address", "2026-11-18"),)),
         [Due("periodic", d("2027-11-10"))]),
        # s.84(2)-(4): 3 days off (expected 13 Nov) does not: a fresh notification is owed
        (RECENT,
         H(detected=HOME16,
                             changes=(told("2026-11-10", "home_address", "2026-11-13"),)),
         [Due("periodic", d("2027-11-10")), change("2026-11-18", "home_address", "2026-11-16")]),
        # --- return (s.86, SI 2004/1220) -----------------------------------------------------
        # s.86: a notified trip 1-10 Nov, both legs matched by border checks: a return
        # notification within 3 days beginning with the day of return (10-12 Nov)
        (RECENT,
         NotificationHistory(travels=(trip("2026-11-01", "2026-11-10"),),
                             border_checks=(check("2026-11-01T08:00:00", "outbound"),
                                            check("2026-11-10T18:00:00", "inbound"))),
         [PERIODIC_LATER, Due("return", d("2026-11-12"), since=d("2026-11-10"))]),
        # s.86: answered by a return notification on or after the day of return
        (RECENT,
         NotificationHistory(travels=(trip("2026-11-01", "2026-11-10"),), returns_notified=(d("2026-11-11"),),
                             border_checks=(check("2026-11-01T08:00:00", "outbound"),
                                            check("2026-11-10T18:00:00", "inbound"))),
         [PERIODIC_LATER]),
        # s.86: one from before the return (an earlier trip's) does not answer it
        (RECENT,
         NotificationHistory(travels=(trip("2026-11-01", "2026-11-10"),), returns_notified=(d("2026-11-09"),),
                             border_checks=(check("2026-11-01T08:00:00", "outbound"),
                                            check("2026-11-10T18:00:00", "inbound"))),
         [PERIODIC_LATER, Due("return", d("2026-11-12"), since=d("2026-11-10"))]),
        # s.86: an inbound check matching no notified trip owes no return notification (it is
        # unnotified travel, for the border rule)
        (RECENT, H(border_checks=(check("2026-11-10T18:00:00", "inbound"),)), [PERIODIC_LATER]),
        # --- who and until when (s.80(2), s.82(1)) -------------------------------------------
        # s.82(1): the period ends 17 Nov, before the change's due day (18 Nov): nothing falls due
        (nominal(last_notification_on=d("2026-06-01"), notification_ends_on=d("2026-11-17")),
         H(detected=HOME16), []),
        # s.80(2): not registered: no change, release or return requirement either
        (nominal(registered=False, last_notification_on=d("2026-06-01")),
         H(detected=HOME16, detentions=held("2026-11-01", "2026-11-16")),
         []),
    ],
)
def test_what_is_owed_and_when(
    facts: NominalFacts, history: NotificationHistory, expected: list[Due]
) -> None:
    assert dues(facts, history, SETTINGS, TZ) == expected


def test_the_change_period_is_the_statutes_3_days_not_a_setting() -> None:
    # s.84(1): "3 days beginning with" the change, whatever the initial setting says
    settings = TriggerSection(initial_notification_days=5)
    history = H(detected=HOME16)
    assert change("2026-11-18", "home_address", "2026-11-16") in dues(RECENT, history, settings, TZ)


def opened(facts: NominalFacts, history: NotificationHistory, at: str,
           settings: TriggerSection = SETTINGS) -> list[tuple[str, str, str]]:
    result = notifications.evaluate(facts, history, [], utc(at), settings, TZ)
    return sorted((s.kind, s.subject, s.severity) for s in result.opens)


HOME_16_NOV = H(detected=HOME16)
HOME_SUBJECT = "change:home_address:2026-11-16"


@pytest.mark.parametrize(
    ("facts", "history", "at", "expected"),
    [
        # s.84(1): changed 16 Nov (GMT): due soon to the end of 18 Nov, missed from 19 Nov
        (RECENT, HOME_16_NOV, "2026-11-16T10:00:00", [(DUE_SOON, HOME_SUBJECT, "medium")]),
        (RECENT, HOME_16_NOV, "2026-11-18T23:59:59", [(DUE_SOON, HOME_SUBJECT, "medium")]),
        (RECENT, HOME_16_NOV, "2026-11-19T00:00:00", [(MISSED, HOME_SUBJECT, "high")]),
        # s.84(1): changed 27 Mar 2026, due 29 Mar, the spring change day (23 hours): missed
        # from 23:00 UTC
        (RECENT, NotificationHistory(detected=(detected("name", "2026-03-27"),)), "2026-03-29T22:59:59",
         [(DUE_SOON, "change:name:2026-03-27", "medium")]),
        (RECENT, NotificationHistory(detected=(detected("name", "2026-03-27"),)), "2026-03-29T23:00:00",
         [(MISSED, "change:name:2026-03-27", "high")]),
        # s.84(1): changed 23 Oct 2026, due 25 Oct, the autumn change day (25 hours): missed
        # from midnight UTC
        (RECENT, NotificationHistory(detected=(detected("name", "2026-10-23"),)), "2026-10-25T23:59:59",
         [(DUE_SOON, "change:name:2026-10-23", "medium")]),
        (RECENT, NotificationHistory(detected=(detected("name", "2026-10-23"),)), "2026-10-26T00:00:00",
         [(MISSED, "change:name:2026-10-23", "high")]),
        # s.85(3), s.84(1)(d): the year due 23 Mar 2026 while remanded 20-27 Mar: moved to 29 Mar
        # (27, 28, 29), the spring change day (23 hours), the release's own due day (one alert,
        # the release): missed from 23:00 UTC on 29 Mar
        (nominal(last_notification_on=d("2025-03-23")),
         H(detentions=held("2026-03-20", "2026-03-27")), "2026-03-29T22:59:59",
         [(DUE_SOON, "change:release:2026-03-27", "medium")]),
        (nominal(last_notification_on=d("2025-03-23")),
         H(detentions=held("2026-03-20", "2026-03-27")), "2026-03-29T23:00:00",
         [(MISSED, "change:release:2026-03-27", "high")]),
        # s.85(3), (4)(d): the year due 23 Mar 2026 while abroad 20-27 Mar (border checks): the
        # 3rd day beginning with the return is 29 Mar: missed from 23:00 UTC
        (nominal(last_notification_on=d("2025-03-23")),
         H(border_checks=(check("2026-03-20T09:00:00", "outbound"), check("2026-03-27T09:00:00", "inbound"))),
         "2026-03-29T22:59:59", [(DUE_SOON, "periodic:2026-03-29", "low")]),
        (nominal(last_notification_on=d("2025-03-23")),
         H(border_checks=(check("2026-03-20T09:00:00", "outbound"), check("2026-03-27T09:00:00", "inbound"))),
         "2026-03-29T23:00:00", [(MISSED, "periodic:2026-03-29", "high")]),
        # s.85(3), (4)(d): the year due 23 Oct 2026 while abroad 20-23 Oct: 23, 24, 25 Oct, the
        # autumn change day (25 hours): missed from midnight UTC
        (nominal(last_notification_on=d("2025-10-21")),
         H(border_checks=(check("2026-10-20T09:00:00", "outbound"), check("2026-10-23T09:00:00", "inbound"))),
         "2026-10-25T23:59:59", [(DUE_SOON, "periodic:2026-10-25", "low")]),
        (nominal(last_notification_on=d("2025-10-21")),
         H(border_checks=(check("2026-10-20T09:00:00", "outbound"), check("2026-10-23T09:00:00", "inbound"))),
         "2026-10-26T00:00:00", [(MISSED, "periodic:2026-10-25", "high")]),
        # s.86: back at 00:30 BST on 8 Jul (23:30 UTC on 7 Jul): the day of return is 8 Jul
        # (local), so due 10 Jul, missed from 23:00 UTC on 10 Jul
        (RECENT,
         NotificationHistory(travels=(trip("2026-07-01", "2026-07-08"),),
                             border_checks=(check("2026-07-01T08:00:00", "outbound"),
                                            check("2026-07-07T23:30:00", "inbound"))),
         "2026-07-10T22:59:59", [(DUE_SOON, "return:2026-07-08", "medium")]),
        (RECENT,
         NotificationHistory(travels=(trip("2026-07-01", "2026-07-08"),),
                             border_checks=(check("2026-07-01T08:00:00", "outbound"),
                                            check("2026-07-07T23:30:00", "inbound"))),
         "2026-07-10T23:00:00", [(MISSED, "return:2026-07-08", "high")]),
        # s.85(3), (4): remanded 15 Nov and still held on 30 Nov: no missed or reminder alert
        (YEAR_AGO, H(detentions=held("2026-11-15")), "2026-11-30T12:00:00", []),
        # s.85(1): missed on 20 Nov, remanded from 25 Nov: still missed while held
        (YEAR_AGO, H(detentions=held("2026-11-25")), "2026-11-30T12:00:00",
         [(MISSED, "periodic:2026-11-20", "high")]),
        # s.84(1)(d): released 16 Nov after the relevant date: missed from 19 Nov
        (nominal(relevant_date=d("2025-01-10"), last_notification_on=d("2026-06-01")),
         H(detentions=held("2026-11-01", "2026-11-16")), "2026-11-19T00:00:00",
         [(MISSED, "change:release:2026-11-16", "high")]),
        # s.82(1): the period ended 20 Nov: from 21 Nov a missed change is no longer wanted
        (nominal(last_notification_on=d("2026-06-01"), notification_ends_on=d("2026-11-20")), HOME_16_NOV,
         "2026-11-21T00:00:00", []),
    ],
)
def test_alerts_at_the_exact_instants(
    facts: NominalFacts, history: NotificationHistory, at: str, expected: list[tuple[str, str, str]]
) -> None:
    assert opened(facts, history, at) == expected


STEPS = TriggerSection(missed_notification_severity={1: "low", 2: "medium", 7: "high", 28: "critical"})


@pytest.mark.parametrize(
    ("at", "settings", "severity", "days"),
    [
        # local choice (issue 14), defaults {1: high, 28: critical}: due 18 Nov
        ("2026-11-19T00:00:00", SETTINGS, "high", 1),
        ("2026-12-15T23:59:59", SETTINGS, "high", 27),
        ("2026-12-16T00:00:00", SETTINGS, "critical", 28),
        ("2027-02-18T12:00:00", SETTINGS, "critical", 92),  # three months: not the same alert
        # a configured ladder
        ("2026-11-19T12:00:00", STEPS, "low", 1),
        ("2026-11-20T12:00:00", STEPS, "medium", 2),
        ("2026-11-25T12:00:00", STEPS, "high", 7),
        ("2026-12-16T12:00:00", STEPS, "critical", 28),
    ],
)
def test_severity_rises_with_the_days_overdue(
    at: str, settings: TriggerSection, severity: str, days: int
) -> None:
    result = notifications.evaluate(RECENT, HOME_16_NOV, [], utc(at), settings, TZ)
    (spec,) = result.opens
    assert (spec.kind, spec.severity, spec.details["days_overdue"]) == (MISSED, severity, days)
    assert spec.severity in ALERT_KINDS[MISSED].severities


def test_the_missed_change_alert_names_the_requirement_and_nothing_personal() -> None:
    # s.84(1): the summary says which notification, the reference and the date only
    result = notifications.evaluate(RECENT, HOME_16_NOV, [], utc("2026-11-19T00:00:00"), SETTINGS, TZ)
    (spec,) = result.opens
    assert spec.summary == "Missed change notification (home address): VIS-TEST-0001, due 2026-11-18"
    assert spec.details == {
        "requirement": "change", "what": "home_address", "due_on": "2026-11-18", "days_overdue": 1,
    }
    assert (spec.owner, spec.team, spec.due_at) == ("PC1234", "north", utc("2026-11-19T00:00:00"))
    soon = notifications.evaluate(RECENT, HOME_16_NOV, [], utc("2026-11-17T00:00:00"), SETTINGS, TZ).opens[0]
    assert soon.summary == "Change notification (home address) due soon: VIS-TEST-0001, due 2026-11-18"
    assert "days_overdue" not in soon.details


def test_returns_are_named_and_keep_the_return_date() -> None:
    # s.86, SI 2004/1220: "return:<return date>"
    history = NotificationHistory(
        travels=(trip("2026-11-01", "2026-11-10"),),
        border_checks=(check("2026-11-01T08:00:00", "outbound"), check("2026-11-10T18:00:00", "inbound")),
    )
    (spec,) = notifications.evaluate(RECENT, history, [], utc("2026-11-13T00:00:00"), SETTINGS, TZ).opens
    assert spec.subject == "return:2026-11-10"
    assert spec.summary == "Missed return notification: VIS-TEST-0001, due 2026-11-12"
    assert spec.details["requirement"] == "return"


@pytest.mark.parametrize(
    ("history", "live", "resolved"),
    [
        # s.84(1): the change notification arrives (late): the missed alert resolves
        (NotificationHistory(detected=HOME_16_NOV.detected, changes=(told("2026-11-22"),)),
         [LiveAlert(MISSED, REF, HOME_SUBJECT)], [(MISSED, HOME_SUBJECT)]),
        # s.85(3)-(4): the year due 30 Nov, its reminder live, remanded from 23 Nov (still
        # held): the clock stands still, the reminder resolves
        (NotificationHistory(last_full_on=d("2025-11-30"), detentions=held("2026-11-23")),
         [LiveAlert(DUE_SOON, REF, "periodic:2026-11-30")], [(DUE_SOON, "periodic:2026-11-30")]),
        # a notification.late is not the scan's to resolve
        (NONE, [LiveAlert(LATE, REF, HOME_SUBJECT)], []),
    ],
)
def test_resolving(
    history: NotificationHistory, live: list[LiveAlert], resolved: list[tuple[str, str]]
) -> None:
    facts = nominal(last_notification_on=d("2026-06-01"))
    result = notifications.evaluate(facts, history, live, utc("2026-11-24T12:00:00"), SETTINGS, TZ)
    assert sorted((r.alert.kind, r.alert.subject) for r in result.resolves) == resolved
    assert LATE not in notifications.KINDS


DETECTED = detected("home_address", "2026-11-16", "cd-1")  # due 18 Nov (s.84(1))
LATE_NOTICE = told("2026-11-20", "home_address", event_id="cn-1")


@pytest.mark.parametrize(
    ("history", "event_id", "expected"),
    [
        # s.84(1): notified 20 Nov, after the due day 18 Nov; the notification arrives second
        (H(detected=(DETECTED,), changes=(LATE_NOTICE,)), "cn-1", [HOME_SUBJECT]),
        # the change.detected arrives second (events in the other order): the same one alert
        (H(detected=(DETECTED,), changes=(LATE_NOTICE,)), "cd-1", [HOME_SUBJECT]),
        # only one of the two heard yet: nothing (the first to arrive opens nothing)
        (H(detected=(DETECTED,)), "cd-1", []),
        (H(changes=(LATE_NOTICE,)), "cn-1", []),
        # another event of the nominal's: nothing (it opened when the second arrived)
        (H(detected=(DETECTED,), changes=(LATE_NOTICE,)), "other", []),
        # a second late notification of the same change: not again
        (H(detected=(DETECTED,), changes=(LATE_NOTICE, told("2026-11-22", event_id="cn-2"))),
         "cn-2", []),
        # s.84(1): notified on the due day: in time
        (H(detected=(DETECTED,), changes=(told("2026-11-18", event_id="cn-1"),)), "cn-1", []),
        # s.84(5): remanded 17-20 Nov, so due 21 Nov: notified 20 Nov is in time
        (H(detected=(DETECTED,), changes=(LATE_NOTICE,), detentions=held("2026-11-17", "2026-11-20")),
         "cn-1", []),
        # s.84(2)-(4): notice in advance is never late
        (H(detected=(DETECTED,), changes=(told("2026-11-10", "home_address", "2026-11-15"),)),
         "cn-1", []),
    ],
)
def test_a_late_change_notification_opens_once(
    history: NotificationHistory, event_id: str, expected: list[str]
) -> None:
    facts = nominal(last_notification_on=d("2026-06-01"))
    result = notifications.late(facts, history, SETTINGS, TZ, event_id)
    assert [s.subject for s in result.opens] == expected
    for spec in result.opens:
        assert (spec.kind, spec.severity) == (LATE, "medium")
        assert spec.summary == (
            "Late change notification (home address): VIS-TEST-0001, due 2026-11-18, notified 2026-11-20"
        )
        assert spec.details["days_late"] == 2


def test_no_late_alert_for_someone_not_registered_or_unknown() -> None:
    # s.80(2): not a relevant offender; and an unknown reference
    history = H(detected=(DETECTED,), changes=(LATE_NOTICE,))
    assert notifications.late(nominal(registered=False), history, SETTINGS, TZ, "cn-1").opens == ()
    assert notifications.late(None, history, SETTINGS, TZ, "cn-1").opens == ()


RECALL_RETURN = DetentionFacts(date(2026, 6, 1), True, "recall", "rr")


@pytest.mark.parametrize(
    ("why", "history", "expected"),
    [
        (
            "s.85(4)(b): back in custody on recall 1 Jun, no release on record: held, nothing due",
            NotificationHistory(detentions=(RECALL_RETURN,)),
            [],
        ),
        (
            "recalled again 1 Sep: out on licence by then, so the custody ended; 20 Nov is free",
            NotificationHistory(
                detentions=(RECALL_RETURN,), at_liberty=(date(2026, 5, 20), date(2026, 9, 1))
            ),
            [Due("periodic", date(2026, 11, 20))],
        ),
        (
            "s.87: a notification made in person 15 Jul (after the return): at liberty by then",
            NotificationHistory(last_full_on=date(2026, 7, 15), detentions=(RECALL_RETURN,)),
            [Due("periodic", date(2027, 7, 15))],
        ),
    ],
)
def test_an_open_custody_ends_when_the_nominal_is_known_to_be_at_liberty(
    why: str, history: NotificationHistory, expected: list[Due]
) -> None:
    facts = NominalFacts("VS-0000099", "north", "PC1234", last_notification_on=date(2025, 11, 20))
    assert dues(facts, history, SETTINGS, TZ) == expected, why


@pytest.mark.parametrize(
    ("why", "facts", "history", "expected"),
    [
        (
            "s.84(1)(d): remanded 1 Mar, no detention.ended, a release learned on 10 Mar "
            "(change.detected): the custody ends; the release is due 12 Mar",
            nominal(last_notification_on=d("2025-12-05")),
            H(detentions=held("2026-03-01"), detected=(detected("release", "2026-03-10"),)),
            [change("2026-03-12", "release", "2026-03-10")],
        ),
        (
            "s.87: a notification made in person (ViSOR's date, 1 Jun 2025) after a remand with no "
            "end on record: at liberty by then; the year runs from it and is missed",
            nominal(last_notification_on=d("2025-06-01")),
            H(detentions=held("2025-03-01")),
            [Due("periodic", d("2026-06-01"))],
        ),
        (
            "s.83(6): a release date years after the relevant date, with a notification between: "
            "no custody from the relevant date (the missed year stays missed); the release owes",
            nominal(relevant_date=d("2020-01-10"), last_notification_on=d("2024-01-10"),
                    release_date=d("2025-09-01")),
            H(detentions=held("2025-03-01")),
            [Due("periodic", d("2025-01-10")), change("2025-09-03", "release", "2025-09-01")],
        ),
        (
            "s.85(4)(b): a recall issued while remanded on a new charge proves no liberty: still "
            "held, nothing due",
            nominal(last_notification_on=d("2025-04-01")),
            H(detentions=held("2026-03-01"), at_liberty=(d("2026-03-05"),)),
            [],
        ),
        (
            "s.84(1): told on 16 Nov of a move that day; a second move on 18 Nov is owed anew",
            nominal(last_notification_on=d("2026-06-01")),
            H(detected=(detected("home_address", "2026-11-18", "cd-2"),),
              changes=(told("2026-11-16", "home_address", "2026-11-16"),)),
            # (the change notification of 16 Nov restarted the year, s.85(2)(b))
            [Due("periodic", d("2027-11-16")), change("2026-11-20", "home_address", "2026-11-18")],
        ),
        (
            "s.84(2)-(3): told on 12 Nov of a move expected 17 Nov; moved 16 Nov: answered",
            nominal(last_notification_on=d("2026-06-01")),
            H(detected=(detected("home_address", "2026-11-16"),),
              changes=(told("2026-11-12", "home_address", "2026-11-17"),)),
            [Due("periodic", d("2027-11-12"))],  # and the year runs from it (s.85(2)(b))
        ),
        (
            "s.85(3): the year ends 20 Nov while remanded (1 Nov - 1 Dec); the period runs to the "
            "end of 3 days beginning when the custody first ceases (1 Dec): 3 Dec, once, even though "
            "abroad 2-10 Dec; the release's own 3 days disregard the days abroad (s.84(5)): 1, 10 "
            "and 11 Dec. Two deadlines in law; one notification by 3 Dec meets both",
            YEAR_AGO,
            H(detentions=held("2026-11-01", "2026-12-01"), border_checks=(
                check("2026-12-02T08:00:00", "outbound"), check("2026-12-10T18:00:00", "inbound"),
            )),
            [Due("periodic", d("2026-12-03")), change("2026-12-11", "release", "2026-12-01")],
        ),
        (
            "s.85(4)(d): two trips, the first (notified 1-8 Jan) with no inbound check: back by its "
            "notified return; the year (1 Mar) was missed in between and stays missed",
            nominal(last_notification_on=d("2025-03-01")),
            H(travels=(trip("2026-01-01", "2026-01-08"),), border_checks=(
                check("2026-01-01T08:00:00", "outbound"), check("2026-06-01T08:00:00", "outbound"),
                check("2026-06-08T18:00:00", "inbound"),
            )),
            [Due("periodic", d("2026-03-01"))],
        ),
    ],
)
def test_the_reviewed_edges(
    why: str, facts: NominalFacts, history: NotificationHistory, expected: list[Due]
) -> None:
    assert dues(facts, history, SETTINGS, TZ) == expected, why
