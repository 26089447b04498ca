"""Issue 14, slice 3: travel as trips and travel notice, end to end on SQLite and PostgreSQL:
signed events in through the real HTTP app, the alerts API showing exactly the expected alerts.
Plus the 0006 migration (departure_at, trip_id, travel_cancellations).

- SOA 2003 s.86: a trip is amended by a later notification with its trip_id and cancelled by
  travel.cancelled; a border check matches one leg of one trip; a 2024 trip with no return date
  does not confirm a 2026 return;
- SI 2004/1220 as amended by SI 2012/1876: notice at least 7 days before departure (else medium,
  check the reason), at least 12 hours (else high, a possible breach).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.clock import FixedClock
from casewatch.store.migrate import current_revision, head_revision, upgrade
from tests.support import downgrade_to, envelope, service_client, signed_get, signed_post
from tests.test_triggers_case_data import utc

AMENDED = "VS-0000080"  # s.86: trip T-1 moved from 1 Dec to 5 Dec
LATE = "VS-0000081"  # 4 days' notice: medium
BREACH = "VS-0000082"  # 8 hours' notice: high
CANCELLED = "VS-0000083"  # trip C-1 cancelled, travelled anyway
OLD = "VS-0000084"  # a 2024 trip with no return date, back in 2026


def _upsert(ref: str) -> dict[str, Any]:
    return envelope(
        "nominal.upsert", id=f"tt-{ref}", visor_ref=ref, occurred_at="2026-01-01T00:00:00Z",
        last_notification_on="2026-06-01",
    )


def _travel(ref: str, event_id: str, notified_at: str, **data: Any) -> dict[str, Any]:
    return envelope(
        "travel.notified", {"destination": "FR", "notified_at": notified_at, **data},
        id=event_id, visor_ref=ref, occurred_at=notified_at,
    )


def _check(ref: str, event_id: str, direction: str, at: str) -> dict[str, Any]:
    return envelope(
        "travel.border_alert", {"port": "Dover", "direction": direction, "checked_at": at},
        id=event_id, visor_ref=ref, occurred_at=at,
    )


def _notifications() -> list[dict[str, Any]]:
    return [
        *(_upsert(ref) for ref in (AMENDED, LATE, BREACH, CANCELLED, OLD)),
        _travel(AMENDED, "tt-1", "2026-11-10T09:00:00Z", departure_on="2026-12-01",
                return_on="2026-12-08", trip_id="T-1"),
        _travel(AMENDED, "tt-2", "2026-11-20T09:00:00Z", departure_on="2026-12-05",
                return_on="2026-12-12", trip_id="T-1"),
        _travel(LATE, "tl-1", "2026-11-16T09:00:00Z", departure_on="2026-11-20",
                departure_at="2026-11-20T09:00:00Z"),
        _travel(BREACH, "tb-1", "2026-11-20T01:00:00Z", departure_on="2026-11-20",
                departure_at="2026-11-20T09:00:00Z"),
        _travel(CANCELLED, "tc-1", "2026-11-10T09:00:00Z", departure_on="2026-12-01", trip_id="C-1"),
        _travel(OLD, "to-1", "2024-02-01T09:00:00Z", departure_on="2024-03-01"),
    ]


def _later() -> list[dict[str, Any]]:
    return [
        envelope("travel.cancelled", {"trip_id": "C-1"}, id="tc-2", visor_ref=CANCELLED,
                 occurred_at="2026-11-25T09:00:00Z"),
        _check(AMENDED, "tt-old", "outbound", "2026-12-01T06:00:00Z"),  # the old date
        _check(AMENDED, "tt-out", "outbound", "2026-12-05T06:00:00Z"),
        _check(AMENDED, "tt-in", "inbound", "2026-12-12T18:00:00Z"),
        _check(CANCELLED, "tc-check", "outbound", "2026-12-01T06:00:00Z"),
        _check(OLD, "to-check", "inbound", "2026-12-05T18:00:00Z"),
    ]


async def _alerts(client: Any, state: str) -> list[tuple[str, str, str, str]]:
    body = await (await signed_get(client, "/api/v1/alerts", params={"state": state})).json()
    return sorted((a["kind"], a["severity"], a["visor_ref"], a["subject"]) for a in body["alerts"])


async def test_trips_and_notice_end_to_end(db_url: str) -> None:
    clock = FixedClock(utc("2026-12-14T00:00:00Z"))
    async with service_client(db_url, clock=clock) as (_service, client):
        resp = await signed_post(client, "/api/v1/events", _notifications())
        assert resp.status == 202, await resp.text()
        resp = await signed_post(client, "/api/v1/events", _later())
        assert resp.status == 202, await resp.text()
        assert await _alerts(client, "open") == [
            # s.86: the amended trip: the old departure date matches nothing, the new dates do
            ("travel.confirmed", "low", AMENDED, "tt-in"),
            ("travel.confirmed", "low", AMENDED, "tt-out"),
            # SI 2004/1220 as amended: 8 hours' notice notice: under 12 hours, a possible breach
            ("travel.late_notice", "high", BREACH, "tb-1"),
            # 4 days' notice: check the reason
            ("travel.late_notice", "medium", LATE, "tl-1"),
            ("travel.record_fta", "high", AMENDED, "tt-old"),
            ("travel.record_fta", "high", CANCELLED, "tc-check"),  # a cancelled trip matches nothing
            ("travel.record_fta", "high", OLD, "to-check"),  # a 2024 trip confirms no 2026 return
            ("travel.unnotified", "high", AMENDED, "tt-old"),
            ("travel.unnotified", "high", CANCELLED, "tc-check"),
            ("travel.unnotified", "high", OLD, "to-check"),
        ]


async def test_migration_0006_adds_trips_and_is_reversible(engine: AsyncEngine) -> None:
    def columns(conn: Connection) -> set[str]:
        return {c["name"] for c in inspect(conn).get_columns("travel_notifications")}

    def tables(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names())

    added = {"departure_at", "trip_id"}
    assert await current_revision(engine) == head_revision()
    async with engine.begin() as conn:
        assert added <= await conn.run_sync(columns)
        assert "travel_cancellations" in await conn.run_sync(tables)
        await conn.run_sync(downgrade_to, str(engine.url), "0005")
    assert await current_revision(engine) == "0005"
    async with engine.connect() as conn:
        assert not added & await conn.run_sync(columns)
        assert "travel_cancellations" not in await conn.run_sync(tables)
    await upgrade(engine, "0006")
    async with engine.connect() as conn:
        assert added <= await conn.run_sync(columns)
        assert "travel_cancellations" in await conn.run_sync(tables)
