"""The HTTP API's routes: events in, alerts out, health and metrics (docs/openapi.yaml)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.api.alerts import get_alert, list_alerts
from casewatch.api.common import (
    CONTEXT_KEY,
    ERROR_NAMES,
    MALFORMED,
    METRICS_KEY,
    SESSIONS_KEY,
    UNEXPECTED,
    json_error,
    json_errors,
    observe,
)
from casewatch.api.events import post_events
from casewatch.api.health import healthz, metrics, readyz
from casewatch.context import Context
from casewatch.logs import opening_words
from casewatch.metrics import Metrics

__all__ = ["CONTEXT_KEY", "METRICS_KEY", "SESSIONS_KEY", "ApiRunner", "ApiService", "add_api_routes"]

log = logging.getLogger("casewatch.api")


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, but the answers it makes itself (to a request it cannot
    parse, before any middleware runs, or after an error no middleware caught) are JSON like
    every other error, and what it logs is a fixed line: the parser's message quotes the
    offending bytes (a header, the request line with its query), so neither is logged or
    echoed."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        problem = type(exc).__name__ if exc is not None else "no exception"
        if status >= 500:
            log.error("HTTP %s made by the server itself (%s)", status, problem)
        else:
            log.info("malformed HTTP request refused with %s (%s)", status, problem)
        if request.writer.output_size > 0:  # as aiohttp: a reply is under way, the connection is lost
            raise ConnectionError("response already started; cannot send the error reply")
        if status >= 500:
            reply = json_error(status, ERROR_NAMES.get(status, "internal"), UNEXPECTED)
        else:
            reply = json_error(status, ERROR_NAMES.get(status, "bad_request"), MALFORMED)
        reply.force_close()
        return reply

    def data_received(self, data: bytes) -> None:
        """As aiohttp, but when the C parser meets a framing error in the body of the request
        being handled (a bad chunk after a good one), it queues the error as a next message and
        leaves that request's body open, so the handler waits for the rest forever: fail the
        body instead, and the handler's read answers 400. (aiohttp's pure-Python parser fails the
        body itself.) Internals are read defensively: without them this is aiohttp as it is."""
        queued = len(getattr(self, "_messages", ()))
        super().data_received(data)
        messages: Sequence[Any] = getattr(self, "_messages", ())
        request = getattr(self, "_current_request", None)
        if request is None or len(messages) <= queued:
            return
        error = getattr(messages[-1][0], "exc", None)
        if isinstance(error, HttpProcessingError) and not request.content.is_eof():
            request.content.set_exception(error)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's own error lines (e.g. "Unhandled exception" when the unread rest of a body
        breaks): what happened and the exception type, never its message or traceback, which
        quote the request's bytes."""
        what = opening_words(args[0]) if args and isinstance(args[0], str) else "error"
        exc = kw.get("exc_info")
        kind = type(exc).__name__ if isinstance(exc, BaseException) else "no exception"
        # The unread rest of a body whose framing broke: the client's fault, already answered.
        client_fault = isinstance(exc, HttpProcessingError | RequestPayloadError)
        log.log(logging.INFO if client_fault else logging.ERROR, "HTTP connection: %s (%s)", what, kind)


class _JsonErrorServer(Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """web.AppRunner whose connections answer malformed requests in JSON (JsonErrorRequestHandler).
    Use it wherever the app is served (casewatch.wiring; tests/support's test server)."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # the same object; only which handler it makes changes
        return server


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
