"""Issue 15, MAPP minutes and RMP reviews end to end on SQLite and PostgreSQL: signed events in
through the real HTTP app, the scan as of chosen instants (`run_scan(at=...)`), and the alerts
API showing exactly the expected `mappa.minutes_overdue` and `rmp.review_due` alerts.

- ViSOR Standards (2011 MAPPA inspection para 8.21): minutes within 5 working days of a level 3
  meeting, 10 of a level 2 one; Easter 2026 (Good Friday 3 April, Easter Monday 6 April) is not
  counted; minutes put on ViSOR resolve the alert at once (dispatch);
- ACPO NPIA 2010 Guidance (para 8.30): the RMP reviewed at least every 16 weeks, reminded 14
  days ahead (low), overdue (medium); a review recorded resolves it at once; never reviewed: from
  the later of the newest level change and `rmp_reviews_recorded_from` (local choice), and
  nothing while that setting is unset (first deployment: level changes are on record for years
  before any rmp.reviewed, so counting from them alone would raise one alert per nominal).
"""

from __future__ import annotations

from typing import Any

from casewatch.clock import FixedClock
from casewatch.triggers.scan import run_scan
from tests.support import envelope, nominal_data, service_client, signed_get, signed_post
from tests.test_triggers_case_data import utc

LEVEL_3 = "VIS-TEST-0151"  # level 3 meeting 1 April: due 10 April; RMP reviewed 1 January: due 23 April
LEVEL_2 = "VIS-TEST-0152"  # level 2 meeting 1 April: due 17 April; never reviewed, no level change
CHANGED = "VIS-TEST-0153"  # never reviewed; level 1 -> 2 on 1 December 2025: due 23 March once the
# review feed is complete from a day before that (rmp_reviews_recorded_from); unset: no clock
KINDS = ("mappa.minutes_overdue", "rmp.review_due")


def _upsert(ref: str, n: int, occurred: str, **data: Any) -> dict[str, Any]:
    return envelope(
        "nominal.upsert", nominal_data(**data), id=f"mins-{ref}-u{n}", visor_ref=ref, occurred_at=occurred
    )


def _event(event_type: str, ref: str, n: int, occurred: str, **data: Any) -> dict[str, Any]:
    return envelope(event_type, data, id=f"mins-{ref}-{n}", visor_ref=ref, occurred_at=occurred)


def _case_data() -> list[dict[str, Any]]:
    return [
        _upsert(LEVEL_3, 1, "2025-11-01T00:00:00Z", mappa_level=3),
        _event("meeting.held", LEVEL_3, 1, "2026-04-01T15:00:00Z",
               meeting_id="MAPP-TEST-3", held_on="2026-04-01", level=3),
        _event("rmp.reviewed", LEVEL_3, 2, "2026-01-01T12:00:00Z", reviewed_on="2026-01-01"),
        _upsert(LEVEL_2, 1, "2025-11-01T00:00:00Z", mappa_level=2),
        _event("meeting.held", LEVEL_2, 1, "2026-04-01T15:00:00Z",
               meeting_id="MAPP-TEST-2", held_on="2026-04-01", level=2),
        _upsert(CHANGED, 1, "2025-11-01T00:00:00Z", mappa_level=1),
        _upsert(CHANGED, 2, "2025-12-01T10:00:00Z", mappa_level=2),
    ]


async def _alerts(client: Any, state: str) -> list[tuple[str, str, str, str]]:
    body = await (await signed_get(client, "/api/v1/alerts", params={"state": state})).json()
    return sorted(
        (a["kind"], a["visor_ref"], a["subject"], a["severity"]) for a in body["alerts"] if a["kind"] in KINDS
    )


async def test_minutes_and_reviews_end_to_end(db_url: str) -> None:
    clock = FixedClock(utc("2026-04-10T12:00:00Z"))
    async with service_client(db_url, clock=clock) as (service, client):
        resp = await signed_post(client, "/api/v1/events", _case_data())
        assert resp.status == 202, await resp.text()

        # 10 April, midday: the level 3 minutes are due by the end of today; nothing overdue yet.
        # First deployment (rmp_reviews_recorded_from unset): nothing for the plans never reviewed.
        await run_scan(service.sessions, service.ctx, utc("2026-04-10T12:00:00Z"))
        assert await _alerts(client, "open") == sorted([
            ("rmp.review_due", LEVEL_3, "rmp:2026-04-23", "low"),  # reminded from 9 April
        ])

        # 11 April 00:30 BST (23:30 UTC on the 10th): the 10th is over.
        summary = await run_scan(service.sessions, service.ctx, utc("2026-04-10T23:30:00Z"))
        assert summary.tally.opened == {"mappa.minutes_overdue": 1}
        assert await _alerts(client, "open") == sorted([
            ("mappa.minutes_overdue", LEVEL_3, "MAPP-TEST-3", "high"),
            ("rmp.review_due", LEVEL_3, "rmp:2026-04-23", "low"),
        ])

        # The minutes reach ViSOR and the plans are reviewed: resolved at once, by the events.
        clock.set(utc("2026-04-14T09:00:00Z"))
        resp = await signed_post(client, "/api/v1/events", [
            _event("meeting.held", LEVEL_3, 3, "2026-04-14T09:00:00Z", meeting_id="MAPP-TEST-3",
                   held_on="2026-04-01", level=3, minutes_on_visor_on="2026-04-14"),
            _event("rmp.reviewed", LEVEL_3, 4, "2026-04-14T09:00:00Z", reviewed_on="2026-04-14"),
            _event("rmp.reviewed", CHANGED, 1, "2026-04-14T09:00:00Z", reviewed_on="2026-04-13"),
        ])
        assert resp.status == 202, await resp.text()
        assert await _alerts(client, "open") == []
        assert await _alerts(client, "resolved") == sorted([
            ("mappa.minutes_overdue", LEVEL_3, "MAPP-TEST-3", "high"),
            ("rmp.review_due", LEVEL_3, "rmp:2026-04-23", "low"),
        ])

        # 18 April: the level 2 minutes (due Friday 17 April, Easter not counted) are overdue.
        at = utc("2026-04-18T08:00:00Z")
        await run_scan(service.sessions, service.ctx, at)
        assert await _alerts(client, "open") == [("mappa.minutes_overdue", LEVEL_2, "MAPP-TEST-2", "medium")]
        again = await run_scan(service.sessions, service.ctx, at)
        assert not again.tally.opened and not again.tally.resolved


