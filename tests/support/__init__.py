"""Shared test helpers: a service on a real database behind aiohttp's test server, signed
requests to the events and alerts APIs, and fictional event envelopes of every type.

    async with service_client(db_url, clock=FixedClock(T0)) as (service, client):
        resp = await signed_post(client, "/api/v1/events", [envelope("visit.recorded")])

Everything here is synthetic and obviously fictional.
"""

from __future__ import annotations

import io
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from alembic import command
from sqlalchemy.engine import Connection
from yarl import URL

from casewatch.api.auth import sign, sign_v2
from casewatch.api.http import CONTEXT_KEY, ApiRunner
from casewatch.clock import Clock, FixedClock
from casewatch.config import Settings, load_config
from casewatch.store.migrate import alembic_config
from casewatch.wiring import Service, create_service, stop

SECRET = "test-ingest-secret-not-real"
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
VISOR_REF = "VS-0000001"

TEAMS: list[dict[str, Any]] = [
    {
        "id": "north",
        "name": "North MOSOVO",
        "channel": "C0NORTH",
        "spoc_email": "north.spoc@force.example",
        "supervisor_emails": ["sgt.north@force.example"],
    },
    {
        "id": "south",
        "name": "South MOSOVO",
        "channel": "C0SOUTH",
        "spoc_email": "south.spoc@force.example",
        "supervisor_emails": ["sgt.south@force.example"],
    },
]
OFFICERS: list[dict[str, Any]] = [
    {
        "id": "PC1234",
        "name": "PC Example",
        "email": "pc1234@force.example",
        "slack_user_id": "U0PC1234",
        "team": "north",
        "roles": ["officer"],
    },
    {
        "id": "SGT0001",
        "name": "Sgt Example",
        "email": "sgt.north@force.example",
        "slack_user_id": "U0SGT0001",
        "team": "north",
        "roles": ["officer", "supervisor"],
    },
    {
        "id": "PC5678",
        "name": "PC Sample",
        "email": "pc5678@force.example",
        "slack_user_id": "U0PC5678",
        "team": "south",
        "roles": ["officer"],
    },
]


# --- settings and services ----------------------------------------------------------------------


@contextmanager
def switched(owner: Any, name: str, value: Any) -> Iterator[None]:
    """`owner.name` (a module's or a class's switch) set to `value` inside, then put back."""
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


