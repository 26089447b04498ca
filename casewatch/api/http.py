"""The HTTP API's routes: events in, alerts out, health and metrics (docs/openapi.yaml)."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.api.alerts import get_alert, list_alerts
from casewatch.api.common import (
    CONTEXT_KEY,
    METRICS_KEY,
    SESSIONS_KEY,
    json_errors,
    observe,
)
from casewatch.api.events import post_events
from casewatch.api.health import healthz, metrics, readyz
from casewatch.context import Context
from casewatch.metrics import Metrics

__all__ = ["CONTEXT_KEY", "METRICS_KEY", "SESSIONS_KEY", "ApiService", "add_api_routes"]


class ApiService(Protocol):
    """What the API needs of the service (casewatch.wiring.Service has it)."""

    @property
    def ctx(self) -> Context: ...

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...


def add_api_routes(app: web.Application, service: ApiService) -> None:
    """Register the API on `app`, with its middlewares: request metrics and JSON errors apply
    to every route of the app (also routes others add, such as /slack/events)."""
    app[CONTEXT_KEY] = service.ctx
    app[SESSIONS_KEY] = service.sessions
    if METRICS_KEY not in app:
        app[METRICS_KEY] = Metrics()
    app.middlewares.extend([observe, json_errors])
    app.router.add_post("/api/v1/events", post_events)
    app.router.add_get("/api/v1/alerts", list_alerts)
    app.router.add_get("/api/v1/alerts/{alert_id}", get_alert)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
