"""Signature v2 (contract v2): method, path and query are signed, so a captured request cannot
be replayed for another alert, list or method; v1 (body only) stays for POST /api/v1/events.
Through the real aiohttp app on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select
from yarl import URL

from casewatch.api.auth import check, sign, sign_v2, signed_post_headers
from casewatch.store.models import Alert, Event
from casewatch.wiring import Service
from tests.support import (
    SECRET,
    T0,
    envelope,
    request_target,
    service_client,
    signed_get,
    signed_headers,
    signed_headers_v2,
    signed_post,
    signed_request,
)

ALERTS = "/api/v1/alerts"
EVENTS = "/api/v1/events"
NOW = int(T0.timestamp())


def _alert(alert_id: str, team: str) -> Alert:
    return Alert(
        id=alert_id, kind="recall.issued", severity="critical", visor_ref="VS-0000001", team=team,
        subject="s", live_key=f"recall.issued|VS-0000001|{alert_id}", state="open",
        summary="recall.issued: VS-0000001", details={}, owner="PC1234", due_at=None,
        opened_at=T0 - timedelta(minutes=5), acknowledged_by=None, acknowledged_at=None,
        resolved_at=None, escalation_chain=[], escalation_step=0, version=1,
    )


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[tuple[Service, TestClient[Any, Any]]]:
    async with service_client(db_url) as (service, client):
        async with service.sessions() as session, session.begin():
            session.add_all([_alert("A-AAAAA2", "north"), _alert("A-AAAAA3", "south")])
        yield service, client


async def _stored_events(service: Service) -> int:
    async with service.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(Event))).scalar_one())


def test_sign_v2_is_the_documented_construction() -> None:
    message = f"v2:{NOW}:GET:/api/v1/alerts?state=open:".encode()
    expected = hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()
    assert sign_v2(SECRET, NOW, "get", "/api/v1/alerts?state=open", b"") == f"v2={expected}"
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), f"v2:{NOW}:POST:/api/v1/events:".encode() + body,
                        hashlib.sha256).hexdigest()
    assert sign_v2(SECRET, str(NOW), "POST", EVENTS, body) == f"v2={expected}"


def test_a_senders_post_headers_verify_now() -> None:
    """signed_post_headers (the demo's, the bench's and a bridge's): JSON, stamped now, signed v2."""
    body = b'{"a":1}'
    headers = signed_post_headers(SECRET, EVENTS, body)
    assert headers["Content-Type"] == "application/json"
    problem = check(
        SECRET, headers["X-Casewatch-Timestamp"], headers["X-Casewatch-Signature"], body,
        now=datetime.now(UTC), max_skew_seconds=300, method="POST", target=EVENTS,
    )
    assert problem is None


@pytest.mark.parametrize(
    "stamp", ["\u00b2", "\u0661\u0662\u0663", "\uff11\uff12", f"{NOW}\n", f" {NOW}", "+1", "-1"]
)
def test_timestamp_is_ascii_digits_only(stamp: str) -> None:
    signature = sign_v2(SECRET, stamp, "GET", ALERTS, b"")
    problem = check(SECRET, stamp, signature, b"", now=T0, max_skew_seconds=300, method="GET", target=ALERTS)
    assert problem is not None and "unix seconds" in problem


async def test_a_captured_read_cannot_be_replayed_for_another_path_or_query(
    api: tuple[Service, TestClient[Any, Any]],
) -> None:
    client = api[1]
    captured = signed_headers_v2("GET", f"{ALERTS}?state=open", ts=NOW)
    assert (await client.get(URL(f"{ALERTS}?state=open", encoded=True), headers=captured)).status == 200
    for other in (ALERTS, f"{ALERTS}?state=resolved", f"{ALERTS}?state=open&team=south",
                  f"{ALERTS}/A-AAAAA2", f"{ALERTS}/A-AAAAA3", f"{ALERTS}?state=%6Fpen"):
        resp = await client.get(URL(other, encoded=True), headers=captured)
        assert resp.status == 401, other
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"] == "unauthorized"


async def test_one_alert_read_cannot_be_replayed_for_another_alert(
    api: tuple[Service, TestClient[Any, Any]],
) -> None:
    client = api[1]
    captured = signed_headers_v2("GET", f"{ALERTS}/A-AAAAA2", ts=NOW)
    ok = await client.get(f"{ALERTS}/A-AAAAA2", headers=captured)
    assert ok.status == 200 and (await ok.json())["id"] == "A-AAAAA2"
    assert (await client.get(f"{ALERTS}/A-AAAAA3", headers=captured)).status == 401


async def test_a_get_signed_v1_is_refused_saying_v2_is_required(
    api: tuple[Service, TestClient[Any, Any]],
) -> None:
    client = api[1]
    for path in (ALERTS, f"{ALERTS}/A-AAAAA2"):
        resp = await signed_get(client, path, scheme="v1")
        assert resp.status == 401, path
        assert "v2=" in (await resp.json())["message"]
    # The old replay, exactly: v1 over the empty body, which used to open every read.
    resp = await client.get(f"{ALERTS}/A-AAAAA3", headers=signed_headers(b"", SECRET, NOW))
    assert resp.status == 401


async def test_events_accept_v2_and_v1(api: tuple[Service, TestClient[Any, Any]]) -> None:
    service, client = api
    for scheme in ("v2", "v1"):
        resp = await signed_post(client, EVENTS, [envelope("visit.recorded")], scheme=scheme)
        assert resp.status == 202, (scheme, await resp.text())
        assert (await resp.json())["accepted"] == 1
    assert await _stored_events(service) == 2


async def test_a_v2_post_signed_for_another_path_or_method_is_refused(
    api: tuple[Service, TestClient[Any, Any]],
) -> None:
    service, client = api
    body = json.dumps([envelope("visit.recorded")]).encode()
    for method, target in (("POST", ALERTS), ("POST", f"{EVENTS}?x=1"), ("PUT", EVENTS), ("GET", EVENTS)):
        headers = {"Content-Type": "application/json", **signed_headers_v2(method, target, body, ts=NOW)}
        resp = await client.post(EVENTS, data=body, headers=headers)
        assert resp.status == 401, (method, target)
        assert (await resp.json())["message"] == "signature does not match"
    assert await _stored_events(service) == 0


async def test_the_target_is_signed_exactly_as_sent(api: tuple[Service, TestClient[Any, Any]]) -> None:
    client = api[1]
    sent = f"{ALERTS}?visor_ref=VS-0000001&team=nor%74h"
    decoded = f"{ALERTS}?visor_ref=VS-0000001&team=north"
    wrong = signed_headers_v2("GET", decoded, ts=NOW)
    assert (await client.get(URL(sent, encoded=True), headers=wrong)).status == 401
    right = signed_headers_v2("GET", sent, ts=NOW)
    resp = await client.get(URL(sent, encoded=True), headers=right)
    assert resp.status == 200
    assert [a["id"] for a in (await resp.json())["alerts"]] == ["A-AAAAA2"]


async def test_signed_request_signs_what_the_client_sends(api: tuple[Service, TestClient[Any, Any]]) -> None:
    client = api[1]
    params = {"visor_ref": "VS-0000001", "team": "south"}
    assert request_target(client, ALERTS, params) == f"{ALERTS}?visor_ref=VS-0000001&team=south"
    resp = await signed_request(client, "GET", ALERTS, params=params)
    assert resp.status == 200
    assert [a["id"] for a in (await resp.json())["alerts"]] == ["A-AAAAA3"]


@pytest.mark.parametrize("stamp", ["\u00b2", "\uff11\uff12\uff13"])
async def test_a_non_ascii_digit_timestamp_is_a_401_not_a_500(
    api: tuple[Service, TestClient[Any, Any]], stamp: str
) -> None:
    client = api[1]
    header = {"X-Casewatch-Timestamp": stamp, "X-Casewatch-Signature": sign(SECRET, NOW, b"")}
    for resp in (
        await client.get(ALERTS, headers=header),
        await client.post(EVENTS, data=b"[]", headers={"Content-Type": "application/json", **header}),
    ):
        assert resp.status == 401
        assert "unix seconds" in (await resp.json())["message"]