def make_settings(db_url: str, **overrides: Any) -> Settings:
    """Settings for tests: the given database, the test ingest secret, Slack off, two fictional
    teams and three officers. Sections in `overrides` are merged key by key (lists replace).
    The environment and any ./casewatch.toml are ignored."""
    base: dict[str, Any] = {
        "database": {"url": db_url},
        "ingest": {"secret": SECRET},
        "slack": {"mode": "off"},
        "teams": TEAMS,
        "officers": OFFICERS,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_config("/dev/null", environ={}, overrides=base)


async def make_service(db_url: str, clock: Clock | None = None, **overrides: Any) -> Service:
    """A Service on `db_url` (already migrated, e.g. the db_url fixture) with a fixed clock at T0
    unless one is given. Stop it with casewatch.wiring.stop(service)."""
    return await create_service(make_settings(db_url, **overrides), clock or FixedClock(T0))


class ApiTestServer(TestServer):
    """aiohttp's TestServer on the runner the service itself serves with (casewatch.api.http.ApiRunner)."""

    async def _make_runner(self, **kwargs: Any) -> ApiRunner:
        return ApiRunner(self.app, **kwargs)


@asynccontextmanager
async def client_for(service: Service) -> AsyncIterator[TestClient[Any, Any]]:
    """The service's real aiohttp app on a loopback test server."""
    async with TestClient(ApiTestServer(service.app, host="127.0.0.1")) as client:
        yield client


@asynccontextmanager
async def service_client(
    db_url: str, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[tuple[Service, TestClient[Any, Any]]]:
    """make_service + client_for, stopped (engine disposed) at the end."""
    service = await make_service(db_url, clock, **overrides)
    try:
        async with client_for(service) as client:
            yield service, client
    finally:
        await stop(service)


# --- signed requests ----------------------------------------------------------------------------


def _now(client: TestClient[Any, Any]) -> int:
    app = client.app
    assert app is not None, "signed requests need a TestClient on a TestServer(app)"
    return int(app[CONTEXT_KEY].clock.now().timestamp())


def signed_headers(body: bytes, secret: str = SECRET, ts: int | str = 0) -> dict[str, str]:
    """v1 headers (the body alone is signed; accepted for POST /api/v1/events only)."""
    return {
        "X-Casewatch-Timestamp": str(ts),
        "X-Casewatch-Signature": sign(secret, str(ts), body),
    }


def signed_headers_v2(
    method: str, target: str, body: bytes = b"", secret: str = SECRET, ts: int | str = 0
) -> dict[str, str]:
    """v2 headers: method, request target (path?query exactly as sent) and body signed."""
    return {
        "X-Casewatch-Timestamp": str(ts),
        "X-Casewatch-Signature": sign_v2(secret, str(ts), method, target, body),
    }


def request_target(
    client: TestClient[Any, Any], path: str, params: Mapping[str, str] | None = None
) -> str:
    """The request target (path?query) the client will put on the request line for `path` and
    `params`, after its own encoding and normalisation: what a v2 signer must sign."""
    url = client.make_url(path)
    if params:
        url = url.extend_query(params)
    return url.raw_path_qs


async def signed_request(
    client: TestClient[Any, Any],
    method: str,
    path: str,
    body: bytes = b"",
    secret: str = SECRET,
    ts: int | str | None = None,
    *,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    scheme: str = "v2",
) -> ClientResponse:
    """`method` `path` (with `params`) carrying the raw `body`, signed with `secret` at `ts`
    (default: the service clock's now) by `scheme` ("v2", or "v1": the body alone). The target
    signed is the one sent, byte for byte."""
    stamp = _now(client) if ts is None else ts
    target = request_target(client, path, params)
    signing = (
        signed_headers_v2(method, target, body, secret, stamp)
        if scheme == "v2"
        else signed_headers(body, secret, stamp)
    )
    all_headers = {**signing, **(headers or {})}
    # A BytesIO, not bytes: aiohttp warns that a large raw bytes body may block the event loop.
    data = io.BytesIO(body) if body else None
    return await client.request(method, URL(target, encoded=True), data=data, headers=all_headers)


async def signed_post(
    client: TestClient[Any, Any],
    path: str,
    body: Any,
    secret: str = SECRET,
    ts: int | str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    scheme: str = "v2",
) -> ClientResponse:
    """POST `body` (bytes as they are, anything else as JSON) signed with `secret` at `ts`
    (default: the service clock's now) by `scheme` ("v2" or "v1"), Content-Type
    application/json unless `headers` say."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return await signed_request(client, "POST", path, raw, secret, ts, headers=all_headers, scheme=scheme)


async def signed_get(
    client: TestClient[Any, Any],
    path: str,
    secret: str = SECRET,
    ts: int | str | None = None,
    *,
    params: Mapping[str, str] | None = None,
    scheme: str = "v2",
) -> ClientResponse:
    """GET signed by v2 (method, path and query), as the read API requires."""
    return await signed_request(client, "GET", path, b"", secret, ts, params=params, scheme=scheme)


# --- fictional events ---------------------------------------------------------------------------

_ids = itertools.count(1)
# Unique per process too, so events made by two runs against one database never collide.
_RUN = uuid.uuid4().hex[:6]


def nominal_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "surname": "Testperson",
        "forenames": "Alex Sample",
        "date_of_birth": "1980-02-29",
        "category": "1",
        "mappa_level": 1,
        "registered": True,
        "risk_level": "medium",
        "lead_agency": "police",
        "team": "north",
        "offender_manager": "PC1234",
        "area": "N01",
        "on_licence": False,
        "no_fixed_abode": False,
        "last_notification_on": "2026-03-01",
        "markers": [{"code": "VIO", "label": "Violence (fictional)", "restricted": False}],
    }
    data.update(overrides)
    return data


SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "nominal.upsert": nominal_data(),
    "notification.received": {"kind": "periodic", "notified_on": "2026-11-19"},
    "travel.notified": {"departure_on": "2026-12-01", "return_on": "2026-12-08", "destination": "FR"},
    "travel.cancelled": {"trip_id": "TRIP-0001"},
    "travel.border_alert": {"port": "Dover", "direction": "inbound", "checked_at": "2026-11-20T08:00:00Z"},
    "mappa.level_changed": {"from_level": 1, "to_level": 2, "rationale": "Fictional MAPP meeting decision"},
    "recall.issued": {"recall_type": "standard", "issued_at": "2026-11-20T08:00:00Z"},
    "recall.returned": {"returned_at": "2026-11-20T12:00:00Z"},
    "detention.started": {"kind": "remand", "started_on": "2026-11-18"},
    "detention.ended": {"ended_on": "2026-11-19"},
    "change.detected": {
        "what": "home_address", "changed_on": "2026-11-18", "source": "Fictional council check",
    },
    "action.upsert": {
        "action_id": "ACT-0001",
        "summary": "Fictional action: review the plan",
        "owner": "PC1234",
        "due_on": "2026-12-01",
        "status": "open",
        "source": "mapp_meeting",
    },
    "visit.recorded": {"visited_on": "2026-11-19"},
    "meeting.held": {"meeting_id": "MAPP-0001", "held_on": "2026-11-18", "level": 2},
    "rmp.reviewed": {"reviewed_on": "2026-11-19"},
    "order.upsert": {
        "order_id": "ORD-0001",
        "kind": "shpo",
        "made_on": "2025-06-01",
        "expires_on": "2030-06-01",
        "prohibitions": ["Fictional prohibition: no unsupervised contact"],
        "status": "active",
    },
}


def renamed(value: Any, names: Mapping[str, str]) -> Any:
    """`value` (dicts and lists walked) with each of `names`' keys in its strings replaced by its
    name: ids that differ between two runs made comparable."""
    if isinstance(value, dict):
        return {k: renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed(v, names) for v in value]
    if isinstance(value, str):
        for old, name in names.items():
            value = value.replace(old, name)
    return value


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def envelope(
    type: str,
    data: Mapping[str, Any] | None = None,
    *,
    id: str | None = None,
    visor_ref: str = VISOR_REF,
    occurred_at: datetime | str = T0,
    **data_overrides: Any,
) -> dict[str, Any]:
    """A JSON-ready envelope: SAMPLE_DATA[type] (or `data`) with `data_overrides` applied."""
    body = dict(SAMPLE_DATA[type] if data is None else data)
    body.update(data_overrides)
    return {
        "id": id or f"test-event-{_RUN}-{next(_ids):06d}",
        "type": type,
        "occurred_at": occurred_at if isinstance(occurred_at, str) else iso(occurred_at),
        "visor_ref": visor_ref,
        "data": body,
    }


def downgrade_to(conn: Connection, url: str, revision: str) -> None:
    """Run Alembic's downgrade to `revision` on this connection (for `conn.run_sync`)."""
    cfg = alembic_config(url)
    cfg.attributes["connection"] = conn
    command.downgrade(cfg, revision)


def insert_into(table_name: str, rows: Sequence[Mapping[str, Any]]) -> Any:
    """An INSERT of exactly these rows' keys into `table_name`, for a database migrated to an
    older revision: the model's table would add the columns of later migrations (their Python
    defaults) and fail there."""
    from casewatch.store.models import Base

    model = Base.metadata.tables[table_name]
    keys = sorted({key for row in rows for key in row})
    return sqlalchemy.table(table_name, *(sqlalchemy.column(key, model.c[key].type) for key in keys)).insert()
