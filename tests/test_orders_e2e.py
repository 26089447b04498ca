"""Court orders end to end on SQLite and PostgreSQL (issue 15): signed `order.upsert` events in
through the real HTTP app, the scan as of chosen instants (`run_scan(at=...)`, what `casewatch
scan --at` runs), the alerts API and the outbox.

- `order.expiring` (medium) opens on a scan once an active order's expiry date is within
  `order_expiry_notice_days` [56] (local choice; SOA 2003 s.103C(2), s.103E, s.122B(2), s.122D),
  to the offender manager and the SPOC, with nothing of the order's prohibitions;
- a discharge or a renewal (`order.upsert`) resolves it at once (the event), and the scan opens
  nothing for the renewed date until that is near in its turn;
- an order with no expiry date, or recorded discharged, never opens one;
- the alert resolves on the first scan after the expiry day is over (local time).

All references, order ids and prohibitions are fictional.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from casewatch.clock import FixedClock
from casewatch.store.models import Alert, Delivery
from casewatch.triggers.scan import run_scan
from casewatch.wiring import Service
from tests.support import envelope, nominal_data, service_client, signed_get, signed_post
from tests.test_triggers_case_data import utc

REF = "VIS-TEST-0201"  # north, offender manager PC1234
UNKNOWN = "VIS-TEST-0299"  # an order heard of before the nominal
PROHIBITION = "Not to enter Testpark playground (fictional)"


def _order(ref: str, order_id: str, n: int, occurred: str, **data: Any) -> dict[str, Any]:
    body = {
        "order_id": order_id, "kind": "shpo", "made_on": "2021-06-01", "expires_on": None,
        "prohibitions": [PROHIBITION], "status": "active", **data,
    }
    return envelope("order.upsert", body, id=f"ord-{ref}-{order_id}-{n}", visor_ref=ref, occurred_at=occurred)


def _case_data() -> list[dict[str, Any]]:
    at = "2026-11-01T09:00:00Z"
    return [
        envelope("nominal.upsert", nominal_data(), id=f"ord-upsert-{REF}", visor_ref=REF, occurred_at=at),
        _order(REF, "ORD-A", 1, at, expires_on="2027-01-10"),  # 51 days after 20 Nov
        _order(REF, "ORD-B", 1, at, kind="sro", expires_on="2027-03-01"),  # 101 days: not yet
        _order(REF, "ORD-C", 1, at),  # until further order
        _order(REF, "ORD-D", 1, at, expires_on="2026-12-01", status="discharged"),
        _order(REF, "ORD-E", 1, at, expires_on="2026-12-01"),
        _order(REF, "ORD-F", 1, at, kind="other", expires_on="2026-11-25"),
        _order(UNKNOWN, "ORD-U", 1, at, expires_on="2026-12-20"),
    ]


async def _alerts(client: Any, state: str) -> list[tuple[str, str, str, str, str | None]]:
    body = await (await signed_get(client, "/api/v1/alerts", params={"state": state})).json()
    return sorted(
        (a["visor_ref"], a["subject"], a["severity"], a["team"], a["owner"])
        for a in body["alerts"]
        if a["kind"] == "order.expiring"
    )


async def _resolved(service: Service) -> dict[str, str | None]:
    async with service.sessions() as session:
        rows = await session.execute(
            select(Alert.subject, Alert.resolved_reason).where(
                Alert.kind == "order.expiring", Alert.state == "resolved"
            )
        )
        return {subject: reason for subject, reason in rows}


async def _post(client: Any, events: list[dict[str, Any]]) -> None:
    resp = await signed_post(client, "/api/v1/events", events)
    assert resp.status == 202, await resp.text()


async def test_court_orders_expiring_end_to_end(db_url: str) -> None:
    clock = FixedClock(utc("2026-11-20T09:00:00Z"))
    async with service_client(db_url, clock=clock) as (service, client):
        await _post(client, _case_data())
        assert await _alerts(client, "open") == []  # the events alone open nothing

        await run_scan(service.sessions, service.ctx, utc("2026-11-20T10:00:00Z"))
        assert await _alerts(client, "open") == [
            (REF, "ORD-A:2027-01-10", "medium", "north", "PC1234"),
            (REF, "ORD-E:2026-12-01", "medium", "north", "PC1234"),
            (REF, "ORD-F:2026-11-25", "medium", "north", "PC1234"),
            # Not known yet: triggers.unmatched_team ("": routed to the first team), no owner.
            (UNKNOWN, "ORD-U:2026-12-20", "medium", "", None),
        ]
        # To the offender manager and the SPOC; no prohibition anywhere in what was sent.
        async with service.sessions() as session:
            sent = list((await session.execute(
                select(Delivery).join(Alert, Alert.id == Delivery.alert_id)
                .where(Alert.kind == "order.expiring", Alert.visor_ref == REF, Delivery.purpose == "opened")
            )).scalars())
        assert {d.receiver for d in sent} == {"officer:PC1234", "spoc:north"}
        assert all("Testpark" not in json.dumps(d.payload) for d in sent)

        # A re-run changes nothing.
        again = await run_scan(service.sessions, service.ctx, utc("2026-11-20T11:00:00Z"))
        assert not again.tally.opened and not again.tally.resolved

        # ORD-E discharged (SOA 2003 s.103E) and ORD-A renewed for five years: resolved by the
        # events themselves, before any scan.
        clock.set(utc("2026-11-21T09:00:00Z"))
        await _post(client, [
            _order(REF, "ORD-E", 2, "2026-11-21T08:00:00Z", expires_on="2026-12-01", status="discharged"),
            _order(REF, "ORD-A", 2, "2026-11-21T08:00:00Z", expires_on="2032-01-10"),
        ])
        assert await _alerts(client, "open") == [
            (REF, "ORD-F:2026-11-25", "medium", "north", "PC1234"),
            (UNKNOWN, "ORD-U:2026-12-20", "medium", "", None),
        ]
        assert await _resolved(service) == {
            "ORD-E:2026-12-01": "order discharged",
            "ORD-A:2027-01-10": "order renewed or varied: now expires 2032-01-10",
        }

        # 26 Nov 00:30 GMT: ORD-F's expiry day (25 Nov) is over; ORD-B (1 Mar) is 95 days off.
        await run_scan(service.sessions, service.ctx, utc("2026-11-26T00:30:00Z"))
        assert await _alerts(client, "open") == [(UNKNOWN, "ORD-U:2026-12-20", "medium", "", None)]
        assert (await _resolved(service))["ORD-F:2026-11-25"] == "expiry day passed"

        # 4 Jan 2027: ORD-B is 56 days off; the renewed ORD-A and ORD-C never.
        await run_scan(service.sessions, service.ctx, utc("2027-01-04T08:00:00Z"))
        open_now = await _alerts(client, "open")
        assert (REF, "ORD-B:2027-03-01", "medium", "north", "PC1234") in open_now
        assert not [a for a in open_now if a[1].startswith(("ORD-A", "ORD-C", "ORD-D", "ORD-E"))]
