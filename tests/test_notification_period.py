"""Issue 14, slice 2: who owes notifications, from when and until when, end to end on SQLite and
PostgreSQL: signed events in through the real HTTP app, the scan, and the alerts API showing
exactly the expected alerts. Plus the 0005 migration (relevant_date, notification_ends_on).

- SOA 2003 s.83(1): the initial notification is due within the 3 days beginning with the
  relevant date (s.82(6): the conviction, finding or caution), release or not;
- s.83(6): time detained is disregarded, so detained on the relevant date: from the release;
- s.82(1): after the end of the notification period nothing fires, and the open ones resolve;
- s.80(2), s.86: a nominal not registered (or past the period) owes no travel notice: a border
  check with no notification is no breach.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.clock import FixedClock
from casewatch.store.migrate import current_revision, head_revision, upgrade
from casewatch.triggers.scan import run_scan
from tests.support import downgrade_to, envelope, service_client, signed_get, signed_post
from tests.test_triggers_case_data import utc

CAUTION = "VS-0000070"  # s.83(1): cautioned 13 Nov, no release
DETAINED = "VS-0000071"  # s.83(6): convicted 2 Nov, detained, released 20 Nov
ENDED = "VS-0000072"  # s.82(1): the period ended 15 Nov, a periodic notification missed before
UNREGISTERED = "VS-0000073"  # s.80(2): not a relevant offender
ENDED_TRAVELS = "VS-0000074"  # s.82(1), s.86: travels after the period ended
TRAVELS = "VS-0000075"  # control: registered, travels with no notice
NOTIFIED = "VS-0000076"  # s.83(1): cautioned 13 Nov, notified 14 Nov: owes nothing


def _upsert(ref: str, **data: Any) -> dict[str, Any]:
    return envelope(
        "nominal.upsert", id=f"np-{ref}", visor_ref=ref, occurred_at="2026-11-01T00:00:00Z", **data
    )


def _nominals() -> list[dict[str, Any]]:
    return [
        _upsert(CAUTION, last_notification_on=None, relevant_date="2026-11-13"),
        _upsert(DETAINED, last_notification_on=None, relevant_date="2026-11-02", release_date="2026-11-20"),
        _upsert(
            ENDED, last_notification_on="2025-11-10", relevant_date="2021-11-16",
            notification_ends_on="2026-11-15",
        ),
        _upsert(UNREGISTERED, registered=False, last_notification_on=None),
        _upsert(ENDED_TRAVELS, last_notification_on="2026-06-01", notification_ends_on="2026-11-15"),
        _upsert(TRAVELS, last_notification_on="2026-06-01"),
        _upsert(NOTIFIED, last_notification_on=None, relevant_date="2026-11-13"),
        envelope(
            "notification.received", {"kind": "initial", "notified_on": "2026-11-14"},
            id="np-notified", visor_ref=NOTIFIED, occurred_at="2026-11-14T10:00:00Z",
        ),
    ]


def _checks() -> list[dict[str, Any]]:
    return [
        envelope(
            "travel.border_alert",
            {"port": "Dover", "direction": "outbound", "checked_at": "2026-11-18T08:00:00Z"},
            id=f"np-check-{ref}", visor_ref=ref, occurred_at="2026-11-18T08:00:00Z",
        )
        for ref in (UNREGISTERED, ENDED_TRAVELS, TRAVELS)
    ]


async def _alerts(client: Any, state: str) -> list[tuple[str, str, str]]:
    body = await (await signed_get(client, "/api/v1/alerts", params={"state": state})).json()
    # The notification and travel clocks (issue 14); visits (issue 15) have their own tests.
    alerts = [a for a in body["alerts"] if not a["kind"].startswith("visit.")]
    return sorted((a["kind"], a["visor_ref"], a["subject"]) for a in alerts)


async def test_who_owes_from_when_and_until_when_end_to_end(db_url: str) -> None:
    clock = FixedClock(utc("2026-11-14T12:00:00Z"))
    async with service_client(db_url, clock=clock) as (service, client):
        resp = await signed_post(client, "/api/v1/events", _nominals())
        assert resp.status == 202
        assert (await resp.json())["accepted"] == 8

        await run_scan(service.sessions, service.ctx)
        assert await _alerts(client, "open") == [
            # s.83(1): 13-15 Nov, a reminder within the lead
            ("notification.due_soon", CAUTION, "initial:2026-11-15"),
            # s.83(6): not 2-4 Nov (detained): 20-22 Nov, a reminder only
            ("notification.due_soon", DETAINED, "initial:2026-11-22"),
            # s.85(1): a year after 10 Nov 2025, missed while still subject (period ends 15 Nov)
            ("notification.missed", ENDED, "periodic:2026-11-10"),
        ]

        clock.set(utc("2026-11-19T00:00:00Z"))  # the period of ENDED is over; 15 Nov is past
        resp = await signed_post(client, "/api/v1/events", _checks())
        assert resp.status == 202
        await run_scan(service.sessions, service.ctx)
        assert await _alerts(client, "open") == [
            ("notification.due_soon", DETAINED, "initial:2026-11-22"),
            ("notification.missed", CAUTION, "initial:2026-11-15"),
            # the control: a relevant offender's unnotified travel (s.86)
            ("travel.record_fta", TRAVELS, f"np-check-{TRAVELS}"),
            ("travel.unnotified", TRAVELS, f"np-check-{TRAVELS}"),
        ]
        assert await _alerts(client, "resolved") == [
            ("notification.due_soon", CAUTION, "initial:2026-11-15"),  # became missed
            ("notification.missed", ENDED, "periodic:2026-11-10"),  # s.82(1): requirements ended
        ]
        assert not (await run_scan(service.sessions, service.ctx)).tally.opened


async def test_migration_0005_adds_the_period_and_is_reversible(engine: AsyncEngine) -> None:
    def columns(conn: Connection) -> set[str]:
        return {c["name"] for c in inspect(conn).get_columns("nominals")}

    def indexes(conn: Connection) -> set[str]:
        # By name from the catalogue: reflection skips (and warns about) expression indexes.
        if conn.dialect.name == "sqlite":
            sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'nominals'"
        else:
            sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'nominals'"
        return set(conn.execute(text(sql)).scalars())

    added = {"relevant_date", "notification_ends_on"}
    assert await current_revision(engine) == head_revision()
    async with engine.begin() as conn:
        assert added <= await conn.run_sync(columns)
        before = await conn.run_sync(indexes)
        await conn.run_sync(downgrade_to, str(engine.url), "0004")
    assert await current_revision(engine) == "0004"
    async with engine.connect() as conn:
        assert not added & await conn.run_sync(columns)
    await upgrade(engine, "0005")
    async with engine.connect() as conn:
        assert added <= await conn.run_sync(columns)
    await upgrade(engine)
    async with engine.connect() as conn:
        assert await conn.run_sync(indexes) == before  # no index lost on the way back to head
    assert "ix_nominals_visor_ref_compact" in before
