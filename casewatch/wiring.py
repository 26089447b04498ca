"""The composition root: the only core module that imports bot/, integrations/ and schedules/.

A Service is built from settings and a clock; `run_service()` serves it until stopped. Tests
build the same Service and drive it through its real HTTP app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.clock import Clock, SystemClock
from casewatch.config import Settings
from casewatch.context import Context
from casewatch.store.engine import make_engine, make_sessionmaker

log = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[None]]


@dataclass
class Service:
    ctx: Context
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    app: web.Application = field(default_factory=web.Application)
    # Background work started by start_background(); stopped in reverse order by stop().
    cleanups: list[Cleanup] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings


async def create_service(settings: Settings, clock: Clock | None = None) -> Service:
    """Connect to the database and build the HTTP app (nothing runs in the background yet)."""
    engine = make_engine(settings.database.url, pool_size=settings.database.pool_size)
    service = Service(Context(settings, clock or SystemClock()), engine, make_sessionmaker(engine))
    service.app = build_app(service)
    return service


def build_app(service: Service) -> web.Application:
    from casewatch.api.http import add_api_routes

    app = web.Application(client_max_size=2 * 1024 * 1024)
    add_api_routes(app, service)
    return app


async def start_background(service: Service) -> None:
    """Start the delivery workers, Slack Socket Mode and the scheduler, as configured."""


async def stop(service: Service) -> None:
    for cleanup in reversed(service.cleanups):
        with contextlib.suppress(Exception):
            await cleanup()
    service.cleanups.clear()
    await service.engine.dispose()


async def run_service(service: Service, *, stop_event: asyncio.Event | None = None) -> None:
    """Serve HTTP and run the background work until stop_event is set (or forever)."""
    runner = web.AppRunner(service.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, service.settings.http.host, service.settings.http.port)
    await site.start()
    service.cleanups.insert(0, runner.cleanup)
    await start_background(service)
    log.info("casewatch serving on http://%s:%s", service.settings.http.host, service.settings.http.port)
    try:
        await (stop_event or asyncio.Event()).wait()
    finally:
        await stop(service)
