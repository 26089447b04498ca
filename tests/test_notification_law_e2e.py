"""Issue 14, the rest of the clocks end to end on SQLite and PostgreSQL: signed events in through
the real HTTP app, the scan as of chosen instants (`run_scan(at=...)`, what `casewatch scan --at`
runs), and the alerts API showing exactly the expected notification alerts.

- SOA 2003 s.83(6): days held (remanded) inside the initial 3 days are disregarded;
- s.85(3)-(4): a periodic date that falls while remanded, recalled or abroad moves to the end of
  the 3 days beginning with the release or return; no missed alert while still held;
- s.84(1)(d): a release owes a notification within 3 days beginning with it (one alert, not two,
  when the moved periodic date would be met by the same notification);
- s.84(1), (2)-(4): a change learned from another source (`change.detected`) owes a change
  notification within 3 days beginning with the change; an advance notification within 2 days
  of it answers it; a late one resolves the missed alert and is flagged `notification.late`;
- s.85(5)(a) and SI 2012/1876: a compliant weekly reporter (no fixed abode) has no alert, and a
  travel notification restarts nothing;
- s.86 and SI 2004/1220: a return from a notified trip owes a return notification within 3 days
  beginning with the return;
- severity steps up with days overdue (triggers.missed_notification_severity).
"""

from __future__ import annotations

from typing import Any

from casewatch.clock import FixedClock
from casewatch.triggers.scan import run_scan
from tests.support import envelope, service_client, signed_get, signed_post
from tests.test_triggers_case_data import utc

HELD_MID = "VS-0000080"  # s.83(6): relevant date 16 Nov, remanded 17-25 Nov: due 26 Nov
INSIDE = "VS-0000081"  # s.85(3): annual date 20 Nov while remanded 1 Nov - 1 Dec
RECALLED = "VS-0000082"  # s.85(4)(b): recalled and back in custody 10 Nov: annual 20 Nov passes
CHANGE_MISSED = "VS-0000083"  # s.84(1): moved home 16 Nov, nothing notified
CHANGE_LATE = "VS-0000084"  # s.84(1): new name 10 Nov, notified 20 Nov: late
CHANGE_AHEAD = "VS-0000085"  # s.84(2)-(3): notified 12 Nov that the move is on 17 Nov; moved 16 Nov
WEEKLY = "VS-0000086"  # s.85(5)(a): no fixed abode, weekly 14 and 22 Nov (due 29 Nov), a trip notified 24 Nov
ABROAD = "VS-0000087"  # s.85(4)(d): abroad 15-24 Nov over the annual date 20 Nov; s.86 return
LONG_OVERDUE = "VS-0000088"  # severity: annual date 1 Oct, 57 days overdue on 27 Nov

NOTIFIED_YEAR_AGO = "2025-11-20"


def _event(event_type: str, ref: str, n: int, occurred: str, **data: Any) -> dict[str, Any]:
    return envelope(event_type, data, id=f"law-{ref}-{n}", visor_ref=ref, occurred_at=occurred)


def _upsert(ref: str, **data: Any) -> dict[str, Any]:
    return envelope(
        "nominal.upsert", id=f"law-upsert-{ref}", visor_ref=ref,
        occurred_at="2026-11-01T00:00:00Z", **data,
    )


def _case_data() -> list[dict[str, Any]]:
    return [
        _upsert(HELD_MID, last_notification_on=None, relevant_date="2026-11-16"),
        _event("detention.started", HELD_MID, 1, "2026-11-17T15:00:00Z",
            kind="remand", started_on="2026-11-17"),
        _event("detention.ended", HELD_MID, 2, "2026-11-25T11:00:00Z", ended_on="2026-11-25"),
        _upsert(INSIDE, last_notification_on=NOTIFIED_YEAR_AGO),
        _event("detention.started", INSIDE, 1, "2026-11-01T10:00:00Z",
            kind="remand", started_on="2026-11-01"),
        _upsert(RECALLED, last_notification_on=NOTIFIED_YEAR_AGO, on_licence=True),
        _event("recall.issued", RECALLED, 1, "2026-11-05T09:00:00Z", recall_type="standard",
               issued_at="2026-11-05T09:00:00Z"),
        _event("recall.returned", RECALLED, 2, "2026-11-10T21:00:00Z", returned_at="2026-11-10T21:00:00Z"),
        _upsert(CHANGE_MISSED, last_notification_on="2026-06-01"),
        _event("change.detected", CHANGE_MISSED, 1, "2026-11-17T09:00:00Z", what="home_address",
               changed_on="2026-11-16", source="council tax record (fictional)"),
        _upsert(CHANGE_LATE, last_notification_on="2026-06-01"),
        _event("change.detected", CHANGE_LATE, 1, "2026-11-12T09:00:00Z", what="name",
               changed_on="2026-11-10", source="DVLA check (fictional)"),
        _upsert(CHANGE_AHEAD, last_notification_on="2026-06-01"),
        _event("notification.received", CHANGE_AHEAD, 1, "2026-11-12T09:00:00Z", kind="change",
               notified_on="2026-11-12", what="home_address", changed_on="2026-11-17"),
        _event("change.detected", CHANGE_AHEAD, 2, "2026-11-18T09:00:00Z", what="home_address",
               changed_on="2026-11-16", source="housing officer (fictional)"),
        _upsert(WEEKLY, last_notification_on="2025-10-01", no_fixed_abode=True),
        _event("notification.received", WEEKLY, 1, "2026-11-14T10:00:00Z",
            kind="weekly", notified_on="2026-11-14"),
        _event("notification.received", WEEKLY, 2, "2026-11-22T10:00:00Z",
            kind="weekly", notified_on="2026-11-22"),
        _event("notification.received", WEEKLY, 3, "2026-11-24T10:00:00Z",
            kind="travel", notified_on="2026-11-24"),
        _upsert(ABROAD, last_notification_on=NOTIFIED_YEAR_AGO),
        _event("travel.notified", ABROAD, 1, "2026-11-01T10:00:00Z", departure_on="2026-11-15",
               return_on="2026-11-24", destination="ES"),
        _event("travel.border_alert", ABROAD, 2, "2026-11-15T07:00:00Z", port="Testport (fictional)",
               direction="outbound", checked_at="2026-11-15T07:00:00Z"),
        _event("travel.border_alert", ABROAD, 3, "2026-11-24T18:00:00Z", port="Testport (fictional)",
               direction="inbound", checked_at="2026-11-24T18:00:00Z"),
        _upsert(LONG_OVERDUE, last_notification_on="2025-10-01"),
    ]


