"""POST /api/v1/events through the real aiohttp app, on SQLite and PostgreSQL: signatures,
size and type limits, validation, all-or-nothing batches, idempotency, and never a 500."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from casewatch.api.auth import check, sign
from casewatch.clock import FixedClock
from casewatch.store.models import Alert, Event, Nominal, Visit
from casewatch.wiring import Service, stop
from tests.support import (
    SAMPLE_DATA,
    SECRET,
    T0,
    client_for,
    envelope,
    make_service,
    service_client,
    signed_headers,
    signed_post,
)

PATH = "/api/v1/events"
NOW = int(T0.timestamp())


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[tuple[Service, TestClient[Any, Any]]]:
    async with service_client(db_url) as pair:
        yield pair


@pytest.fixture
async def sqlite_api(sqlite_url: str) -> AsyncIterator[tuple[Service, TestClient[Any, Any]]]:
    """For checks of the HTTP layer that happen before the database is involved."""
    async with service_client(sqlite_url) as pair:
        yield pair


async def stored(service: Service, model: Any = Event) -> int:
    async with service.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def is_json_error(resp: ClientResponse, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert isinstance(body, dict)
    return body


# --- signing --------------------------------------------------------------------------------------


def test_sign_and_verify_round_trip() -> None:
    signature = sign(SECRET, NOW, b'{"a":1}')
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    post = {"max_skew_seconds": 300, "method": "POST", "target": "/api/v1/events", "allow_v1": True}
    assert check(SECRET, str(NOW), signature, b'{"a":1}', now=T0, **post) is None
    assert check(SECRET, str(NOW), signature, b'{"a":2}', now=T0, **post) is not None
    assert check("other", str(NOW), signature, b'{"a":1}', now=T0, **post) is not None
    assert check(SECRET, str(NOW), signature, b'{"a":1}', now=T0 + timedelta(seconds=301), **post) is not None
    # The documented construction, computed independently.
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"v1:{NOW}:".encode() + b"{}", hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, b"{}") == f"v1={expected}"


async def test_signed_request_is_accepted(api: tuple[Service, TestClient[Any, Any]]) -> None:
    service, client = api
    raw = envelope("visit.recorded")
    resp = await signed_post(client, PATH, raw)
    assert resp.status == 202
    assert await resp.json() == {"accepted": 1, "duplicates": 0, "alerts": []}
    async with service.sessions() as session:
        event = await session.get(Event, raw["id"])
    assert event is not None and event.source == "api" and event.data == raw


@pytest.mark.parametrize("skew", [-300, 300])
async def test_timestamp_at_the_edge_of_the_window_is_accepted(
    sqlite_api: tuple[Service, TestClient[Any, Any]], skew: int
) -> None:
    resp = await signed_post(sqlite_api[1], PATH, envelope("visit.recorded"), ts=NOW + skew)
    assert resp.status == 202


def _bad_auth_cases() -> list[tuple[str, dict[str, str], str]]:
    body = json.dumps(envelope("visit.recorded", id="auth-case")).encode()
    good = signed_headers(body, SECRET, NOW)
    return [
        ("forged", signed_headers(body, "not-the-secret", NOW), "does not match"),
        ("tampered", signed_headers(body + b" ", SECRET, NOW), "does not match"),
        ("stale", signed_headers(body, SECRET, NOW - 301), "300 s"),
        ("future", signed_headers(body, SECRET, NOW + 301), "300 s"),
        ("no signature", {"X-Casewatch-Timestamp": str(NOW)}, "missing"),
        ("no timestamp", {"X-Casewatch-Signature": good["X-Casewatch-Signature"]}, "missing"),
        ("nothing", {}, "missing"),
        (
            "v1 digest under the v2 label",
            {**good, "X-Casewatch-Signature": good["X-Casewatch-Signature"].replace("v1=", "v2=")},
            "does not match",
        ),
        (
            "unknown scheme",
            {**good, "X-Casewatch-Signature": good["X-Casewatch-Signature"].replace("v1=", "v3=")},
            "v2= or v1= scheme",
        ),
        ("bare hex", {**good, "X-Casewatch-Signature": good["X-Casewatch-Signature"][3:]},
         "v2= or v1= scheme"),
        (
            "upper-case hex",
            {**good, "X-Casewatch-Signature": "v1=" + good["X-Casewatch-Signature"][3:].upper()},
            "does not match",
        ),
        ("timestamp not a number", {**good, "X-Casewatch-Timestamp": "yesterday"}, "unix seconds"),
        ("timestamp in ms", signed_headers(body, SECRET, NOW * 1000), "unix seconds"),
    ]


@pytest.mark.parametrize(
    ("case", "headers", "words"), _bad_auth_cases(), ids=[c[0] for c in _bad_auth_cases()]
)
async def test_bad_signatures_get_401_and_store_nothing(
    sqlite_api: tuple[Service, TestClient[Any, Any]], case: str, headers: dict[str, str], words: str
) -> None:
    service, client = sqlite_api
    body = json.dumps(envelope("visit.recorded", id="auth-case")).encode()
    resp = await client.post(PATH, data=body, headers={"Content-Type": "application/json", **headers})
    reply = await is_json_error(resp, 401)
    assert words in reply["message"]
    assert await stored(service) == 0


async def test_empty_secret_refuses_everything(db_url: str) -> None:
    async with service_client(db_url, ingest={"secret": ""}) as (service, client):
        resp = await signed_post(client, PATH, envelope("visit.recorded"), secret="")
        reply = await is_json_error(resp, 401)
        assert "no ingest secret" in reply["message"]
        assert await stored(service) == 0


async def test_window_follows_the_injected_clock(db_url: str) -> None:
    clock = FixedClock(T0)
    async with service_client(db_url, clock=clock) as (_, client):
        clock.advance(timedelta(seconds=400))
        assert (await signed_post(client, PATH, envelope("visit.recorded"), ts=NOW)).status == 401
        assert (await signed_post(client, PATH, envelope("visit.recorded"), ts=NOW + 400)).status == 202


# --- size, type, JSON -----------------------------------------------------------------------------


def padded_batch(size: int) -> bytes:
    """A valid-looking batch of at least `size` bytes."""
    one = envelope("action.upsert", summary="x" * 1900)
    count = size // (len(json.dumps(one)) - 20) + 1
    body = json.dumps([{**one, "id": f"big-{i}"} for i in range(count)]).encode()
    assert size <= len(body) < 2 * size
    return body


async def test_body_over_1_mib_is_413(api: tuple[Service, TestClient[Any, Any]]) -> None:
    service, client = api
    body = padded_batch(1024 * 1024 + 1)
    reply = await is_json_error(await signed_post(client, PATH, body), 413)
    assert "1 MiB" in reply["message"]
    assert await stored(service) == 0


async def test_body_over_1_mib_without_content_length_is_413(
    sqlite_api: tuple[Service, TestClient[Any, Any]],
) -> None:
    service, client = sqlite_api
    body = padded_batch(1024 * 1024 + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    headers = {"Content-Type": "application/json", **signed_headers(body, SECRET, NOW)}
    resp = await client.post(PATH, data=chunks(), headers=headers)
    await is_json_error(resp, 413)
    assert await stored(service) == 0


async def test_body_of_exactly_1_mib_is_read(sqlite_api: tuple[Service, TestClient[Any, Any]]) -> None:
    body = json.dumps(envelope("visit.recorded")).encode()
    body = body + b" " * (1024 * 1024 - len(body))
    assert len(body) == 1024 * 1024
    assert (await signed_post(sqlite_api[1], PATH, body)).status == 202


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
        "application/jsonl",
    ],
)
async def test_not_json_is_415(sqlite_api: tuple[Service, TestClient[Any, Any]], content_type: str) -> None:
    service, client = sqlite_api
    resp = await signed_post(client, PATH, envelope("visit.recorded"), headers={"Content-Type": content_type})
    await is_json_error(resp, 415)
    assert await stored(service) == 0


async def test_charset_utf8_is_fine(sqlite_api: tuple[Service, TestClient[Any, Any]]) -> None:
    resp = await signed_post(
        sqlite_api[1],
        PATH,
        envelope("visit.recorded"),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert resp.status == 202


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"id": "a", "id": "b"}', "duplicate key"),
        (b'{"x": NaN}', "NaN"),
        (b'\xff\xfe{"x": 1}', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"n": ' + b"9" * 5000 + b"}", "out of range"),
        (b'"just a string"', "object"),
        (b"[]", "at least one"),
    ],
    ids=[
        "malformed",
        "empty",
        "duplicate-key",
        "nan",
        "not-utf8",
        "deep",
        "huge-int",
        "string",
        "empty-batch",
    ],
)
async def test_invalid_json_is_400(
    sqlite_api: tuple[Service, TestClient[Any, Any]], body: bytes, words: str
) -> None:
    service, client = sqlite_api
    reply = await is_json_error(await signed_post(client, PATH, body), 400)
    [error] = reply["errors"]
    assert (error["index"], error["field"]) == (0, "")
    assert words in error["message"]
    assert await stored(service) == 0


# --- validation and batches -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (
            {
                **envelope("action.upsert"),
                "data": {k: v for k, v in SAMPLE_DATA["action.upsert"].items() if k != "due_on"},
            },
            "data.due_on",
        ),
        (envelope("nominal.upsert", registered="yes"), "data.registered"),
        (envelope("action.upsert", status="closed"), "data.status"),
        (envelope("visit.recorded", visited_on="2026-02-30"), "data.visited_on"),
        ({**envelope("visit.recorded"), "occurred_at": "2026-11-20T09:30:00"}, "occurred_at"),
        ({**envelope("visit.recorded"), "id": "x" * 201}, "id"),
        ({**envelope("visit.recorded"), "type": "visit.cancelled"}, "type"),
    ],
    ids=["missing", "wrong-type", "bad-enum", "bad-date", "naive-datetime", "too-long", "unknown-type"],
)
async def test_validation_error_names_index_and_field(
    api: tuple[Service, TestClient[Any, Any]], event: dict[str, Any], field: str
) -> None:
    service, client = api
    batch = [envelope("visit.recorded"), envelope("nominal.upsert"), event]
    reply = await is_json_error(await signed_post(client, PATH, batch), 400)
    assert [(e["index"], e["field"]) for e in reply["errors"]] == [(2, field)]
    assert all(isinstance(e["message"], str) and e["message"] for e in reply["errors"])
    assert await stored(service) == 0
    assert await stored(service, Nominal) == 0
    assert await stored(service, Visit) == 0


async def test_every_event_type_accepted_over_http(api: tuple[Service, TestClient[Any, Any]]) -> None:
    service, client = api
    resp = await signed_post(client, PATH, [envelope(t) for t in SAMPLE_DATA])
    assert resp.status == 202
    assert (await resp.json())["accepted"] == len(SAMPLE_DATA)
    assert await stored(service) == len(SAMPLE_DATA)


async def test_duplicates_counted_and_harmless(api: tuple[Service, TestClient[Any, Any]]) -> None:
    service, client = api
    visit = envelope("visit.recorded")
    other = envelope("visit.recorded")
    first = await signed_post(client, PATH, [visit, visit])
    assert await first.json() == {"accepted": 1, "duplicates": 1, "alerts": []}
    second = await signed_post(client, PATH, [other, visit])
    assert await second.json() == {"accepted": 1, "duplicates": 1, "alerts": []}
    assert await stored(service, Visit) == 2


async def test_202_lists_the_alerts_the_events_opened(api: tuple[Service, TestClient[Any, Any]]) -> None:
    """A border check for a ViSOR reference nobody knows is never dropped (contract)."""
    service, client = api
    border = envelope("travel.border_alert", visor_ref="VS-UNKNOWN9")
    resp = await signed_post(client, PATH, [border])
    assert resp.status == 202
    alert_ids = (await resp.json())["alerts"]
    assert alert_ids
    async with service.sessions() as session:
        alerts = (await session.execute(select(Alert).where(Alert.id.in_(alert_ids)))).scalars().all()
    assert {a.id for a in alerts} == set(alert_ids)
    assert all(a.visor_ref == "VS-UNKNOWN9" for a in alerts)
    again = await signed_post(client, PATH, [border])
    assert await again.json() == {"accepted": 0, "duplicates": 1, "alerts": []}


@pytest.mark.postgres
async def test_concurrent_posts_of_the_same_batch_accept_it_once(pg_url: str) -> None:
    async with service_client(pg_url) as (service, client):
        batch = [envelope("nominal.upsert", visor_ref=f"VS-P{i:04d}") for i in range(30)]
        batch += [envelope("travel.border_alert", visor_ref=f"VS-P{i:04d}") for i in range(30)]
        body = json.dumps(batch).encode()
        replies = await asyncio.gather(*(signed_post(client, PATH, body) for _ in range(5)))
        assert [r.status for r in replies] == [202] * 5
        results = [await r.json() for r in replies]
        assert sorted(r["accepted"] for r in results) == [0, 0, 0, 0, 60]
        assert sorted(r["duplicates"] for r in results) == [0, 60, 60, 60, 60]
        assert sum(len(r["alerts"]) for r in results) == len(
            next(r for r in results if r["accepted"])["alerts"]
        )
        assert await stored(service) == 60


# --- nothing bad reaches a 500 --------------------------------------------------------------------


NASTY: list[Any] = [
    None,
    0,
    -1,
    1e308,
    True,
    "",
    "x" * 1000,
    [],
    [None],
    [[]],
    [{}],
    {},
    {"data": None},
    {"id": None, "type": None, "occurred_at": None, "visor_ref": None, "data": None},
    {**envelope("visit.recorded"), "data": {"visited_on": {"$gt": ""}}},
    {**envelope("nominal.upsert"), "data": {"markers": [[1, 2]], "aliases": {"a": 1}}},
    {**envelope("visit.recorded"), "occurred_at": "2026-11-20T09:30:00+99:99"},
    {**envelope("visit.recorded"), "occurred_at": "0001-01-01T00:00:00+01:00"},
    {**envelope("visit.recorded"), "visor_ref": "VS-\u0000"},
    {**envelope("visit.recorded"), "id": "\ud800"},
]


async def test_nasty_bodies_get_4xx_never_500(api: tuple[Service, TestClient[Any, Any]]) -> None:
    service, client = api
    for body in NASTY:
        resp = await signed_post(client, PATH, body)
        assert resp.status == 400, (body, await resp.text())
        assert "errors" in await resp.json()
    assert await stored(service) == 0


async def test_unexpected_error_is_a_logged_500_without_personal_data(
    sqlite_api: tuple[Service, TestClient[Any, Any]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Testperson born 1980-02-29")

    monkeypatch.setattr("casewatch.ingest.group.ingest", broken)  # a lone request's path
    with caplog.at_level(logging.DEBUG):
        resp = await signed_post(sqlite_api[1], PATH, envelope("nominal.upsert"))
    reply = await is_json_error(resp, 500)
    assert "Testperson" not in json.dumps(reply)
    assert "RuntimeError" in caplog.text
    assert "Testperson" not in caplog.text and "1980-02-29" not in caplog.text


async def test_database_unreachable_is_503_not_500(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}"
    service = await make_service(url)
    try:
        async with client_for(service) as client:
            resp = await signed_post(client, PATH, envelope("visit.recorded"))
            reply = await is_json_error(resp, 503)
            assert reply["error"] == "unavailable"
            assert resp.headers["Retry-After"] == "5"
    finally:
        await stop(service)


async def test_unknown_route_and_method_are_json(sqlite_api: tuple[Service, TestClient[Any, Any]]) -> None:
    client = sqlite_api[1]
    await is_json_error(await client.get("/api/v1/nothing"), 404)
    reply = await is_json_error(await client.get(PATH), 405)
    assert reply["error"] == "method_not_allowed"


# --- time: an event cannot have happened in the future ---------------------------------------------


@pytest.mark.parametrize(("ahead", "status"), [(300, 202), (301, 400), (365 * 86400 * 73, 400)])
async def test_an_event_stamped_ahead_of_the_clock_is_refused(
    api: tuple[Service, TestClient[Any, Any]], ahead: int, status: int
) -> None:
    """Issue 18 review: an occurred_at in the future (a wrong clock, a mistyped year) would become
    the nominal's newest state, and every real later change would then be kept as history and never
    applied. Up to [ingest] max_clock_skew_seconds ahead is a clock's drift; beyond it, 400."""
    service, client = api
    raw = envelope("visit.recorded", occurred_at=T0 + timedelta(seconds=ahead))
    resp = await signed_post(client, PATH, raw)
    assert resp.status == status, await resp.text()
    if status == 400:
        body = await resp.json()
        assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "occurred_at")]
        assert "in the future" in body["errors"][0]["message"]
        assert await stored(service) == 0
