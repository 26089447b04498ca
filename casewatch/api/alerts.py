"""GET /api/v1/alerts and GET /api/v1/alerts/{id}: the alert read API for dashboards and other
systems, signed like the events API (over the empty body). Newest first, keyset-paginated."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy import and_, or_, select

from casewatch.alerts.lifecycle import normalise_alert_id
from casewatch.api.common import SESSIONS_KEY, json_error, signature_problem, unauthorised
from casewatch.model.events import VISOR_REF_PATTERN, canonical_ref
from casewatch.model.text_rules import TextKind, text_problem
from casewatch.store.models import Alert

STATES = ("open", "acknowledged", "resolved")
DEFAULT_LIMIT = 100
MAX_LIMIT = 500

# Every pattern is matched whole (fullmatch): with re.match, "$" also matched before a final "\n".
KIND_PATTERN = r"[a-z][a-z_]{0,31}(\.[a-z][a-z_]{0,31}){0,3}"
# Any team id ingest and the configuration accept: an identifier (text_rules) of 1 to 64 characters.
TEAM_MAX_LENGTH = 64
TEAM_PATTERN = rf".{{1,{TEAM_MAX_LENGTH}}}"
LIMIT_PATTERN = r"[0-9]{1,6}"
CURSOR_PATTERN = r"[A-Za-z0-9_-]{1,200}"
ALERT_ID_PATTERN = r"[A-Za-z0-9 -]{1,20}"
_KIND = re.compile(KIND_PATTERN)
_VISOR_REF = re.compile(VISOR_REF_PATTERN)
_TEAM = re.compile(TEAM_PATTERN)
_CURSOR = re.compile(CURSOR_PATTERN)
_ALERT_ID = re.compile(ALERT_ID_PATTERN)
_PARAM_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")
KNOWN_PARAMS = ("state", "kind", "visor_ref", "team", "limit", "cursor")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def alert_json(alert: Alert) -> dict[str, Any]:
    """The contract's alert object, plus `acknowledged_outcome` (what the acknowledging officer
    said was done), `subject`, `owner` and `due_at`."""
    return {
        "id": alert.id,
        "kind": alert.kind,
        "severity": alert.severity,
        "visor_ref": alert.visor_ref,
        "team": alert.team,
        "state": alert.state,
        "opened_at": _iso(alert.opened_at),
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": _iso(alert.acknowledged_at),
        "acknowledged_outcome": alert.acknowledged_outcome,
        "resolved_at": _iso(alert.resolved_at),
        "summary": alert.summary,
        "subject": alert.subject,
        "owner": alert.owner,
        "due_at": _iso(alert.due_at),
    }


class BadQuery(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _encode_cursor(alert: Alert) -> str:
    raw = json.dumps([_iso(alert.opened_at), alert.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[datetime, str]:
    # b64decode skips characters outside the alphabet ("\n" too): check the whole text first.
    if not _CURSOR.fullmatch(text):
        raise BadQuery("cursor", "is not a cursor this API returned")
    try:
        padded = text + "=" * (-len(text) % 4)
        opened, alert_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        at = datetime.fromisoformat(str(opened))
        # Within the years every stored instant is (casewatch.model.events): year 1 at +14:00 or
        # 9999 at -14:00 has no UTC form, and binding it raised (a 500).
        if at.tzinfo is None or not isinstance(alert_id, str) or not 1900 <= at.year <= 9000:
            raise ValueError
        return at, alert_id
    except (ValueError, TypeError, binascii.Error, UnicodeError, RecursionError):
        raise BadQuery("cursor", "is not a cursor this API returned") from None


def _one(query: Any, name: str) -> str | None:
    """The parameter's one value, checked like any identifier (casewatch.model.text_rules) first."""
    values = query.getall(name, [])
    if len(values) > 1:
        raise BadQuery(name, "given more than once")
    if not values:
        return None
    value = str(values[0])
    problem = text_problem(value, TextKind.IDENTIFIER)
    if problem is not None:
        raise BadQuery(name, problem[1])
    return value


def _filters(query: Any) -> tuple[list[Any], int, tuple[datetime, str] | None]:
    for name in query:
        if name not in KNOWN_PARAMS:
            # The reply names the parameter only when it is a plain short name.
            field = name if _PARAM_NAME.fullmatch(name) else ""
            raise BadQuery(field, f"unknown query parameter; known: {', '.join(KNOWN_PARAMS)}")
    conditions: list[Any] = []
    state = _one(query, "state")
    if state is not None:
        if state not in STATES:
            raise BadQuery("state", f"must be one of {', '.join(STATES)}")
        conditions.append(Alert.state == state)
    for name, pattern, column, hint in (
        ("kind", _KIND, Alert.kind, "an alert kind such as travel.unnotified"),
        ("visor_ref", _VISOR_REF, Alert.visor_ref, "1 to 32 letters, digits, '-' or '/'"),
        ("team", _TEAM, Alert.team, "a team id"),
    ):
        value = _one(query, name)
        if value is not None:
            if not pattern.fullmatch(value):
                raise BadQuery(name, f"must be {hint}")
            conditions.append(column == (canonical_ref(value) if name == "visor_ref" else value))
    limit = DEFAULT_LIMIT
    limit_text = _one(query, "limit")
    if limit_text is not None:
        # ASCII digits only: "\u00b2" passes str.isdigit() and then int() raised (a 500).
        if not re.fullmatch(LIMIT_PATTERN, limit_text) or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise BadQuery("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        limit = int(limit_text)
    cursor_text = _one(query, "cursor")
    cursor = _decode_cursor(cursor_text) if cursor_text is not None else None
    return conditions, limit, cursor


async def list_alerts(request: web.Request) -> web.Response:
    problem = signature_problem(request, b"")
    if problem is not None:
        return unauthorised(problem)
    try:
        conditions, limit, cursor = _filters(request.rel_url.query)
    except BadQuery as exc:
        return web.json_response(
            {"errors": [{"index": 0, "field": exc.field, "message": str(exc)}]}, status=400
        )
    if cursor is not None:
        at, alert_id = cursor
        conditions.append(or_(Alert.opened_at < at, and_(Alert.opened_at == at, Alert.id < alert_id)))
    stmt = (
        select(Alert)
        .where(*conditions)
        .order_by(Alert.opened_at.desc(), Alert.id.desc())
        .limit(limit + 1)
    )
    async with request.app[SESSIONS_KEY]() as session:
        alerts = list((await session.execute(stmt)).scalars())
    more = len(alerts) > limit
    alerts = alerts[:limit]
    return web.json_response(
        {
            "alerts": [alert_json(a) for a in alerts],
            "next_cursor": _encode_cursor(alerts[-1]) if more else None,
        }
    )


async def get_alert(request: web.Request) -> web.Response:
    problem = signature_problem(request, b"")
    if problem is not None:
        return unauthorised(problem)
    typed = request.match_info["alert_id"]
    alert = None
    if _ALERT_ID.fullmatch(typed):
        async with request.app[SESSIONS_KEY]() as session:
            alert = await session.get(Alert, normalise_alert_id(typed))
    if alert is None:
        return json_error(404, "not_found", "no alert with that id")
    return web.json_response(alert_json(alert))