async def _notification_alerts(client: Any, state: str) -> list[tuple[str, str, str, str]]:
    body = await (await signed_get(client, "/api/v1/alerts", params={"state": state})).json()
    return sorted(
        (a["kind"], a["visor_ref"], a["subject"], a["severity"])
        for a in body["alerts"]
        if a["kind"].startswith("notification.")
    )


async def test_the_clocks_of_ss83_to_86_end_to_end(db_url: str) -> None:
    clock = FixedClock(utc("2026-11-26T12:00:00Z"))
    async with service_client(db_url, clock=clock) as (service, client):
        resp = await signed_post(client, "/api/v1/events", _case_data())
        assert resp.status == 202, await resp.text()

        # 27 Nov 00:30 GMT: the 26th is over.
        await run_scan(service.sessions, service.ctx, utc("2026-11-27T00:30:00Z"))
        assert await _notification_alerts(client, "open") == sorted([
            # s.85(3): the periodic date 20 Nov fell abroad: 3 days beginning with the return 24 Nov
            ("notification.missed", ABROAD, "periodic:2026-11-26", "high"),
            # s.86, SI 2004/1220: back from a notified trip on 24 Nov, no return notification
            ("notification.missed", ABROAD, "return:2026-11-24", "high"),
            # s.84(1): moved home 16 Nov, due 18 Nov, nothing notified
            ("notification.missed", CHANGE_MISSED, "change:home_address:2026-11-16", "high"),
            # s.84(1): new name 10 Nov, due 12 Nov, not notified (yet)
            ("notification.missed", CHANGE_LATE, "change:name:2026-11-10", "high"),
            # s.83(1), (6): 16 Nov is day 1, 17-24 Nov held, 25 and 26 Nov days 2 and 3
            ("notification.missed", HELD_MID, "initial:2026-11-26", "high"),
            # severity: 1 Oct + 57 days overdue >= 28: critical
            ("notification.missed", LONG_OVERDUE, "periodic:2026-10-01", "critical"),
            # INSIDE and RECALLED are held: no alert; WEEKLY is compliant: none;
            # CHANGE_AHEAD was notified in advance within 2 days of the move: none
        ])

        # INSIDE released 1 Dec; CHANGE_LATE notifies its change late (20 Nov would have been
        # late already; this one on 28 Nov).
        clock.set(utc("2026-12-01T12:00:00Z"))
        resp = await signed_post(client, "/api/v1/events", [
            _event("detention.ended", INSIDE, 2, "2026-12-01T11:00:00Z", ended_on="2026-12-01"),
            _event("notification.received", CHANGE_LATE, 2, "2026-12-01T11:30:00Z", kind="change",
                   notified_on="2026-11-28", what="name", changed_on="2026-11-10"),
        ])
        assert resp.status == 202, await resp.text()
        await run_scan(service.sessions, service.ctx, utc("2026-12-04T00:30:00Z"))
        open_now = await _notification_alerts(client, "open")
        # s.84(1)(d) and s.85(3): one alert for INSIDE, the release (the moved periodic date,
        # 3 Dec, is met by the same notification)
        assert ("notification.missed", INSIDE, "change:release:2026-12-01", "high") in open_now
        assert not [a for a in open_now if a[1] == INSIDE and a[2].startswith("periodic")]
        # the late change notification: missed resolved, late flagged
        assert not [a for a in open_now if a[1] == CHANGE_LATE and a[0] == "notification.missed"]
        assert ("notification.late", CHANGE_LATE, "change:name:2026-11-10", "medium") in open_now
        assert [a for a in open_now if a[1] in (RECALLED, CHANGE_AHEAD)] == []  # still held; answered
        resolved = await _notification_alerts(client, "resolved")
        assert ("notification.missed", CHANGE_LATE, "change:name:2026-11-10", "high") in resolved

        assert not (await run_scan(service.sessions, service.ctx, utc("2026-12-04T00:30:00Z"))).tally.opened
