"""The composition root: the only core module that imports bot/, integrations/ and schedules/.

A Service is built from settings and a clock; `run_service()` serves it until stopped. Tests
build the same Service and drive it through its real HTTP app.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.audit.batch import AuditBatcher
from casewatch.audit.quiet import Quiet
from casewatch.bell import Bell, Handoff, OutboxBell
from casewatch.clock import Clock, SystemClock
from casewatch.config import Settings
from casewatch.context import Context
from casewatch.store.engine import is_sqlite, make_engine, make_reader_engine, make_sessionmaker
from casewatch.store.lookup_connections import LookupConnections

if TYPE_CHECKING:
    from bot.commands import BotDeps

log = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[None]]


@dataclass
class Service:
    ctx: Context
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # Rung after each commit that queued deliveries: wakes this process's delivery workers.
    bell: OutboxBell
    # Rung after each commit that wrote audit entries: wakes this process's audit sealer.
    audit_bell: Bell = field(default_factory=Bell)
    # New alerts' deliveries, written claimed by this process's first delivery worker while it runs.
    handoff: Handoff | None = None
    # For answers that only read: an engine beside the writer (SQLite: read-only connections of
    # their own; PostgreSQL: autocommit), sessions of it (the probation API's reads), and the
    # group commit that SQLite's lookups' audit entries share.
    reader_engine: AsyncEngine | None = None
    readers: async_sessionmaker[AsyncSession] | None = None
    audit_batcher: AuditBatcher | None = None
    # The lookups' connections without an ORM session (store.lookup_connections): the readers'
    # engine's, and on SQLite the writer's, for a lookup that finds it idle.
    lookup_readers: LookupConnections | None = None
    lookup_writer: LookupConnections | None = None
    app: web.Application = field(default_factory=web.Application)
    # Background work started by start_background(); stopped in reverse order by stop().
    cleanups: list[Cleanup] = field(default_factory=list)
    heap_settled: bool = False  # settle_heap() froze the start-up heap; stop() thaws it
    # Requests being answered and sessions' transactions in flight: the audit sealer waits for a
    # quiet moment (audit.quiet).
    quiet: Quiet = field(default_factory=Quiet)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings


async def create_service(settings: Settings, clock: Clock | None = None) -> Service:
    """Connect to the database and build the HTTP app (nothing runs in the background yet)."""
    engine = make_engine(settings.database.url, pool_size=settings.database.pool_size)
    bell, audit_bell = OutboxBell(), Bell()
    # Owned by a delivery worker once start_background runs; until then rows are queued unclaimed.
    handoff = Handoff(limit=settings.delivery.batch_size)
    sessions = make_sessionmaker(
        engine, after_outbox_commit=bell.ring, after_audit_commit=audit_bell.ring, handoff=handoff
    )
    ctx = Context(settings, clock or SystemClock())
    service = Service(ctx, engine, sessions, bell, audit_bell, handoff=handoff)
    quiet = service.quiet
    quiet.watch(sessions)
    if is_sqlite(settings.database.url):
        # SQLite has one writer connection: lookups read beside it and share its commits. On
        # PostgreSQL the pool already reads beside writers, and one transaction a lookup (read and
        # audit) is fewer round trips than a read transaction and a shared commit (bench/README).
        service.reader_engine = make_reader_engine(engine, pool_size=settings.database.reader_pool_size)
        service.readers = make_sessionmaker(service.reader_engine)
        service.audit_batcher = AuditBatcher(sessions, ctx)
        service.lookup_readers = LookupConnections(service.reader_engine, in_flight=quiet)
        service.lookup_writer = LookupConnections(engine, after_audit=audit_bell.ring, in_flight=quiet)
    else:
        # PostgreSQL: lookups on a pool of their own in autocommit, their audit entry the last
        # statement (no BEGIN or COMMIT trip; store.make_reader_engine, bot.commands).
        service.reader_engine = make_reader_engine(engine, pool_size=settings.database.pool_size)
        service.readers = make_sessionmaker(service.reader_engine, after_audit_commit=audit_bell.ring)
        service.lookup_readers = LookupConnections(
            service.reader_engine, after_audit=audit_bell.ring, in_flight=quiet
        )
    if service.readers is not None:
        quiet.watch(service.readers)
    service.app = build_app(service)
    return service


def bot_deps(service: Service) -> BotDeps:
    from bot.commands import BotDeps

    return BotDeps(
        service.ctx, service.sessions, lookup_readers=service.lookup_readers,
        lookup_writer=service.lookup_writer, audit_batcher=service.audit_batcher,
    )


def build_app(service: Service) -> web.Application:
    from casewatch.api.http import add_api_routes

    app = web.Application(client_max_size=2 * 1024 * 1024, middlewares=[service.quiet.middleware()])
    add_api_routes(app, service)
    if service.settings.probation.enabled:
        from integrations.probation.http import add_probation_routes

        add_probation_routes(app, service)
    if service.settings.slack.mode == "http":
        from bot.http import mount_slack

        mount_slack(app, service.ctx, service.sessions, deps=bot_deps(service))
    return app


async def start_background(service: Service) -> None:
    """Start the audit sealer, the delivery workers, Slack Socket Mode and the scheduler, as
    configured."""
    from casewatch.api.common import METRICS_KEY
    from casewatch.audit.seal import start_sealer
    from casewatch.delivery.runner import start_delivery
    from integrations.notifiers import build_notifiers, warm_up

    metrics = service.app.get(METRICS_KEY)
    registry = metrics.registry if metrics is not None else None
    # Stopped last (after the HTTP server too): it seals what the others audited on their way out.
    service.cleanups.insert(
        0, start_sealer(service.sessions, service.ctx, service.audit_bell, registry, quiet=service.quiet)
    )
    # SQLite's WAL checkpoint stays in the commits (SQLite's own, every 1000 pages): taking it to a
    # thread of its own (store.checkpoint.start_wal_checkpoints) saved ~2 ms in one commit in twelve
    # but came with more slow commits on this disk in the eighth session's A/B (bench/README).
    notifiers = build_notifiers(service.settings)
    stop_delivery = await start_delivery(
        service.sessions, service.ctx, notifiers, registry=registry, bell=service.bell,
        handoff=service.handoff, quiet=service.quiet,
    )
    # The first alert would otherwise open the Slack session and the SMTP connection itself.
    warming = asyncio.create_task(warm_up(notifiers), name="casewatch-warm-up")

    async def stop_warming_and_delivery() -> None:
        warming.cancel()  # before the notifiers are closed
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await warming
        await stop_delivery()

    service.cleanups.append(stop_warming_and_delivery)
    if service.settings.slack.mode == "socket":
        from bot.socket import start_socket_mode

        socket = await start_socket_mode(service.ctx, service.sessions, deps=bot_deps(service))
        service.cleanups.append(socket)
    if service.settings.schedules.enabled:
        from schedules.service import start_schedules

        # Appended last, so stopped first: no job queues work for delivery workers already gone.
        service.cleanups.append(
            await start_schedules(service.sessions, service.ctx, registry=registry)
        )


def settle_heap(service: Service) -> None:
    """Once started: collect, then freeze what is left (settings, the directory, SQLAlchemy's
    mappers and caches, the libraries' modules) out of the collector's way. A full collection
    walks that whole heap, 70-90 ms here (bench/README), and one that lands mid-request holds
    every alert in flight that long; frozen objects are not walked again."""
    gc.collect()
    gc.freeze()
    service.heap_settled = True


async def stop(service: Service) -> None:
    from casewatch.audit.seal import seal_pending

    for cleanup in reversed(service.cleanups):
        with contextlib.suppress(Exception):
            await cleanup()
    service.cleanups.clear()
    if service.audit_batcher is not None:
        with contextlib.suppress(Exception):
            await service.audit_batcher.close()
    if service.reader_engine is not None and service.reader_engine.pool is not service.engine.pool:
        await service.reader_engine.dispose()
    # What a command built on a Service (digest, demo) audited, chained before it exits.
    if service.audit_bell.rings:
        with contextlib.suppress(Exception):
            await seal_pending(service.sessions, service.ctx)
    await service.engine.dispose()
    if service.heap_settled:
        gc.unfreeze()  # collectable again once this Service is gone (tests, the bench)
        service.heap_settled = False


async def start_http(service: Service) -> int:
    """Start the HTTP server; return the port it listens on (the configured one, or the port the
    system picked for port 0)."""
    from casewatch.api.http import ApiRunner

    runner = ApiRunner(service.app, access_log=None)  # malformed requests answered in JSON
    await runner.setup()
    http = service.settings.http
    site = web.TCPSite(runner, http.host, http.port, reuse_port=http.reuse_port)
    await site.start()
    service.cleanups.insert(0, runner.cleanup)
    addresses = runner.addresses
    return int(addresses[0][1]) if addresses else service.settings.http.port


async def run_service(
    service: Service,
    *,
    stop_event: asyncio.Event | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve HTTP and run the background work until stop_event is set (or forever), then stop
    everything. `on_ready` is told the HTTP port once the service is up."""
    try:
        port = await start_http(service)
        await start_background(service)
        settle_heap(service)
        log.info("casewatch serving on http://%s:%s", service.settings.http.host, port)
        if on_ready is not None:
            on_ready(port)
        await (stop_event or asyncio.Event()).wait()
        log.info("casewatch stopping")
    finally:
        await stop(service)


def run_snapshot_import(args: argparse.Namespace) -> int:
    """`casewatch import --snapshot`: the adapter lives in integrations/snapshot."""
    from integrations.snapshot.command import run

    return run(args)


def run_mail_ingest(args: argparse.Namespace) -> int:
    """`casewatch mail-ingest`: the adapter lives in integrations/mail_ingest."""
    from integrations.mail_ingest.command import run

    return run(args)


def stop_on_signals(stop_event: asyncio.Event) -> None:
    """SIGINT and SIGTERM set stop_event, so the service stops gracefully (call inside the loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop_event.set)
