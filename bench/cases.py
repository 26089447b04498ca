"""The benchmarks. Each takes a prepared database (bench.dataset) and returns a JSON-ready dict.

Servers and clients share one process and event loop: the baselines run under the same
conditions, so the ratios compare like with like even where absolute figures are pessimistic.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import aiohttp
from aiohttp import web
from sqlalchemy import MetaData, Table, event, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite

from bench.dataset import (
    BOT_TOKEN,
    INGEST_SECRET,
    NOW,
    SIGNING_SECRET,
    Sizes,
    make_settings,
    officer_id,
    settings_dict,
    surname_of,
    team_id,
    visor_ref,
    write_toml,
)
from bench.loadgen import Paced, PacedSender, Request, closed_loop_remote, send_paced
from bench.measure import peak_rss_mb, percentile, ratio, summary
from bench.relay import ProcessMailSink
from bench.slack_process import ProcessSlackStandIn
from casewatch.api import auth
from casewatch.api.auth import signed_post_headers
from casewatch.clock import SystemClock
from casewatch.store.engine import make_engine
from casewatch.store.models import AuditEntry, Base, Delivery, Event, Nominal
from casewatch.wiring import Service, create_service, settle_heap, start_background, stop
from integrations.mail_sink import MailSink
from tests.slack_standin import Call, SlackStandIn

CONCURRENCY = (1, 8, 32)


# --- servers ------------------------------------------------------------------------------------


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """`app` on a real loopback TCP port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def baseline_app(db_url: str, pool_size: int = 20) -> tuple[web.Application, Any]:
    """The floor: a bare aiohttp endpoint reading one nominal row by key, nothing else."""
    engine = make_engine(db_url, pool_size=pool_size)
    app = web.Application()
    query = text("SELECT visor_ref, surname, team FROM nominals WHERE visor_ref = :ref")

    async def row(request: web.Request) -> web.Response:
        async with engine.connect() as conn:
            found = (await conn.execute(query, {"ref": request.match_info["ref"]})).first()
        if found is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"visor_ref": found[0], "surname": found[1], "team": found[2]})

    app.router.add_get("/row/{ref}", row)
    return app, engine


# The least-work floor's audit table: audit_log's columns (and its indexes on at and actor) under
# another name, so that its rows never reach the service's chain and sealer.
FLOOR_AUDIT = Table(
    "bench_floor_audit", MetaData(),
    *(column._copy() for column in AuditEntry.__table__.c if column.name not in ("seq", "chain_hash")),
)


