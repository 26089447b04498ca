"""GET /api/v1/alerts and /api/v1/alerts/{id} on SQLite and PostgreSQL: signed, filtered,
newest first, paginated, 404 for an unknown id, 400 for bad query values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from casewatch.store.models import Alert
from casewatch.wiring import Service
from tests.support import SECRET, T0, iso, service_client, signed_get

PATH = "/api/v1/alerts"

# (id, kind, severity, visor_ref, team, state, minutes after T0)
ROWS = [
    ("A-AAAAA2", "travel.unnotified", "high", "VS-0000001", "north", "open", 0),
    ("A-AAAAA3", "notification.missed", "high", "VS-0000002", "north", "acknowledged", 10),
    ("A-AAAAA4", "recall.issued", "critical", "VS-0000001", "south", "resolved", 20),
    ("A-AAAAA5", "travel.unnotified", "high", "VS-0000003", "south", "open", 30),
    ("A-AAAAA6", "action.overdue", "medium", "VS-0000002", "north", "open", 30),
    # A team id that ingest and the configuration accept (any identifier) can be queried too.
    ("A-AAAAA7", "action.overdue", "medium", "VS-0000004", "Nord Est \u00e9quipe", "open", 1),
]
NEWEST_FIRST = ["A-AAAAA6", "A-AAAAA5", "A-AAAAA4", "A-AAAAA3", "A-AAAAA7", "A-AAAAA2"]


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[tuple[Service, TestClient[Any, Any]]]:
    async with service_client(db_url) as (service, client):
        async with service.sessions() as session, session.begin():
            for alert_id, kind, severity, ref, team, state, minutes in ROWS:
                opened = T0 + timedelta(minutes=minutes)
                session.add(
                    Alert(
                        id=alert_id,
                        kind=kind,
                        severity=severity,
                        visor_ref=ref,
                        team=team,
                        subject="s",
                        live_key=None if state == "resolved" else f"{kind}|{ref}|s",
                        state=state,
                        summary=f"{kind}: {ref}",
                        details={},
                        owner="PC1234",
                        due_at=None,
                        opened_at=opened,
                        acknowledged_by="PC1234" if state == "acknowledged" else None,
                        acknowledged_at=opened + timedelta(minutes=1) if state == "acknowledged" else None,
                        resolved_at=opened + timedelta(minutes=2) if state == "resolved" else None,
                        escalation_chain=[],
                        escalation_step=0,
                        version=1,
                    )
                )
        yield service, client


async def ids(client: TestClient[Any, Any], **params: str) -> list[str]:
    resp = await signed_get(client, PATH, params=params)
    assert resp.status == 200, await resp.text()
    return [a["id"] for a in (await resp.json())["alerts"]]


async def test_lists_newest_first_in_the_contract_shape(api: tuple[Service, TestClient[Any, Any]]) -> None:
    resp = await signed_get(api[1], PATH)
    assert resp.status == 200
    body = await resp.json()
    assert [a["id"] for a in body["alerts"]] == NEWEST_FIRST
    assert body["next_cursor"] is None
    acked = next(a for a in body["alerts"] if a["id"] == "A-AAAAA3")
    assert {
        k: acked[k]
        for k in (
            "id",
            "kind",
            "severity",
            "visor_ref",
            "team",
            "state",
            "opened_at",
            "acknowledged_by",
            "acknowledged_at",
            "resolved_at",
            "summary",
        )
    } == {
        "id": "A-AAAAA3",
        "kind": "notification.missed",
        "severity": "high",
        "visor_ref": "VS-0000002",
        "team": "north",
        "state": "acknowledged",
        "opened_at": iso(T0 + timedelta(minutes=10)),
        "acknowledged_by": "PC1234",
        "acknowledged_at": iso(T0 + timedelta(minutes=11)),
        "resolved_at": None,
        "summary": "notification.missed: VS-0000002",
    }


FILTER_CASES: list[tuple[dict[str, str], list[str]]] = [
    ({"state": "open"}, ["A-AAAAA6", "A-AAAAA5", "A-AAAAA7", "A-AAAAA2"]),
    ({"state": "resolved"}, ["A-AAAAA4"]),
    ({"kind": "travel.unnotified"}, ["A-AAAAA5", "A-AAAAA2"]),
    ({"visor_ref": "VS-0000001"}, ["A-AAAAA4", "A-AAAAA2"]),
    ({"team": "south"}, ["A-AAAAA5", "A-AAAAA4"]),
    ({"team": "north", "state": "open", "kind": "action.overdue"}, ["A-AAAAA6"]),
    ({"team": "east"}, []),
    ({"team": "Nord Est \u00e9quipe"}, ["A-AAAAA7"]),
]


async def test_filters(api: tuple[Service, TestClient[Any, Any]]) -> None:
    for params, expected in FILTER_CASES:
        assert await ids(api[1], **params) == expected, params


async def test_pages_with_a_cursor(api: tuple[Service, TestClient[Any, Any]]) -> None:
    client = api[1]
    seen: list[str] = []
    params = {"limit": "2"}
    for _ in range(5):
        body = await (await signed_get(client, PATH, params=params)).json()
        seen += [a["id"] for a in body["alerts"]]
        if body["next_cursor"] is None:
            break
        params = {"limit": "2", "cursor": body["next_cursor"]}
    assert seen == NEWEST_FIRST


BAD_QUERIES: list[tuple[str, str]] = [
    ("state=closed", "state"),
    ("kind=Travel%20Unnotified", "kind"),
    ("visor_ref=VS%200001", "visor_ref"),
    ("team=" + "x" * 65, "team"),
    ("team=north%20", "team"),
    ("team=nor%E2%80%AEth", "team"),
    ("limit=0", "limit"),
    ("limit=501", "limit"),
    ("limit=ten", "limit"),
    ("cursor=not-a-cursor", "cursor"),
    ("state=open&state=resolved", "state"),
    ("colour=red", "colour"),
]


async def test_bad_query_values_are_400(api: tuple[Service, TestClient[Any, Any]]) -> None:
    for query, field in BAD_QUERIES:
        resp = await signed_get(api[1], f"{PATH}?{query}")
        assert resp.status == 400, query
        [error] = (await resp.json())["errors"]
        assert error["field"] == field and error["message"], query


async def test_one_alert_by_id(api: tuple[Service, TestClient[Any, Any]]) -> None:
    client = api[1]
    resp = await signed_get(client, f"{PATH}/A-AAAAA4")
    assert resp.status == 200
    body = await resp.json()
    assert (body["id"], body["state"], body["resolved_at"]) == (
        "A-AAAAA4",
        "resolved",
        iso(T0 + timedelta(minutes=22)),
    )
    typed = await signed_get(client, f"{PATH}/a-aaaaa4")  # as a person might type it
    assert (await typed.json())["id"] == "A-AAAAA4"


async def test_unknown_alert_is_404_json(api: tuple[Service, TestClient[Any, Any]]) -> None:
    for alert_id in ["A-ZZZZZZ", "nothing", "%2E%2E", "A-" + "9" * 40]:
        resp = await signed_get(api[1], f"{PATH}/{alert_id}")
        assert resp.status == 404, alert_id
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"] == "not_found"


async def test_reads_are_signed(api: tuple[Service, TestClient[Any, Any]]) -> None:
    client = api[1]
    for path in (PATH, f"{PATH}/A-AAAAA2"):
        await _signed_only(client, path)


async def _signed_only(client: TestClient[Any, Any], path: str) -> None:
    assert (await client.get(path)).status == 401
    assert (await signed_get(client, path, secret="forged")).status == 401
    stale = int(T0.timestamp()) - 301
    assert (await signed_get(client, path, ts=stale)).status == 401
    assert (await signed_get(client, path, secret=SECRET)).status == 200
