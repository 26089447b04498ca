"""/healthz, /readyz and /metrics, on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from casewatch.store.engine import make_engine
from casewatch.store.migrate import upgrade
from casewatch.wiring import stop
from tests.support import client_for, envelope, make_service, service_client, signed_post


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_healthz_and_readyz(db_url: str) -> None:
    async with service_client(db_url) as (_, client):
        health = await client.get("/healthz")
        assert (health.status, await health.json()) == (200, {"status": "ok"})
        ready = await client.get("/readyz")
        assert (ready.status, await ready.json()) == (200, {"status": "ok", "database": "ok"})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    for url in (
        f"sqlite+aiosqlite:///{tmp_path / 'no-such-dir' / 'x.db'}",
        f"postgresql+asyncpg://casewatch@127.0.0.1:{closed_port()}/nothing",
    ):
        service = await make_service(url)
        try:
            async with client_for(service) as client:
                health = await client.get("/healthz")
                assert health.status == 200  # the process is up all the same
                ready = await client.get("/readyz")
                assert ready.status == 503, url
                assert (await ready.json())["status"] == "unavailable"
        finally:
            await stop(service)


async def test_readyz_recovers_when_the_database_appears(tmp_path: Path) -> None:
    path = tmp_path / "late" / "casewatch.db"
    url = f"sqlite+aiosqlite:///{path}"
    service = await make_service(url)
    try:
        async with client_for(service) as client:
            assert (await client.get("/readyz")).status == 503
            path.parent.mkdir()
            engine = make_engine(url)
            await upgrade(engine)
            await engine.dispose()
            assert (await client.get("/readyz")).status == 200
    finally:
        await stop(service)


async def test_metrics_count_events_requests_and_latency(db_url: str) -> None:
    async with service_client(db_url) as (_, client):
        visit = envelope("visit.recorded")
        assert (
            await signed_post(client, "/api/v1/events", [visit, envelope("visit.recorded")])
        ).status == 202
        assert (await signed_post(client, "/api/v1/events", [visit])).status == 202
        assert (await signed_post(client, "/api/v1/events", [visit, {"bad": 1}, {}])).status == 400
        assert (await signed_post(client, "/api/v1/events", visit, secret="forged")).status == 401
        await client.get("/healthz")
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        values = samples(await resp.text())
    assert values[("casewatch_events_total", (("outcome", "accepted"),))] == 2
    assert values[("casewatch_events_total", (("outcome", "duplicate"),))] == 1
    assert values[("casewatch_events_total", (("outcome", "rejected"),))] == 3
    route = (("method", "POST"), ("route", "/api/v1/events"))
    assert values[("casewatch_http_requests_total", (*route, ("status", "202")))] == 2
    assert values[("casewatch_http_requests_total", (*route, ("status", "400")))] == 1
    assert values[("casewatch_http_requests_total", (*route, ("status", "401")))] == 1
    assert (
        values[
            ("casewatch_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200")))
        ]
        == 1
    )
    assert values[("casewatch_ingest_seconds_count", ())] == 2


async def test_each_service_has_its_own_registry(sqlite_url: str, tmp_path: Path) -> None:
    async with service_client(sqlite_url) as (_, first), service_client(sqlite_url) as (_, second):
        await first.get("/healthz")
        await first.get("/no-such-page")
        text_second = await (await second.get("/metrics")).text()
        text_first = await (await first.get("/metrics")).text()
    healthz = ("casewatch_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200")))
    assert samples(text_first)[healthz] == 1
    assert healthz not in samples(text_second)
    unmatched = (
        "casewatch_http_requests_total",
        (("method", "GET"), ("route", "unmatched"), ("status", "404")),
    )
    assert samples(text_first)[unmatched] == 1