async def least_work_app(db_url: str, pool_size: int) -> tuple[web.Application, Any]:
    """The least work a /flags answer needs: a bare aiohttp endpoint that checks Slack's v0
    signature (HMAC-SHA256 over "v0:<timestamp>:<body>", 5-minute window, as Bolt and bot.http),
    reads one nominal row by key and commits one audit row, on an engine made as the service's
    (casewatch.store.engine: SQLite WAL with synchronous=FULL, BEGIN IMMEDIATE; PostgreSQL as
    configured), answering only after the commit."""
    engine = make_engine(db_url, pool_size=pool_size)
    async with engine.begin() as conn:
        await conn.run_sync(FLOOR_AUDIT.metadata.create_all)
    app = web.Application()
    query = text("SELECT visor_ref, surname, team FROM nominals WHERE visor_ref = :ref")
    audit_row = insert(FLOOR_AUDIT)
    secret = SIGNING_SECRET.encode()

    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-Slack-Request-Timestamp", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
            return web.json_response({"error": "invalid request"}, status=401)
        mac = hmac.new(secret, b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest("v0=" + mac, request.headers.get("X-Slack-Signature", "")):
            return web.json_response({"error": "invalid request"}, status=401)
        form = parse_qs(body.decode())
        user, ref = form["user_id"][0], form["text"][0]
        async with engine.begin() as conn:
            found = (await conn.execute(query, {"ref": ref})).first()
            await conn.execute(audit_row, {
                "at": datetime.now(UTC), "actor": user, "action": "flags.lookup", "subject": ref,
                "purpose": "lookup of a nominal", "details": {"outcome": "found" if found else "not_found"},
                "nominals": [ref] if found else [], "content_hash": "",
            })
        text_ = f"{found[0]} {found[1]} ({found[2]})" if found else "not found"
        return web.json_response({"response_type": "ephemeral", "text": text_})

    app.router.add_post("/slack/events", answer)
    return app, engine


# The least-work ingest floor's table: the events table's columns (and its index on visor_ref)
# under another name, so that the same events can go to casewatch and to the floors in one run.
FLOOR_EVENTS = Table(
    "bench_floor_events", MetaData(), *(column._copy() for column in Event.__table__.c),
)
_ENVELOPE_FIELDS = {"id": str, "type": str, "occurred_at": str, "visor_ref": str, "data": dict}


def floor_event_row(raw: Any, received_at: datetime) -> dict[str, Any] | None:
    """The cheapest honest check of one event envelope: an object with the five required fields,
    each of its JSON type, and an ISO 8601 `occurred_at` with a time zone; None when it is not."""
    if not isinstance(raw, dict) or any(not isinstance(raw.get(k), t) for k, t in _ENVELOPE_FIELDS.items()):
        return None
    try:
        occurred_at = datetime.fromisoformat(raw["occurred_at"])
    except ValueError:
        return None
    if occurred_at.tzinfo is None:
        return None
    return {
        "id": raw["id"], "type": raw["type"], "visor_ref": raw["visor_ref"], "occurred_at": occurred_at,
        "received_at": received_at, "source": "bench", "data": raw["data"],
    }


class FloorGroupCommit:
    """The least-work group commit: requests waiting while a transaction runs are inserted
    together, one executemany and one commit, and each is answered after that commit."""

    def __init__(self, engine: Any, stmt: Any) -> None:
        self.engine, self.stmt = engine, stmt
        self._queue: list[tuple[dict[str, Any], asyncio.Future[bool]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.groups = 0  # transactions that held more than one request
        self.transactions = 0

    async def store(self, row: dict[str, Any]) -> bool:
        """Whether the event was new (False: its id was stored before)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((row, done))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain())
        return await asyncio.shield(done)

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue[:1000], self._queue[1000:]
            try:
                async with self.engine.begin() as conn:
                    inserted = set((await conn.execute(self.stmt, [row for row, _ in group])).scalars())
            except Exception as exc:  # noqa: BLE001 (handed to the requests)
                for _, done in group:
                    done.set_exception(exc)
                continue
            self.groups += len(group) > 1
            self.transactions += 1
            for row, done in group:
                new = row["id"] in inserted
                inserted.discard(row["id"])  # a repeated id in one group: the first is the new one
                done.set_result(new)


async def least_work_ingest_app(
    db_url: str, pool_size: int, *, group_commit: bool
) -> tuple[web.Application, Any, FloorGroupCommit | None]:
    """The least work POST /api/v1/events needs for one event a request: a bare aiohttp endpoint
    that checks the v2 signature (casewatch.api.auth.check), parses the JSON and checks the
    envelope's required fields (floor_event_row), inserts one events row (ON CONFLICT (id) DO
    NOTHING: the sender's id is its idempotency key) and commits before answering 202, on an
    engine made as the service's (SQLite WAL, synchronous=FULL, BEGIN IMMEDIATE, one connection;
    PostgreSQL with the same pool). With `group_commit`, requests that arrive while a transaction
    runs share the next one (FloorGroupCommit), as casewatch.ingest.group does."""
    engine = make_engine(db_url, pool_size=pool_size)
    async with engine.begin() as conn:
        await conn.run_sync(FLOOR_EVENTS.metadata.create_all)
    dialect_insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(FLOOR_EVENTS).on_conflict_do_nothing(index_elements=["id"]).returning(
        FLOOR_EVENTS.c.id
    )
    grouped = FloorGroupCommit(engine, stmt) if group_commit else None

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        problem = auth.check(
            INGEST_SECRET, request.headers.get(auth.TIMESTAMP_HEADER),
            request.headers.get(auth.SIGNATURE_HEADER), body, now=datetime.now(UTC), max_skew_seconds=300,
            method=request.method, target=request.raw_path,
        )
        if problem is not None:
            return web.json_response({"error": "unauthorized", "message": problem}, status=401)
        try:
            raw = json.loads(body)
        except ValueError:
            return web.json_response({"error": "bad_request"}, status=400)
        row = floor_event_row(raw, datetime.now(UTC))
        if row is None:
            return web.json_response({"error": "bad_request"}, status=400)
        if grouped is not None:
            new = await grouped.store(row)
        else:
            async with engine.begin() as conn:
                new = (await conn.execute(stmt, row)).first() is not None
        return web.json_response({"accepted": int(new), "duplicates": int(not new), "alerts": []}, status=202)

    app = web.Application()
    app.router.add_post("/api/v1/events", post)
    return app, engine, grouped


def slack_signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest.hexdigest()}",
    }


# Each request unique, as Slack's are (its trigger_id): the service refuses a request it took
# before (bot.http.ReplayGuard).
_TRIGGERS = itertools.count(1)


def flags_body(query: str, user: str) -> bytes:
    return urlencode({
        "token": "legacy-not-real", "team_id": "T0BENCH", "team_domain": "casewatch-bench",
        "channel_id": "CB00001", "channel_name": "bench", "user_id": user, "user_name": user.lower(),
        "command": "/flags", "text": query, "api_app_id": "A0BENCH", "is_enterprise_install": "false",
        "response_url": "http://127.0.0.1:9/unused", "trigger_id": f"1.2.{next(_TRIGGERS)}",
    }).encode()


def events_signed(body: bytes) -> dict[str, str]:
    """Headers for POST /api/v1/events carrying `body`, signed v2 (method, path and body)."""
    return signed_post_headers(INGEST_SECRET, "/api/v1/events", body)


# --- /flags -------------------------------------------------------------------------------------


def warmup_size(level: int) -> int:
    """Untimed requests sent at a level before its timed ones (bench.loadgen): enough for every
    requester to open its HTTP connection, the server its database connections, and each of
    those connections to have prepared the statements the timed requests use. On PostgreSQL a
    pooled connection prepares each statement, and asyncpg introspects its result types, the first
    time it runs it: with two warm-ups a connection (before the eleventh session) most of that
    fell inside the timed second at 32 requesters (bench/README.md, "/flags ... eleventh session")."""
    return max(8 * level, 50)


class ConnectCounter:
    """When engines opened new database connections: a run at steady state opens none."""

    def __init__(self, *engines: Any) -> None:
        self.at: list[float] = []  # time.monotonic()
        for engine in {id(e): e for e in engines if e is not None}.values():
            event.listen(engine.sync_engine, "connect", self._on_connect)

    def _on_connect(self, _dbapi_connection: Any, _record: Any) -> None:
        self.at.append(time.monotonic())

    def note(self, result: dict[str, Any]) -> None:
        """Replace the run's timed window (bench.loadgen) by the connections opened within it."""
        start, end = result.pop("timed_window")
        result["db_connects"] = sum(start <= t <= end for t in self.at)


async def bench_flags(db_url: str, sizes: Sizes, requests: int) -> dict[str, Any]:
    """/flags through the signed Slack endpoint (Bolt dispatch, role checks, audit), by ViSOR
    reference and by surname, against two floors: the least work an answer needs (signature, one
    row by key, one audit row committed: least_work_app) and the bare one-row endpoint, at 1, 8
    and 32 requesters (sent from a child process, so the requesters do not share the server's
    event loop). Each level first sends warmup_size(level) other requests at that level, untimed,
    so the timed ones measure the steady state rather than connection set-up. The server's CPU
    time per answer is measured around each timed run (the bench process holds only servers)."""
    rng = random.Random(7)
    refs = [visor_ref(rng.randint(1, sizes.nominals)) for _ in range(requests)]
    users = [f"UB{rng.randint(1, sizes.officers):07d}" for _ in range(requests)]
    warm_rng = random.Random(8)  # other nominals and officers than the timed requests
    most_warm = warmup_size(max(CONCURRENCY))
    warm_refs = [visor_ref(warm_rng.randint(1, sizes.nominals)) for _ in range(most_warm)]
    warm_users = [f"UB{warm_rng.randint(1, sizes.officers):07d}" for _ in range(most_warm)]
    out: dict[str, Any] = {
        "requests_per_level": requests, "warmup_per_level": {str(c): warmup_size(c) for c in CONCURRENCY},
        "levels": [],
    }
    # Pools as large as the most requesters: a smaller one closes the connections above its size
    # whenever that many fall idle and opens them again moments later, in the timed part.
    pool_size = max(CONCURRENCY)
    async with SlackStandIn(token=BOT_TOKEN) as slack:
        settings = make_settings(
            db_url, sizes, database={"pool_size": pool_size},
            slack={"mode": "http", "signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN,
                   "api_url": slack.url},
        )
        service = await create_service(settings, SystemClock())
        base_app, base_engine = baseline_app(db_url, pool_size)
        least_app, least_engine = await least_work_app(db_url, pool_size)
        # As run_service (casewatch serve) does once started; for the floors alike (one process).
        settle_heap(service)
        # The service's writer and its lookups' readers (their own pool on PostgreSQL).
        service_connects = ConnectCounter(service.engine, service.reader_engine)
        base_connects = ConnectCounter(base_engine)
        least_connects = ConnectCounter(least_engine)
        try:
            async with serve(service.app) as url, serve(base_app) as base_url, \
                    serve(least_app) as least_url, aiohttp.ClientSession() as http:

                def flags_request(ref: str, user: str, i: int, to: str = url) -> Request:
                    # One in five by surname (the other index path), the rest by reference.
                    by_surname = not i % 5 and to == url
                    query = surname_of(int(ref[4:])).lower() if by_surname else ref
                    body = flags_body(query, user)
                    return Request("POST", f"{to}/slack/events", body, tuple(slack_signed(body).items()),
                                   tag="surname" if by_surname else "reference")

                def flags_requests(for_refs: list[str], by_users: list[str], to: str = url) -> list[Request]:
                    pairs = enumerate(zip(for_refs, by_users, strict=True))
                    return [flags_request(ref, user, i, to) for i, (ref, user) in pairs]

                timed_rows = [Request("GET", f"{base_url}/row/{ref}") for ref in refs]
                timed_flags = flags_requests(refs, users)
                first = timed_flags[1 % len(timed_flags)]
                async with http.post(first.url, data=first.body, headers=dict(first.headers)) as r:
                    answer = await r.json(content_type=None)
                    out["checked"] = {"status": r.status, "response_type": answer.get("response_type")}
                    assert r.status == 200 and answer.get("response_type") == "ephemeral", answer
                for level in CONCURRENCY:
                    n_warm = warmup_size(level)
                    # Signed now: Slack's signature is good for 5 minutes.
                    timed_flags = flags_requests(refs, users)
                    warm_flags = flags_requests(warm_refs[:n_warm], warm_users[:n_warm])
                    timed_least = flags_requests(refs, users, least_url)
                    warm_least = flags_requests(warm_refs[:n_warm], warm_users[:n_warm], least_url)
                    warm_rows = [Request("GET", f"{base_url}/row/{ref}") for ref in warm_refs[:n_warm]]
                    cpu = time.process_time()
                    measured = await closed_loop_remote(timed_flags, level, warmup=warm_flags)
                    measured["server_cpu_ms_per_request"] = _cpu_per_request(cpu, len(warm_flags) + requests)
                    service_connects.note(measured)
                    cpu = time.process_time()
                    least = await closed_loop_remote(timed_least, level, warmup=warm_least)
                    least["server_cpu_ms_per_request"] = _cpu_per_request(cpu, len(warm_least) + requests)
                    least_connects.note(least)
                    floor = await closed_loop_remote(timed_rows, level, warmup=warm_rows)
                    base_connects.note(floor)
                    tags = measured.get("by_tag", {})
                    out["levels"].append({
                        "concurrency": level, "flags": measured, "baseline_least_work": least,
                        "baseline_row": floor,
                        "p99_ratio": ratio(measured["p99_ms"], floor["p99_ms"]),
                        "throughput_ratio": ratio(measured["per_s"], floor["per_s"]),
                        "least_work_p50_ratio": ratio(measured["p50_ms"], least["p50_ms"]),
                        "least_work_throughput_ratio": ratio(measured["per_s"], least["per_s"]),
                        "surname_vs_reference_p50": ratio(
                            tags.get("surname", {}).get("p50_ms", 0.0),
                            tags.get("reference", {}).get("p50_ms", 0.0),
                        ),
                    })
        finally:
            await stop(service)
            await base_engine.dispose()
            await least_engine.dispose()
    return out


def _cpu_per_request(since: float, answered: int) -> float:
    """This process's CPU time since `since` per request answered, in ms (the server's work: the
    requesters run in another process; the figure includes the warm-up requests)."""
    return round((time.process_time() - since) * 1000 / max(1, answered), 2)


# --- ingest -------------------------------------------------------------------------------------


def _event(kind: str, ref: str, data: dict[str, Any], at: datetime = NOW) -> dict[str, Any]:
    return {
        "id": f"bench-{kind}-{uuid.uuid4().hex}", "type": kind,
        "occurred_at": at.isoformat().replace("+00:00", "Z"), "visor_ref": ref, "data": data,
    }


def mixed_event(i: int, sizes: Sizes, rng: random.Random) -> dict[str, Any]:
    """Everyday traffic: visits, notifications and action updates."""
    ref = visor_ref(rng.randint(1, sizes.nominals))
    day = (NOW.date() - timedelta(days=rng.randint(0, 3))).isoformat()
    if i % 3 == 0:
        return _event("visit.recorded", ref, {"visited_on": day})
    if i % 3 == 1:
        return _event("notification.received", ref, {"kind": "weekly", "notified_on": day})
    return _event("action.upsert", ref, {
        "action_id": f"BNEW-{uuid.uuid4().hex[:12]}", "summary": "Fictional action: bench",
        "owner": officer_id(rng.randint(1, sizes.officers)),
        "due_on": (NOW.date() + timedelta(days=30)).isoformat(), "status": "open", "source": "other",
    })


# Single-event runs a bench: casewatch, then each floor, in turn, SINGLE_ROUNDS times; each figure
# is its median round (median_round).
SINGLE_ROUNDS = 3

Measured = dict[str, Any]  # one closed-loop run's summary (bench.loadgen)


def median_round(rounds: Sequence[Measured]) -> Measured:
    """The round of median throughput (the lower of the middle two when even), whole, with every
    round's throughput and CPU an event beside it: one round's figures together, not a median of
    each figure from different rounds."""
    ordered = sorted(rounds, key=lambda r: r["per_s"])
    middle = ordered[(len(ordered) - 1) // 2]
    return {
        **middle,
        "rounds_per_s": [r["per_s"] for r in rounds],
        "rounds_cpu_ms": [r["server_cpu_ms_per_request"] for r in rounds],
    }


async def bench_ingest(db_url: str, sizes: Sizes, singles: int, batches: int) -> dict[str, Any]:
    """Events API throughput: single events at 8 requesters (from a child process) against the
    least work one signed event a request needs, measured in the same run with the same events
    (least_work_ingest_app: a commit a request, and a commit shared by the requests waiting), and
    1000-event batches one after another against raw multi-row inserts of the same rows. Each
    single-event run first sends warmup_size(8) other events, untimed; the server's CPU time per
    event is measured around it (this process holds only the servers). The single events run
    SINGLE_ROUNDS times, the three servers in turn, `singles` new events a round; each server's
    figure is its median round (median_round)."""
    rng = random.Random(11)
    settings = make_settings(db_url, sizes)
    service = await create_service(settings, SystemClock())
    pool_size = settings.database.pool_size
    floor_app, floor_engine, _ = await least_work_ingest_app(db_url, pool_size, group_commit=False)
    group_app, group_engine, floor_group = await least_work_ingest_app(db_url, pool_size, group_commit=True)
    # As run_service (casewatch serve) does once started: the start-up heap (and the data set's
    # leftovers) frozen out of the collector's passes, for casewatch and the floors alike.
    settle_heap(service)
    out: dict[str, Any] = {}
    try:
        async with serve(service.app) as url, serve(floor_app) as floor_url, serve(group_app) as group_url, \
                aiohttp.ClientSession() as http:
            def bodies(n: int) -> list[bytes]:
                return [json.dumps(mixed_event(i, sizes, rng)).encode() for i in range(n)]

            async def singles_to(base: str, engine: Any, timed: list[bytes], warm: list[bytes]) -> Measured:
                # The same events to each server (each has its own table); signed just before.
                def requests(bodies: list[bytes]) -> list[Request]:
                    return [Request("POST", f"{base}/api/v1/events", body, tuple(events_signed(body).items()))
                            for body in bodies]

                connects = ConnectCounter(engine)
                cpu = time.process_time()
                measured = await closed_loop_remote(
                    requests(timed), 8, ok_statuses=(202,), warmup=requests(warm)
                )
                measured["server_cpu_ms_per_request"] = _cpu_per_request(cpu, len(warm) + len(timed))
                connects.note(measured)
                return measured

            assert floor_group is not None
            rounds: dict[str, list[Measured]] = {
                "single": [], "single_least_work": [], "single_least_work_group": [],
            }
            for _ in range(SINGLE_ROUNDS):
                # Each round new events (a repeated id would be a duplicate, less work) and its own
                # warm-up; casewatch and its floors in turn, so a slow spell of the shared machine
                # falls on one round of each rather than on one server's whole figure.
                timed, warm = bodies(singles), bodies(warmup_size(8))
                sent = len(warm) + len(timed)
                before = group_commit_counts(service)
                measured = await singles_to(url, service.engine, timed, warm)
                shared = _per_transaction(group_commit_counts(service), before, sent)
                rounds["single"].append({**measured, **shared})
                rounds["single_least_work"].append(await singles_to(floor_url, floor_engine, timed, warm))
                before = (floor_group.groups, floor_group.transactions)
                measured = await singles_to(group_url, group_engine, timed, warm)
                shared = _per_transaction((floor_group.groups, floor_group.transactions), before, sent)
                rounds["single_least_work_group"].append({**measured, **shared})
            for name, each in rounds.items():
                out[name] = median_round(each)
            for name in ("least_work", "least_work_group"):
                floor = out[f"single_{name}"]
                out[f"single_vs_{name}"] = {
                    "throughput_ratio": ratio(out["single"]["per_s"], floor["per_s"]),
                    "p50_ratio": ratio(out["single"]["p50_ms"], floor["p50_ms"]),
                    "cpu_ratio": ratio(out["single"]["server_cpu_ms_per_request"],
                                       floor["server_cpu_ms_per_request"]),
                }

            batch_events = [[mixed_event(i, sizes, rng) for i in range(1000)] for _ in range(batches)]
            started = time.perf_counter()
            latencies = []
            ok = 0
            for batch in batch_events:
                body = json.dumps(batch).encode()
                t0 = time.perf_counter()
                async with http.post(f"{url}/api/v1/events", data=body, headers=events_signed(body)) as r:
                    await r.read()
                    ok += r.status == 202
                latencies.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - started
            out["batch"] = summary(latencies, elapsed, batches - ok)
            out["batch"]["events_per_s"] = round(1000 * batches / elapsed, 1)
            out["level_changes"] = await _level_change_batch(service, http, url, sizes, rng)
        out["raw_insert_events_per_s"] = await raw_event_inserts(service, 1000 * max(batches, 1))
        out["batch_ratio"] = ratio(out["batch"]["events_per_s"], out["raw_insert_events_per_s"])
        out["single_ratio"] = ratio(out["single"]["per_s"], out["raw_insert_events_per_s"])
    finally:
        await stop(service)
        await floor_engine.dispose()
        await group_engine.dispose()
    return out


def group_commit_counts(service: Service) -> tuple[int, int]:
    """The service's events API so far: transactions that stored more than one request, and
    transactions in all."""
    from casewatch.api.events import _GROUPS

    found = _GROUPS.get(service.sessions)
    return (found.groups, found.transactions) if found is not None else (0, 0)


def _per_transaction(after: tuple[int, int], before: tuple[int, int], requests: int) -> dict[str, Any]:
    """How the run's requests (warm-up included) shared transactions."""
    groups, transactions = after[0] - before[0], after[1] - before[1]
    return {
        "groups": groups, "transactions": transactions,
        "requests_per_transaction": round(requests / transactions, 2) if transactions else None,
    }


async def _level_change_batch(
    service: Service, http: aiohttp.ClientSession, url: str, sizes: Sizes, rng: random.Random
) -> dict[str, Any]:
    """One batch of 1000 nominal.upsert events that each change the MAPPA level: every one
    opens alerts (the case that used to take ~40 s)."""
    refs = sorted({visor_ref(rng.randint(1, sizes.nominals)) for _ in range(1000)})
    async with service.sessions() as session:
        rows = (await session.execute(select(Nominal).where(Nominal.visor_ref.in_(refs)))).scalars().all()
    batch = []
    for n in rows:
        data = {
            "surname": n.surname, "forenames": n.forenames, "date_of_birth": n.date_of_birth.isoformat(),
            "category": n.category, "mappa_level": (n.mappa_level or 0) % 3 + 1, "registered": n.registered,
            "risk_level": n.risk_level, "lead_agency": n.lead_agency, "team": n.team,
            "offender_manager": n.offender_manager, "area": n.area, "on_licence": n.on_licence,
            "no_fixed_abode": n.no_fixed_abode,
            "last_notification_on": n.last_notification_on.isoformat() if n.last_notification_on else None,
            "markers": [{"code": "VIO", "label": "Violence (fictional)", "restricted": False}],
        }
        batch.append(_event("nominal.upsert", n.visor_ref, data, NOW + timedelta(minutes=5)))
    body = json.dumps(batch).encode()
    t0 = time.perf_counter()
    async with http.post(f"{url}/api/v1/events", data=body, headers=events_signed(body)) as r:
        answer = await r.json(content_type=None)
        status = r.status
    elapsed = time.perf_counter() - t0
    return {
        "events": len(batch), "status": status, "alerts_opened": len(answer.get("alerts", [])),
        "seconds": round(elapsed, 3),
    }


async def raw_event_inserts(service: Service, n: int) -> float:
    """The floor for ingest: the same number of event rows, inserted raw, 1000 per statement."""
    table = Base.metadata.tables["events"]
    now = datetime.now(UTC)
    rows = [
        {"id": f"bench-raw-{uuid.uuid4().hex}", "type": "visit.recorded", "visor_ref": visor_ref(1),
         "occurred_at": now, "received_at": now, "source": "bench", "data": {"visited_on": "2026-11-20"}}
        for _ in range(n)
    ]
    started = time.perf_counter()
    for start in range(0, n, 1000):
        async with service.engine.begin() as conn:
            await conn.execute(insert(table), rows[start : start + 1000])
    return round(n / (time.perf_counter() - started), 1)


# --- end to end ---------------------------------------------------------------------------------


class TimedMailSink(MailSink):
    """The SMTP sink, noting when each message was accepted."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted_at: list[tuple[str, float]] = []  # (subject, monotonic time)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            self.accepted_at.append((str(self.messages[-1]["Subject"]), time.monotonic()))
        return reply


WARMUP_EVENTS = 5


def border_check_post(ref: str) -> tuple[bytes, dict[str, str]]:
    """The e2e bench's POST: a signed border check of `ref`, checked now, with no travel notified."""
    now = datetime.now(UTC)
    event = _event("travel.border_alert", ref, {
        "port": "Benchport", "direction": "outbound",
        "checked_at": now.isoformat().replace("+00:00", "Z"),
    }, now)
    body = json.dumps(event).encode()
    return body, events_signed(body)


E2eObserver = Callable[[list[float], list[Call], list[tuple[str, float]]], None]


async def bench_end_to_end(
    db_url: str, sizes: Sizes, count: int, rate: float, *, observe: E2eObserver | None = None
) -> dict[str, Any]:
    """From POST /api/v1/events (a border check with no travel notified: travel.unnotified, to
    the team's Slack channel and its SPOC inbox) to the Slack stand-in receiving the message and
    the SMTP sink accepting the mail. Events go round the teams, `rate` a second, after
    WARMUP_EVENTS untimed ones (other nominals) whose figures are reported apart ("cold").
    `observe` (bench.e2e_trace) is given the timed POSTs' send times, the stand-in's calls and the
    sink's (subject, accepted at), all on time.monotonic()."""
    # A relay, Slack and the event source are processes of their own (bench.relay,
    # bench.slack_process, bench.loadgen.PacedSender). CASEWATCH_BENCH_SINK=thread is the sink of
    # sessions 1-6, a thread of this process whose replies wait for the GIL; CASEWATCH_BENCH_SLACK=loop
    # and CASEWATCH_BENCH_SENDER=loop put the stand-in and the POSTs on the service's own event loop,
    # as in sessions 1-7 (bench/README, end to end, seventh and eighth sessions).
    sink_kind = os.environ.get("CASEWATCH_BENCH_SINK", "process")
    slack_kind = os.environ.get("CASEWATCH_BENCH_SLACK", "process")
    sender_kind = os.environ.get("CASEWATCH_BENCH_SENDER", "process")
    sink: TimedMailSink | ProcessMailSink = TimedMailSink() if sink_kind == "thread" else ProcessMailSink()
    sink.start()
    out: dict[str, Any] = {"alerts": count, "rate_per_s": rate, "sink": sink_kind,
                           "slack_standin": slack_kind, "sender": sender_kind}
    standin = SlackStandIn(token=BOT_TOKEN) if slack_kind == "loop" else ProcessSlackStandIn(token=BOT_TOKEN)
    try:
        async with standin as slack:
            settings = make_settings(
                db_url, sizes,
                slack={"mode": "http", "signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN,
                       "api_url": slack.url},
                smtp={"host": "127.0.0.1", "port": sink.port},
            )
            out["poll_seconds"] = settings.delivery.poll_seconds
            service = await create_service(settings, SystemClock())
            try:
                await start_background(service)
                settle_heap(service)  # as run_service (casewatch serve) does once started
                refs = await _registered_refs(service, WARMUP_EVENTS + count)
                timed = [refs[(WARMUP_EVENTS + i) % len(refs)] for i in range(count)]
                async with serve(service.app) as url, _sender(f"{url}/api/v1/events", sender_kind) as post:

                    async def send(for_refs: list[str]) -> tuple[dict[str, float], list[float]]:
                        # each POST's answer (its commit), in the order sent
                        sent, answered, statuses = await post(for_refs, rate)
                        out["http_errors"] = out.get("http_errors", 0) + sum(s != 202 for s in statuses)
                        return sent, answered

                    # Untimed, as /flags' warm-up requests: the service's first events after start-up
                    # pay for first statements and connections once (reported as "cold").
                    warm_sent, warm_answered = await send(refs[:WARMUP_EVENTS])
                    warm_slack, warm_mail = await _wait_for_arrivals(slack, sink, warm_sent, within=30)
                    out["cold"] = {
                        "events": WARMUP_EVENTS,
                        **{part: [round(x * 1000, 1) for x in latencies] for part, latencies in (
                            ("http_answer_ms", warm_answered), ("slack_ms", warm_slack),
                            ("email_ms", warm_mail),
                        )},
                    }
                    sent, answered = await send(timed)
                    slack_lat, mail_lat = await _wait_for_arrivals(slack, sink, sent, within=60)
                    answer_of = dict(zip(sent, answered, strict=True))
                    slack_after = _past_answer(slack, sink, sent, answer_of, "slack")
                    mail_after = _past_answer(slack, sink, sent, answer_of, "email")
                    if observe is not None:
                        observe(list(sent.values()), list(slack.calls), list(sink.accepted_at))
            finally:
                await stop(service)
    finally:
        sink.stop()
    out["slack"] = summary(slack_lat, 1.0)
    out["email"] = summary(mail_lat, 1.0)
    out["http_answer"] = summary(answered, 1.0)
    for part, latencies in (("slack", slack_lat), ("email", mail_lat), ("http_answer", answered)):
        out[part].pop("per_s")
        # The first timed events may still pay for first statements: they set p99 on short runs.
        out[part]["first_ms"] = [round(x * 1000, 1) for x in latencies[:5]]
        worst = sorted(range(len(latencies)), key=lambda i: latencies[i], reverse=True)[:3]
        out[part]["worst"] = [{"event": i, "ms": round(latencies[i] * 1000, 1)} for i in worst]
    # Past the event's answer (its durable commit): what delivery adds, apart from the ingest.
    for part, arrivals in (("slack", slack_after), ("email", mail_after)):
        out[part]["after_answer"] = summary(arrivals, 1.0)
        out[part]["after_answer"].pop("per_s")
    out["missing"] = {"slack": count - len(slack_lat), "email": count - len(mail_lat)}
    out["p99_ms"] = max(out["slack"]["p99_ms"], out["email"]["p99_ms"])
    from bench.alertmanager import bench_alertmanager  # the peer baseline, same count and rate

    out["alertmanager"] = await bench_alertmanager(count, rate)
    return out


Post = Callable[[list[str], float], Awaitable[Paced]]


@asynccontextmanager
async def _sender(url: str, kind: str) -> AsyncIterator[Post]:
    """The e2e bench's POSTs: from a process of its own, or ("loop") from this one's event loop."""
    if kind == "loop":
        async with aiohttp.ClientSession() as http:

            async def here(keys: list[str], rate: float) -> Paced:
                return await send_paced(http, url, border_check_post, keys, rate)

            yield here
        return
    sender = await asyncio.to_thread(PacedSender(url, border_check_post).start)
    try:
        yield sender.send
    finally:
        await asyncio.to_thread(sender.stop)


async def _registered_refs(service: Service, count: int) -> list[str]:
    """The first `count` registered nominals (nominal n belongs to team ((n - 1) % teams) + 1, so
    they go round the teams, a different nominal each time). Only a registered sex offender has
    travel to notify: a border check of one of the data set's ~5% others opens no
    travel.unnotified, and would show as "missing" though nothing was missed."""
    async with service.sessions() as session:
        refs = (await session.execute(
            select(Nominal.visor_ref).where(Nominal.registered.is_(True))
            .order_by(Nominal.visor_ref).limit(count)
        )).scalars().all()
    return list(refs)


def _past_answer(
    slack: SlackStandIn | ProcessSlackStandIn, sink: TimedMailSink | ProcessMailSink, sent: dict[str, float],
    answer_of: dict[str, float], part: str,
) -> list[float]:
    """Each event's first arrival (Slack or mail) less its POST's answer time, in the order sent."""
    first: dict[str, float] = {}
    if part == "slack":
        for call in slack.calls_to("chat.postMessage"):
            blob = json.dumps(call.args)
            for ref in sent:
                if ref in blob and ref not in first:
                    first[ref] = call.at
    else:
        for subject, at in list(sink.accepted_at):
            for ref in sent:
                if ref in subject and ref not in first:
                    first[ref] = at
    return [first[r] - sent[r] - answer_of[r] for r in sent if r in first]


async def _wait_for_arrivals(
    slack: SlackStandIn | ProcessSlackStandIn, sink: TimedMailSink | ProcessMailSink, sent: dict[str, float],
    within: float,
) -> tuple[list[float], list[float]]:
    deadline = time.monotonic() + within
    while True:
        slack_at: dict[str, float] = {}
        for call in slack.calls_to("chat.postMessage"):
            blob = json.dumps(call.args)
            for ref in sent:
                if ref in blob and ref not in slack_at:
                    slack_at[ref] = call.at
        mail_at: dict[str, float] = {}
        for subject, at in list(sink.accepted_at):
            for ref in sent:
                if ref in subject and ref not in mail_at:
                    mail_at[ref] = at
        if (len(slack_at) == len(sent) and len(mail_at) == len(sent)) or time.monotonic() > deadline:
            return (  # in the order sent
                [slack_at[r] - sent[r] for r in sent if r in slack_at],
                [mail_at[r] - sent[r] for r in sent if r in mail_at],
            )
        await asyncio.sleep(0.05)


# --- commands: scan and digest --------------------------------------------------------------------


def run_command(db_url: str, sizes: Sizes, args: list[str], workdir: Path) -> dict[str, Any]:
    """A casewatch command in its own process: wall time, exit code, its peak memory."""
    config = workdir / "bench.toml"
    write_toml(config, settings_dict(db_url, sizes))
    script = (
        "import resource, sys\n"
        "from casewatch.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(f'BENCH_PEAK_KB={peak}', file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEWATCH_")}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, *args, "--config", str(config)],
        capture_output=True, text=True, env=env, cwd=workdir, check=False,
    )
    elapsed = time.perf_counter() - started
    peak_kb = 0
    for line in done.stderr.splitlines():
        if line.startswith("BENCH_PEAK_KB="):
            peak_kb = int(line.split("=", 1)[1])
    return {
        "exit": done.returncode, "seconds": round(elapsed, 2), "peak_rss_mb": round(peak_kb / 1024, 1),
        "queued_lines": sum("queued" in line for line in done.stdout.splitlines()),
        "stdout": done.stdout.strip().splitlines()[-12:],
        "stderr": [ln for ln in done.stderr.strip().splitlines() if "BENCH_PEAK" not in ln][-5:],
    }


