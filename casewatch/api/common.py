"""What the API handlers share: app keys, JSON error replies, the signature check, and the two
middlewares (request metrics; every error as JSON, unexpected exceptions as a logged 500)."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.api import auth
from casewatch.context import Context
from casewatch.metrics import Metrics

log = logging.getLogger("casewatch.api")

CONTEXT_KEY = web.AppKey("casewatch.context", Context)
SESSIONS_KEY = web.AppKey("casewatch.sessions", async_sessionmaker[AsyncSession])
METRICS_KEY = web.AppKey("casewatch.metrics", Metrics)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, error: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, "message": message, **extra}, status=status)


def unavailable() -> web.Response:
    reply = json_error(503, "unavailable", "the database is not reachable; nothing was stored, retry later")
    reply.headers["Retry-After"] = "5"
    return reply


def unauthorised(reason: str) -> web.Response:
    return json_error(401, "unauthorized", reason)


def signature_problem(request: web.Request, body: bytes, *, allow_v1: bool = False) -> str | None:
    """Why the request's signature is not acceptable, or None (see casewatch.api.auth). v2 signs
    the method and the request target as sent (`raw_path`: path and query, undecoded); only
    POST /api/v1/events passes `allow_v1` (the body-only scheme)."""
    ctx = request.app[CONTEXT_KEY]
    return auth.check(
        ctx.settings.ingest.secret.get_secret_value(),
        request.headers.get(auth.TIMESTAMP_HEADER),
        request.headers.get(auth.SIGNATURE_HEADER),
        body,
        now=ctx.clock.now(),
        max_skew_seconds=ctx.settings.ingest.max_clock_skew_seconds,
        method=request.method,
        target=request.raw_path,
        allow_v1=allow_v1,
    )


def route_name(request: web.Request) -> str:
    """The route template (bounded label values), not the path a client typed."""
    route = request.match_info.route
    resource = route.resource
    if resource is None or isinstance(request.match_info.http_exception, web.HTTPException):
        return "unmatched"
    return resource.canonical


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_name(request: web.Request) -> str:
    """The method for labels and logs: a client may send any token as a method, and each new
    label value would be a new time series kept for the life of the process."""
    return request.method if request.method in KNOWN_METHODS else "OTHER"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics = request.app[METRICS_KEY]
        method = method_name(request)
        metrics.requests.labels(route_name(request), method, str(status)).inc()
        log.debug("%s %s -> %s in %.1f ms", method, route_name(request), status,
                  (time.perf_counter() - started) * 1000)


ERROR_NAMES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
    500: "internal", 503: "unavailable", 504: "timeout",
}


UNEXPECTED = "unexpected server error; it has been logged"
MALFORMED = (
    "the request is not well-formed HTTP/1.1 (request line, a header, or the body's framing); "
    "nothing was stored"
)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HttpProcessingError as exc:
        # The body's framing broke while a handler read it (a bad chunk, a short body): the
        # client's fault. The exception's message quotes the bytes, so only its type is logged.
        log.info("malformed HTTP request body refused with 400 (%s)", type(exc).__name__)
        reply = json_error(400, "bad_request", MALFORMED)
        reply.force_close()
        return reply
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reply = json_error(exc.status, ERROR_NAMES.get(exc.status, "error"), exc.reason)
        if "Allow" in exc.headers:
            reply.headers["Allow"] = exc.headers["Allow"]
        return reply
    except Exception as exc:
        # The message of a database error can carry bound parameters (personal data): log the
        # exception type and where it happened (file, line, function), never its text or the body.
        frames = "\n".join(
            f"  {frame.filename}:{frame.lineno} in {frame.name}"
            for frame in traceback.extract_tb(exc.__traceback__)
        )
        log.error("unexpected %s on %s %s\n%s", type(exc).__name__, method_name(request),
                  route_name(request), frames)
        return json_error(500, "internal", UNEXPECTED)
