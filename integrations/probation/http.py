"""POST /api/v1/probation/events: HMPPS domain events from a queue bridge (docs/feeds/probation.md).

Authenticated exactly like the events API (v2: method, path and body signed with ingest.secret);
a bad signature is 401 and keeps nothing. Past the signature the answer is 202 with what happened
to each event, also for an event that could not be read (it is kept for a person): a 4xx would
make a queue bridge retry it forever or dead-letter it, and we must keep it. 503 when the
database is away (nothing stored: the bridge should retry), 413/415 for a body no bridge sends.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.api.common import (
    CONTEXT_KEY,
    METRICS_KEY,
    json_error,
    signature_problem,
    unauthorised,
    unavailable,
)
from casewatch.api.events import read_limited
from casewatch.context import Context
from casewatch.ingest.group import GroupCommit
from casewatch.metrics import Metrics
from casewatch.store.errors import is_unavailable
from integrations.probation.envelope import read_body
from integrations.probation.mapping import SOURCE
from integrations.probation.receive import make_counter, receive

log = logging.getLogger(__name__)

ROUTE = "/api/v1/probation/events"
COUNTER_KEY = web.AppKey("casewatch.probation.events", Counter)
# Concurrent requests share commits, as on the events API (casewatch.ingest.group).
GROUP_KEY = web.AppKey("casewatch.probation.group", GroupCommit)
# What is read before the ingest (redeliveries, the nominals named): SQLite's read-only
# connections beside its one writer when the service has them, else the writer's sessions.
READERS_KEY = web.AppKey("casewatch.probation.readers", async_sessionmaker[AsyncSession])


class ProbationService(Protocol):
    """What the endpoint needs of the service (casewatch.wiring.Service has it)."""

    @property
    def ctx(self) -> Context: ...

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...

    @property
    def readers(self) -> async_sessionmaker[AsyncSession] | None: ...


def add_probation_routes(app: web.Application, service: ProbationService) -> None:
    """The endpoint and its counter (casewatch_probation_events_total) on the service's app,
    after casewatch.api.http.add_api_routes (its middlewares, context and metrics)."""
    if METRICS_KEY not in app:
        app[METRICS_KEY] = Metrics()
    app[COUNTER_KEY] = make_counter(app[METRICS_KEY].registry)
    app[GROUP_KEY] = GroupCommit(service.sessions, service.ctx, source=SOURCE)
    app[READERS_KEY] = service.readers or service.sessions
    app.router.add_post(ROUTE, post_probation_events)


def _too_large(limit: int) -> web.Response:
    return json_error(413, "too_large", f"the body is larger than {limit} bytes")


async def post_probation_events(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT_KEY]
    settings = ctx.settings.probation
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return _too_large(limit)
    charset = (request.charset or "utf-8").lower()
    if request.content_type != "application/json" or charset not in ("utf-8", "utf8"):
        return json_error(415, "unsupported_media_type", "Content-Type must be application/json (UTF-8)")
    body = await read_limited(request, limit)
    if body is None:
        return _too_large(limit)
    problem = signature_problem(request, body)
    if problem is not None:
        return unauthorised(problem)
    items = read_body(body, max_batch=settings.max_batch)
    try:
        app = request.app
        group = app[GROUP_KEY]
        reply = await receive(items, app[READERS_KEY], group.sessions, ctx, app[COUNTER_KEY], group.ingest)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        log.warning("probation: database unavailable (%s); answered 503", type(exc).__name__)
        return unavailable()
    return web.json_response(reply, status=202)
