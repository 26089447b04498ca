"""The interface documents cannot drift from the code: every API route is in docs/openapi.yaml,
and every event type and field is in docs/events.md and the OpenAPI schemas."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.api.http import add_api_routes
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.ingest.schema import EVENT_TYPES, EnvelopeModel, MarkerData
from tests.support import T0, make_settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


class _Service:
    def __init__(self) -> None:
        self.ctx = Context(make_settings("sqlite+aiosqlite:///unused.db"), FixedClock(T0))
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker()  # never used


def test_every_route_is_in_openapi() -> None:
    app = web.Application()
    add_api_routes(app, _Service())
    text = (DOCS / "openapi.yaml").read_text()
    paths = set(re.findall(r"^  (/\S*):$", text, flags=re.MULTILINE))
    routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert routes == paths


def test_every_event_type_and_field_is_documented() -> None:
    events_md = (DOCS / "events.md").read_text()
    openapi = (DOCS / "openapi.yaml").read_text()
    for name in EnvelopeModel.model_fields:
        assert f"| `{name}` |" in events_md, name
    for event_type, model in EVENT_TYPES.items():
        section = events_md.split(f"### `{event_type}`", 1)
        assert len(section) == 2, event_type
        body = section[1].split("\n### ", 1)[0]
        for field in model.model_fields:
            assert f"| `{field}` |" in body, (event_type, field)
            assert f"        {field}:" in openapi, (event_type, field)
        assert f"const: {event_type}" in openapi
    for field in MarkerData.model_fields:
        assert f"              {field}:" in openapi


def test_every_alert_kind_is_documented() -> None:
    from casewatch.config.routing import DEFAULT_KIND, DEFAULT_ROUTES
    from casewatch.delivery.worker import DELIVERY_FAILED
    from casewatch.triggers.rules import (
        actions,
        border_travel,
        mappa_level,
        notifications,
        recall,
        travel_notice,
    )

    kinds = {*actions.KINDS, *border_travel.KINDS, *mappa_level.KINDS, *notifications.KINDS, *recall.KINDS}
    kinds |= {travel_notice.LATE_NOTICE, DELIVERY_FAILED, *DEFAULT_ROUTES} - {DEFAULT_KIND}
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", (DOCS / "alerts.md").read_text(), re.M))
    assert kinds == documented
