"""The interface documents cannot drift from the code: docs/openapi.yaml is what the generator
(casewatch.api.spec) writes from the validating models, every API route is in it, and every event
type and field is in docs/events.md."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.api import spec
from casewatch.api.http import add_api_routes
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.ingest.schema import parse_envelopes
from casewatch.model.events import EVENT_TYPES, EnvelopeModel, MarkerData
from integrations.probation.http import add_probation_routes
from tests.support import T0, envelope, make_settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


class _Service:
    def __init__(self) -> None:
        self.ctx = Context(make_settings("sqlite+aiosqlite:///unused.db"), FixedClock(T0))
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker()  # never used
        self.readers: async_sessionmaker[AsyncSession] | None = None


def test_every_route_is_in_openapi() -> None:
    """The events API's routes, and the probation feed's (mounted when [probation] enabled)."""
    app = web.Application()
    add_api_routes(app, _Service())
    add_probation_routes(app, _Service())
    text = (DOCS / "openapi.yaml").read_text()
    paths = set(re.findall(r"^  (/\S*):$", text, flags=re.MULTILINE))
    routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert routes == paths


def _spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCS / "openapi.yaml").read_text())
    return loaded


def test_openapi_is_what_the_generator_writes() -> None:
    """The event schemas, value rules and query parameters in docs/openapi.yaml are generated
    from the validating code; a model or pattern changed without regenerating fails here."""
    assert (DOCS / "openapi.yaml").read_text() == spec.expected_text(), (
        "docs/openapi.yaml is out of date: run .venv/bin/python -m casewatch.api.spec"
    )


def test_every_event_type_and_field_is_documented() -> None:
    events_md = (DOCS / "events.md").read_text()
    schemas = _spec()["components"]["schemas"]
    for name in EnvelopeModel.model_fields:
        assert f"| `{name}` |" in events_md, name
        assert name in schemas["Envelope"]["properties"], name
    branches = {
        branch["properties"]["type"]["const"]: branch["properties"]["data"]["$ref"]
        for branch in schemas["Envelope"]["oneOf"]
    }
    assert set(branches) == set(EVENT_TYPES)
    for event_type, model in EVENT_TYPES.items():
        section = events_md.split(f"### `{event_type}`", 1)
        assert len(section) == 2, event_type
        body = section[1].split("\n### ", 1)[0]
        component = branches[event_type].rsplit("/", 1)[1]
        assert set(schemas[component]["properties"]) == set(model.model_fields), event_type
        for field in model.model_fields:
            assert f"| `{field}` |" in body, (event_type, field)
    assert set(schemas["Marker"]["properties"]) == set(MarkerData.model_fields)
    for field in MarkerData.model_fields:
        assert f"`markers[].{field}`" in events_md, field


def _field_rows(markdown: str) -> dict[str, str]:
    """A markdown table's rows: field name -> its type column ("date, required, nullable")."""
    return dict(re.findall(r"^\| `([a-z_]+)` \| ([^|]*) \|", markdown, flags=re.MULTILINE))


def test_events_md_says_what_the_models_accept() -> None:
    """docs/events.md against the models, both ways: its type sections are the event types in the
    union's order, each table lists exactly the type's fields, and each field's column says
    "required" and "nullable" exactly when the parser requires it and accepts null."""
    envelope_part, types_part = (DOCS / "events.md").read_text().split("\n## Event types\n", 1)
    assert set(_field_rows(envelope_part.split("\n## Envelope\n", 1)[1].split("\n### ", 1)[0])) == set(
        EnvelopeModel.model_fields
    )
    sections = re.split(r"^### `([a-z_.]+)`$", types_part, flags=re.MULTILINE)[1:]
    documented = dict(zip(sections[::2], sections[1::2], strict=True))
    assert list(documented) == list(EVENT_TYPES)
    for event_type, model in EVENT_TYPES.items():
        rows = _field_rows(documented[event_type])
        assert set(rows) == set(model.model_fields), event_type
        for name, column in rows.items():
            required = model.model_fields[name].is_required()
            assert ("required" in column, "optional" in column) == (required, not required), name
            _, errors = parse_envelopes(envelope(event_type, **{name: None}))
            accepts_null = not any(e.field == f"data.{name}" for e in errors)
            assert ("nullable" in column) == accepts_null, (event_type, name)


def ecma(pattern: str) -> Callable[[str], bool]:
    """The pattern as a JSON Schema validator reads it (ECMA-262: "$" is the end, not before a
    final newline as in Python's re)."""
    validator = jsonschema_rs.Draft202012Validator({"type": "string", "pattern": pattern})
    return validator.is_valid


def test_spec_states_the_rules_the_api_enforces() -> None:
    """The rules that made valid-per-spec bodies fail before: year bounds, characters, blanks,
    assigned country codes, a level change that changes the level."""
    schemas = _spec()["components"]["schemas"]
    date = ecma(schemas["Date"]["pattern"])
    assert date("1900-01-01") and date("9000-12-31")
    assert not date("1899-12-31") and not date("9001-01-01") and not date("2026-11-20\n")
    assert ecma(schemas["DateTime"]["pattern"])("2026-11-20T09:30:00.123456+01:00")
    assert "XX" not in schemas["CountryCode"]["enum"] and "FR" in schemas["CountryCode"]["enum"]
    identifier = ecma(schemas["IdentifierCharacters"]["pattern"])
    text = ecma(schemas["TextCharacters"]["pattern"])
    for bad in ("\x00", "\x85", "\u202e", "\u200b", "\u2028", "\u00a0", "\u3000", "\ufe0f", "\U000e0001"):
        assert not identifier(f"a{bad}b"), repr(bad)
    assert identifier("VS-D000011 \u00e9\u4e2d\U0001f600") and not identifier("VS-D000011\n")
    assert text("line one\n\tline two") and not text("a\rb")
    assert not ecma(schemas["ActionUpsert"]["properties"]["summary"]["pattern"])(" \n\t ")  # blank
    team = ecma(schemas["NominalUpsert"]["properties"]["team"]["pattern"])
    assert team("north") and team("north team") and not team(" north") and not team("north ")
    pairs = {
        (branch["properties"]["from_level"]["const"], to)
        for branch in schemas["LevelChanged"]["anyOf"]
        for to in branch["properties"]["to_level"]["enum"]
    }
    assert pairs == {(a, b) for a in (1, 2, 3, None) for b in (1, 2, 3, None) if a != b}


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
