"""POST /api/v1/events: signed envelopes in, stored durably, 202 with what happened."""

from __future__ import annotations

import json
import logging
import time
import weakref
from typing import Any

from aiohttp import web

from casewatch.api.common import (
    CONTEXT_KEY,
    METRICS_KEY,
    SESSIONS_KEY,
    json_error,
    signature_problem,
    unauthorised,
    unavailable,
)
from casewatch.ingest.group import GroupCommit
from casewatch.ingest.schema import FieldError, parse_envelopes
from casewatch.store.errors import is_unavailable  # the database is away: the sender should retry

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # 1 MiB (contract)
SOURCE = "api"


# One group committer per service (its sessionmaker): concurrent requests share commits.
_GROUPS: weakref.WeakKeyDictionary[Any, GroupCommit] = weakref.WeakKeyDictionary()


def group_commit(request: web.Request) -> GroupCommit:
    sessions = request.app[SESSIONS_KEY]
    found = _GROUPS.get(sessions)
    if found is None:
        found = _GROUPS[sessions] = GroupCommit(sessions, request.app[CONTEXT_KEY], source=SOURCE)
    return found


class InvalidJSON(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidJSON(f"duplicate key {key[:40]!r} in an object")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise InvalidJSON(f"{name} is not a JSON number")


def loads_strict(body: bytes) -> Any:
    """Parse a JSON body: UTF-8, no NaN/Infinity, no duplicate keys. Raises InvalidJSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJSON("the body is not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except InvalidJSON:
        raise
    except json.JSONDecodeError as exc:
        raise InvalidJSON(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidJSON("not valid JSON: nested too deeply") from None
    except ValueError:  # e.g. an integer with more digits than Python will convert
        raise InvalidJSON("not valid JSON: a number is out of range") from None


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than `limit` (checked as it is read, so a missing
    or false Content-Length cannot get more than `limit` bytes into memory)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> web.Response:
    return json_error(413, "too_large", f"the body is larger than {MAX_BODY} bytes (1 MiB)")


def bad_request(errors: list[FieldError]) -> web.Response:
    return web.json_response({"errors": [e.as_json() for e in errors]}, status=400)


async def post_events(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _too_large()
    charset = (request.charset or "utf-8").lower()
    if request.content_type != "application/json" or charset not in ("utf-8", "utf8"):
        return json_error(415, "unsupported_media_type", "Content-Type must be application/json (UTF-8)")
    body = await read_limited(request, MAX_BODY)
    if body is None:
        return _too_large()
    problem = signature_problem(request, body, allow_v1=True)
    if problem is not None:
        return unauthorised(problem)

    try:
        raw = loads_strict(body)
    except InvalidJSON as exc:
        metrics.count_events(rejected=1)
        return bad_request([FieldError(0, "", str(exc))])
    ctx = request.app[CONTEXT_KEY]
    envelopes, errors = parse_envelopes(
        raw, now=ctx.clock.now(), max_ahead_seconds=ctx.settings.ingest.max_clock_skew_seconds
    )
    if errors:
        metrics.count_events(rejected=len(raw) if isinstance(raw, list) else 1)
        return bad_request(errors)

    started = time.perf_counter()
    try:
        result = await group_commit(request).ingest(envelopes)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        log.warning("events API: database unavailable (%s); answered 503", type(exc).__name__)
        return unavailable()
    metrics.ingest_seconds.observe(time.perf_counter() - started)
    metrics.count_events(accepted=result.accepted, duplicates=result.duplicates)
    return web.json_response(
        {"accepted": result.accepted, "duplicates": result.duplicates, "alerts": result.alerts},
        status=202,
    )
