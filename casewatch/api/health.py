"""GET /healthz (the process is up), /readyz (the database answers), /metrics (Prometheus)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from sqlalchemy import text

from casewatch.api.common import METRICS_KEY, SESSIONS_KEY
from casewatch.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 5.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _select_one(request: web.Request) -> None:
    async with request.app[SESSIONS_KEY]() as session:
        await session.execute(text("SELECT 1"))


async def readyz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(_select_one(request), READY_TIMEOUT_SECONDS)
    except Exception as exc:  # any failure to answer means not ready; the type says why
        log.warning("readyz: database not reachable (%s)", type(exc).__name__)
        return web.json_response(
            {"status": "unavailable", "database": "unreachable"}, status=503, headers={"Retry-After": "5"}
        )
    return web.json_response({"status": "ok", "database": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
