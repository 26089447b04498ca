"""Probation domain events through the real endpoint (`python -m bench.feeds --only probation`).

For each database: a real casewatch service (casewatch.wiring, HTTP on 127.0.0.1) with the
probation feed on, fictional nominals with CRNs, and signed domain events posted by 1 and 8
concurrent senders, each its own request, as a queue bridge would:
- "mapped": MAPPA registration updates for known nominals, each a real level change (an event
  stored, the level-change rules run, an alert opened);
- "ignored": registrations for people who are not nominals (the normal case on a national topic);
- "events_api": the same level changes sent as casewatch's own mappa.level_changed to
  POST /api/v1/events (other nominals): the core's cost, so the adapter's own shows.
In the same run, the least-work baseline on the same database: a bare aiohttp handler doing the
signature check, the JSON parse and one row insert in one commit. Timings on a shared 2-core
machine are noisy: compare the ratio within a run, not figures across runs.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import harness
from bench.feeds.common import add_nominals, bench_settings
from bench.measure import closed_loop, ratio
from casewatch.api import auth
from casewatch.clock import SystemClock
from casewatch.config import Settings
from casewatch.store.engine import make_engine
from casewatch.store.migrate import upgrade
from casewatch.wiring import Service, create_service, start_http, stop
from integrations.probation import samples
from integrations.probation.http import ROUTE

SECRET = "bench-ingest-secret-not-real"  # noqa: S105 (fictional, loopback only)
NOMINALS = 200
CONCURRENCY = (1, 8)
Call = Callable[[int], Awaitable[bool]]


def _settings(url: str) -> Settings:
    return bench_settings(
        url, ingest={"secret": SECRET}, http={"host": "127.0.0.1", "port": 0}, probation={"enabled": True}
    )


def crn_of(n: int) -> str:
    return f"X{n:06d}"


async def _nominals(service: Service, count: int, prefix: str = "B") -> None:
    refs = [f"VS-{prefix}{n:06d}" for n in range(count)]
    await add_nominals(service, refs, [crn_of(n) if prefix == "B" else None for n in range(count)])


def _event_bodies(kind: str, total: int, start: int) -> list[bytes]:
    """`total` distinct domain events: level changes cycling 2, 3, 1 per nominal (each differs
    from the one before), or registrations of people who are not nominals."""
    bodies = []
    base = datetime.now(UTC) - timedelta(hours=1)
    for i in range(total):
        step = start + i
        n, rounds = step % NOMINALS, step // NOMINALS
        crn = crn_of(n) if kind == "mapped" else f"Y{step:06d}"
        event = samples.mappa_registration(
            "probation-case.registration.updated", crn=crn, occurred_at=base + timedelta(milliseconds=step),
            level=(rounds + 1) % 3 + 1, registration_id=str(step),
        )
        bodies.append(json.dumps(samples.sns_notification(event, message_id=f"bench-{kind}-{step}")).encode())
    return bodies


def _level_changes(total: int, start: int) -> list[bytes]:
    """What _event_bodies("mapped") becomes, sent as casewatch's own events (nominals VS-C...)."""
    bodies = []
    base = datetime.now(UTC) - timedelta(hours=1)
    for i in range(total):
        step = start + i
        n, rounds = step % NOMINALS, step // NOMINALS
        to_level = (rounds + 1) % 3 + 1
        from_level = 1 if rounds == 0 else rounds % 3 + 1
        event = {
            "id": f"bench-direct-{step}", "type": "mappa.level_changed", "visor_ref": f"VS-C{n:06d}",
            "occurred_at": (base + timedelta(milliseconds=step)).isoformat().replace("+00:00", "Z"),
            "data": {"from_level": from_level, "to_level": to_level, "rationale": "Bench (fictional)"},
        }
        bodies.append(json.dumps(event).encode())
    return bodies


def _poster(session: aiohttp.ClientSession, url: str, path: str, bodies: list[bytes]) -> Call:
    async def call(i: int) -> bool:
        body = bodies[i]
        headers = auth.signed_post_headers(SECRET, path, body)
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            return resp.status == 202

    return call


def _baseline_app(engine: AsyncEngine) -> web.Application:
    """The least work a receiver must do: check the signature, parse the JSON, insert one row
    in one commit."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        problem = auth.check(
            SECRET, request.headers.get(auth.TIMESTAMP_HEADER), request.headers.get(auth.SIGNATURE_HEADER),
            body, now=datetime.now(UTC), max_skew_seconds=300, method=request.method,
            target=request.raw_path,
        )
        if problem is not None:
            return web.json_response({"error": problem}, status=401)
        value = json.loads(body)
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO bench_probation_baseline (id, body) VALUES (:id, :body)"),
                {"id": str(value["MessageId"]), "body": body.decode()},
            )
        return web.json_response({"accepted": 1}, status=202)

    app = web.Application()
    app.router.add_post(ROUTE, handle)
    return app


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def _one_database(kind: str, options: Any) -> dict[str, Any]:
    total = 60 if options.quick else (options.rows or 400)
    out: dict[str, Any] = {"requests_each": total}
    async with harness.database(kind, harness.Options(pg_url=options.pg_url)) as url:
        engine = make_engine(url)
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(text(
                "CREATE TABLE IF NOT EXISTS bench_probation_baseline (id VARCHAR(200) PRIMARY KEY, body TEXT)"
            ))
        await engine.dispose()
        service = await create_service(_settings(url), SystemClock())
        baseline_engine = make_engine(url)
        baseline_runner, baseline_port = await _serve(_baseline_app(baseline_engine))
        try:
            port = await start_http(service)
            await _nominals(service, NOMINALS)
            await _nominals(service, NOMINALS, prefix="C")
            counter = itertools.count()
            async with aiohttp.ClientSession() as session:
                for concurrency in CONCURRENCY:
                    row: dict[str, Any] = {}
                    start = next(counter) * total
                    for what in ("mapped", "ignored", "events_api", "baseline"):
                        if what == "events_api":
                            bodies, path, target = _level_changes(total, start), "/api/v1/events", port
                        else:
                            bodies = _event_bodies("ignored" if what == "baseline" else what, total, start)
                            path, target = ROUTE, baseline_port if what == "baseline" else port
                        call = _poster(session, f"http://127.0.0.1:{target}{path}", path, bodies)
                        row[what] = await closed_loop(call, total, concurrency)
                    for what in ("mapped", "ignored", "events_api"):
                        row[what]["x_baseline_time"] = ratio(row["baseline"]["per_s"], row[what]["per_s"])
                    out[f"senders_{concurrency}"] = row
                    print(
                        f"  {kind} x{concurrency}: mapped {row['mapped']['per_s']}/s, ignored "
                        f"{row['ignored']['per_s']}/s, events API {row['events_api']['per_s']}/s, "
                        f"baseline {row['baseline']['per_s']}/s (errors "
                        f"{sum(r['errors'] for r in row.values())})",
                        flush=True,
                    )
        finally:
            await baseline_runner.cleanup()
            await baseline_engine.dispose()
            await stop(service)
    return out


async def run(options: Any) -> dict[str, Any]:
    """events/s through POST /api/v1/probation/events at 1 and 8 concurrent senders, with the
    least-work baseline, on each database asked for."""
    quiet = logging.getLogger("casewatch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # each alert's routing line would drown the figures
    try:
        return {kind: await _one_database(kind, options) for kind in options.databases}
    finally:
        quiet.setLevel(level)
