"""End to end through the events API (signed POST -> ingest -> rules -> 202 listing the alerts
opened) and the alert read API, with the scan in between, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from casewatch.clock import FixedClock
from casewatch.triggers.scan import run_scan
from tests.support import envelope, service_client, signed_get, signed_post
from tests.test_triggers_case_data import utc

REF = "VS-0000060"


def events() -> list[dict[str, Any]]:
    return [
        envelope(
            "nominal.upsert",
            id="e2e-1",
            visor_ref=REF,
            occurred_at="2026-01-01T00:00:00Z",
            last_notification_on="2025-11-20",
            mappa_level=2,
        ),
        envelope(
            "travel.border_alert",
            {"port": "Dover", "direction": "inbound", "checked_at": "2026-11-20T08:00:00Z"},
            id="e2e-2",
            visor_ref=REF,
        ),
        envelope(
            "mappa.level_changed",
            {"from_level": 2, "to_level": 3, "rationale": "fictional"},
            id="e2e-3",
            visor_ref=REF,
        ),
        envelope(
            "recall.issued",
            {"recall_type": "emergency", "issued_at": "2026-11-20T08:00:00Z"},
            id="e2e-4",
            visor_ref=REF,
        ),
        envelope("action.upsert", id="e2e-5", visor_ref=REF, action_id="ACT-E2E", due_on="2026-11-20"),
        envelope(
            "travel.border_alert",
            {"port": "Dover", "direction": "inbound", "checked_at": "2026-11-20T08:00:00Z"},
            id="e2e-6",
            visor_ref="VS-0999999",
        ),
    ]


async def test_events_api_lists_the_alerts_opened_and_scan_adds_the_clocks(db_url: str) -> None:
    clock = FixedClock(utc("2026-11-20T09:30:00Z"))
    async with service_client(db_url, clock=clock) as (service, client):
        resp = await signed_post(client, "/api/v1/events", events())
        assert resp.status == 202
        body = await resp.json()
        assert (body["accepted"], body["duplicates"]) == (6, 0)
        listed = await (await signed_get(client, "/api/v1/alerts")).json()
        by_id = {a["id"]: a for a in listed["alerts"]}
        assert sorted(body["alerts"]) == sorted(by_id)
        assert sorted((a["kind"], a["severity"]) for a in by_id.values()) == [
            ("mappa.level_changed", "high"),
            ("mappa.visor_update_due", "medium"),
            ("recall.issued", "critical"),
            ("travel.record_fta", "high"),
            ("travel.unmatched_nominal", "high"),
            ("travel.unnotified", "high"),
        ]
        assert {a["state"] for a in by_id.values()} == {"open"}
        assert all("Testperson" not in a["summary"] for a in by_id.values())

        # re-sending the batch: all duplicates, nothing opened
        again = await (await signed_post(client, "/api/v1/events", events())).json()
        assert (again["accepted"], again["duplicates"], again["alerts"]) == (0, 6, [])

        # the scan opens the time-driven ones once: periodic due today, the action due today, and
        # the recalled nominal unlawfully at large (issue 15)
        summary = await run_scan(service.sessions, service.ctx)
        assert dict(summary.tally.opened) == {
            "notification.due_soon": 1, "action.due_soon": 1, "recall.unlawfully_at_large": 1,
        }
        assert not (await run_scan(service.sessions, service.ctx)).tally.opened
        clock.set(utc("2026-11-21T00:00:00Z"))  # the due day is over
        summary = await run_scan(service.sessions, service.ctx)
        assert dict(summary.tally.opened) == {"notification.missed": 1, "action.overdue": 1}
        missed = await (
            await signed_get(client, "/api/v1/alerts", params={"kind": "notification.missed"})
        ).json()
        assert [a["visor_ref"] for a in missed["alerts"]] == [REF]

        # the notification and the return arrive: those alerts resolve
        resp = await signed_post(
            client,
            "/api/v1/events",
            [
                envelope(
                    "notification.received",
                    {"kind": "periodic", "notified_on": "2026-11-21"},
                    id="e2e-7",
                    visor_ref=REF,
                    occurred_at="2026-11-21T00:00:00Z",
                ),
                envelope(
                    "recall.returned",
                    {"returned_at": "2026-11-21T00:00:00Z"},
                    id="e2e-8",
                    visor_ref=REF,
                    occurred_at="2026-11-21T00:00:00Z",
                ),
            ],
        )
        assert resp.status == 202
        resolved = await (await signed_get(client, "/api/v1/alerts", params={"state": "resolved"})).json()
        assert sorted(a["kind"] for a in resolved["alerts"]) == [
            "action.due_soon",
            "notification.due_soon",
            "notification.missed",
            "recall.issued",
            "recall.unlawfully_at_large",
        ]