async def bench_scan(db_url: str, sizes: Sizes) -> dict[str, Any]:
    at = NOW.isoformat().replace("+00:00", "Z")
    with tempfile.TemporaryDirectory(prefix="casewatch-bench-") as tmp:
        first = await asyncio.to_thread(run_command, db_url, sizes, ["scan", "--at", at, "--act"], Path(tmp))
        again = await asyncio.to_thread(run_command, db_url, sizes, ["scan", "--at", at, "--act"], Path(tmp))
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            queued = (await conn.execute(select(func.count()).select_from(Delivery))).scalar_one()
    finally:
        await engine.dispose()
    return {"actions": sizes.actions, "first": first, "second": again, "deliveries_queued": queued}


async def bench_digest(db_url: str, sizes: Sizes) -> dict[str, Any]:
    at = NOW.isoformat().replace("+00:00", "Z")
    with tempfile.TemporaryDirectory(prefix="casewatch-bench-") as tmp:
        result = await asyncio.to_thread(run_command, db_url, sizes, ["digest", "--at", at], Path(tmp))
    if result["exit"] == 3:
        result["skipped"] = "casewatch digest is not built yet in this tree (exit 3)"
    # digest_command_wait_seconds = 0: it builds and queues, and exits 1 as nothing was sent yet.
    result["teams_queued"] = result["queued_lines"]
    return result


def memory() -> dict[str, float]:
    return {"bench_process_peak_rss_mb": peak_rss_mb(), "children_peak_rss_mb": peak_rss_mb(children=True)}


__all__ = [
    "bench_digest", "bench_end_to_end", "bench_flags", "bench_ingest", "bench_scan", "memory",
    "percentile", "team_id",
]