async def test_never_reviewed_counts_from_rmp_reviews_recorded_from(db_url: str) -> None:
    """The review feed complete from 20 November 2025 (local choice): a plan never reviewed counts
    from the later of its newest level change and that day (para 8.30's 16 weeks): CHANGED from
    the level change (1 Dec, due 23 March), LEVEL_2 with no level change from the feed's start
    (due 12 March); the scan's candidate filter reads both. A review recorded resolves them."""
    clock = FixedClock(utc("2026-04-10T12:00:00Z"))
    feed = {"rmp_reviews_recorded_from": "2025-11-20"}
    async with service_client(db_url, clock=clock, triggers=feed) as (service, client):
        resp = await signed_post(client, "/api/v1/events", _case_data())
        assert resp.status == 202, await resp.text()
        await run_scan(service.sessions, service.ctx, utc("2026-04-10T12:00:00Z"))
        assert await _alerts(client, "open") == sorted([
            ("rmp.review_due", LEVEL_3, "rmp:2026-04-23", "low"),
            ("rmp.review_due", LEVEL_2, "rmp:2026-03-12", "medium"),  # from the feed's start
            ("rmp.review_due", CHANGED, "rmp:2026-03-23", "medium"),  # from the level change
        ])
        resp = await signed_post(client, "/api/v1/events", [
            _event("rmp.reviewed", CHANGED, 1, "2026-04-10T12:00:00Z", reviewed_on="2026-04-10"),
        ])
        assert resp.status == 202, await resp.text()
        assert [a[1] for a in await _alerts(client, "resolved")] == [CHANGED]


FIRST = "VIS-TEST-0154"  # level 3 meeting "MAPP-TEST-SAME" on 1 April: due 10 April
SECOND = "VIS-TEST-0155"  # another level 3 meeting the source also calls "MAPP-TEST-SAME"


async def test_the_same_meeting_id_for_two_nominals_is_two_meetings_and_two_alerts(db_url: str) -> None:
    """A meeting id is the source's, unique per nominal only (as order ids): each nominal's
    meeting is its own, owes its own minutes (para 8.21) and is resolved only by its own
    nominal's minutes; another nominal's meeting.held never takes it over."""
    clock = FixedClock(utc("2026-04-10T12:00:00Z"))
    same = {"meeting_id": "MAPP-TEST-SAME", "held_on": "2026-04-01", "level": 3}
    first = ("mappa.minutes_overdue", FIRST, "MAPP-TEST-SAME", "high")
    second = ("mappa.minutes_overdue", SECOND, "MAPP-TEST-SAME", "high")
    async with service_client(db_url, clock=clock) as (service, client):
        resp = await signed_post(client, "/api/v1/events", [
            _upsert(FIRST, 1, "2025-11-01T00:00:00Z", mappa_level=3),
            _upsert(SECOND, 1, "2025-11-01T00:00:00Z", mappa_level=3),
            _event("meeting.held", FIRST, 1, "2026-04-01T15:00:00Z", **same),
            _event("meeting.held", SECOND, 1, "2026-04-01T16:00:00Z", **same),
        ])
        assert resp.status == 202, await resp.text()

        # 11 April, 00:30 BST: both meetings' minutes are overdue, one alert each.
        summary = await run_scan(service.sessions, service.ctx, utc("2026-04-10T23:30:00Z"))
        assert summary.tally.opened == {"mappa.minutes_overdue": 2}
        assert await _alerts(client, "open") == [first, second]

        # The second nominal's minutes reach ViSOR: its alert resolves, the first one's does not.
        clock.set(utc("2026-04-14T09:00:00Z"))
        resp = await signed_post(client, "/api/v1/events", [
            _event("meeting.held", SECOND, 2, "2026-04-14T09:00:00Z", **same,
                   minutes_on_visor_on="2026-04-14"),
        ])
        assert resp.status == 202, await resp.text()
        assert await _alerts(client, "open") == [first]
        assert await _alerts(client, "resolved") == [second]

        # The scan keeps the first one open and changes nothing.
        again = await run_scan(service.sessions, service.ctx, utc("2026-04-14T10:00:00Z"))
        assert not again.tally.opened and not again.tally.resolved
        assert await _alerts(client, "open") == [first]
