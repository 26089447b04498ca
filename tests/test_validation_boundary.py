"""The validation boundary (issue 12, classes 1 and 2), through the real HTTP app on SQLite and
PostgreSQL: every pattern is matched against the whole value (a final "\\n" no longer slips past
"$"), and every identifier, name and free-text field refuses invisible and layout characters,
with a 400 naming the field and the class of character, never the value.

The fields are walked from the models (the generated JSON schemas), so a new field is covered
as soon as it exists: the walk fails until it has a valid sample value below.
"""

from __future__ import annotations

import copy
import unicodedata
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from casewatch.api import spec
from casewatch.api.alerts import KNOWN_PARAMS
from casewatch.config import ConfigError
from casewatch.lookup.query import parse_query
from casewatch.model.events import EVENT_TYPES, schema_name
from casewatch.model.text_rules import (
    TextKind,
    forbidden_from_unicodedata,
    text_problem,
)
from casewatch.model.unicode_table import FORBIDDEN, UNICODE_VERSION
from casewatch.store.models import Action, Nominal
from casewatch.wiring import Service
from tests.support import SAMPLE_DATA, envelope, make_settings, service_client, signed_get, signed_post

EVENTS = "/api/v1/events"
ALERTS = "/api/v1/alerts"

# Valid values for the optional fields SAMPLE_DATA leaves out, so that every field is walked.
OPTIONAL_SAMPLES: dict[str, dict[str, Any]] = {
    "nominal.upsert": {
        "pnc_id": "98/1234X",
        "release_date": "2020-01-31",
        "licence_expiry": "2030-01-31",
        "aliases": ["Sample Alias"],
        "relevant_date": "2019-12-02",
        "notification_ends_on": "2029-12-01",
        "home_address": "1 Fictional Road, Sampletown",
        "visit_every_days": 90,
        "licence_conditions": ["Fictional condition: reside where approved"],
        "exclusion_zones": ["Fictional Park, Sampletown"],
        "description": "Fictional description: tall, short grey hair",
    },
    "travel.notified": {
        "carrier": "Fictional Ferries",
        "arrival_point": "Dover",
        "notified_at": "2026-11-10T09:00:00Z",
        "departure_at": "2026-12-01T07:30:00Z",
        "trip_id": "TRIP-0001",
    },
    "mappa.level_changed": {"recorded_by": "PC1234"},
    "meeting.held": {"minutes_on_visor_on": "2026-11-19"},
    # what and changed_on are for a change notification only (s.84(1)).
    "notification.received": {"kind": "change", "what": "name", "changed_on": "2026-11-17"},
}
ENVELOPE_TYPE = "visit.recorded"  # the envelope's own fields are walked on this type

_COMPONENTS = spec.generated_components()
_CHARACTER_KINDS = {
    "IdentifierCharacters": "identifier",
    "NameCharacters": "name",
    "TextCharacters": "text",
}
_PATTERNED = {"VisorRef", "Date", "DateTime", "CountryCode"}


def _kind(schema: dict[str, Any]) -> str | None:
    """"identifier", "name", "text", "pattern", "enum", or None (not a string field)."""
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            return _kind(option)
    for part in schema.get("allOf", []):
        name = part.get("$ref", "").rsplit("/", 1)[-1]
        if name in _CHARACTER_KINDS:
            return _CHARACTER_KINDS[name]
    target = schema.get("$ref", "").rsplit("/", 1)[-1]
    if target in _PATTERNED:
        return "pattern"
    enum = schema.get("enum", [])
    return "enum" if enum and all(isinstance(v, str) for v in enum) else None


def _fields(component: str, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, kind) of every string field of a component, into lists and sub-objects."""
    for name, schema in _COMPONENTS[component]["properties"].items():
        path = f"{prefix}{name}"
        if schema.get("type") == "array":
            items = schema["items"]
            if "$ref" in items and _kind(items) is None:
                yield from _fields(items["$ref"].rsplit("/", 1)[-1], f"{path}.0.")
            elif (kind := _kind(items)) is not None:
                yield f"{path}.0", kind
        elif (kind := _kind(schema)) is not None:
            yield path, kind


def walked_fields() -> list[tuple[str, str, str]]:
    """(event type, field as the 400 names it, kind) for the envelope and every event's data."""
    out = [(ENVELOPE_TYPE, path, kind) for path, kind in _fields("Envelope")]
    for event_type, model in EVENT_TYPES.items():
        out += [(event_type, f"data.{path}", kind) for path, kind in _fields(schema_name(model))]
    return out


def base_envelope(event_type: str) -> dict[str, Any]:
    data = {**copy.deepcopy(SAMPLE_DATA[event_type]), **copy.deepcopy(OPTIONAL_SAMPLES.get(event_type, {}))}
    return envelope(event_type, data)


def _locate(raw: dict[str, Any], field: str) -> tuple[Any, str | int]:
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in field.split(".")]
    node: Any = raw
    for part in parts[:-1]:
        node = node[part]
    return node, parts[-1]


def with_value(event_type: str, field: str, change: Any) -> dict[str, Any]:
    """A valid envelope of `event_type` whose `field` is `change(valid value)`."""
    raw = base_envelope(event_type)
    try:
        node, key = _locate(raw, field)
        valid = node[key]
    except (KeyError, IndexError) as exc:
        raise AssertionError(
            f"no valid sample for {event_type} {field}: add one to OPTIONAL_SAMPLES"
        ) from exc
    assert isinstance(valid, str), (event_type, field)
    node[key] = change(valid)
    return raw


def test_the_walk_covers_every_string_field() -> None:
    fields = {(t, f) for t, f, _ in walked_fields()}
    for expected in [
        ("visit.recorded", "visor_ref"),
        ("visit.recorded", "id"),
        ("visit.recorded", "occurred_at"),
        ("nominal.upsert", "data.markers.0.code"),
        ("nominal.upsert", "data.aliases.0"),
        ("travel.notified", "data.destination"),
        ("action.upsert", "data.summary"),
        ("mappa.level_changed", "data.recorded_by"),
    ]:
        assert expected in fields
    string_fields = sum(1 for m in EVENT_TYPES.values() for f in m.model_fields) - 8  # bools, levels, lists
    assert len(fields) >= string_fields


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[tuple[Service, TestClient[Any, Any]]]:
    async with service_client(db_url) as pair:
        yield pair


async def errors_of(client: TestClient[Any, Any], batch: list[dict[str, Any]]) -> dict[int, set[str]]:
    resp = await signed_post(client, EVENTS, batch)
    assert resp.status == 400, await resp.text()
    fields: dict[int, set[str]] = {}
    for error in (await resp.json())["errors"]:
        fields.setdefault(error["index"], set()).add(error["field"])
    return fields


async def test_every_walked_field_has_a_valid_sample(api: tuple[Service, TestClient[Any, Any]]) -> None:
    batch = [with_value(t, f, lambda v: v) for t, f, _ in walked_fields()]
    resp = await signed_post(api[1], EVENTS, batch)
    assert resp.status == 202, await resp.text()


# A suffix, and the kinds of field that must refuse it (free text keeps "\n"; names and text
# may end with a space, identifiers and patterned values may not).
SUFFIXES: list[tuple[str, set[str]]] = [
    ("\n", {"identifier", "name", "pattern", "enum"}),
    ("\r\n", {"identifier", "name", "text", "pattern", "enum"}),
    (" ", {"identifier", "pattern", "enum"}),
    ("\x00", {"identifier", "name", "text", "pattern", "enum"}),
    ("\u2028", {"identifier", "name", "text", "pattern", "enum"}),
]


@pytest.mark.parametrize(("suffix", "kinds"), SUFFIXES, ids=["lf", "crlf", "space", "nul", "u2028"])
async def test_a_trailing_break_or_space_is_refused_in_every_field(
    api: tuple[Service, TestClient[Any, Any]], suffix: str, kinds: set[str]
) -> None:
    cases = [(t, f) for t, f, kind in walked_fields() if kind in kinds]
    batch = [with_value(t, f, lambda v: v + suffix) for t, f in cases]
    errors = await errors_of(api[1], batch)
    assert errors == {i: {field} for i, (_, field) in enumerate(cases)}


# One character of each refused class; the words its message must carry.
INVISIBLE: list[tuple[str, str]] = [
    ("\x1b", "control"),
    ("\x7f", "control"),
    ("\x85", "control"),  # C1 NEL
    ("\u202e", "format"),  # right-to-left override
    ("\u2066", "format"),  # left-to-right isolate
    ("\u200b", "format"),  # zero-width space
    ("\u200d", "format"),  # zero-width joiner
    ("\u2060", "format"),  # word joiner
    ("\ufeff", "format"),  # byte order mark
    ("\u00ad", "format"),  # soft hyphen
    ("\u3164", "format"),  # Hangul filler (default-ignorable)
    ("\ufe0f", "format"),  # variation selector
    ("\U000e0041", "format"),  # tag character
    ("\u2028", "separator"),
    ("\u2029", "separator"),
    ("\u3000", "spaces"),
    ("\u2003", "spaces"),
    ("\ue000", "private-use"),
    ("\u0378", "unassigned"),
    ("\ufdd0", "noncharacters"),
]


@pytest.mark.parametrize(("char", "words"), INVISIBLE, ids=[f"U+{ord(c):04X}" for c, _ in INVISIBLE])
async def test_invisible_and_layout_characters_are_refused_in_every_text_field(
    api: tuple[Service, TestClient[Any, Any]], char: str, words: str
) -> None:
    cases = [(t, f) for t, f, kind in walked_fields() if kind in ("identifier", "name", "text")]
    batch = [with_value(t, f, lambda v: v[:1] + char + v[1:]) for t, f in cases]
    resp = await signed_post(api[1], EVENTS, batch)
    assert resp.status == 400
    errors = (await resp.json())["errors"]
    assert {(e["index"], e["field"]) for e in errors} == {(i, f) for i, (_, f) in enumerate(cases)}
    for error in errors:
        assert words in error["message"] and f"U+{ord(char):04X}" in error["message"], error
        assert char not in error["message"] and "Sample" not in error["message"]


async def test_no_break_space_tab_and_newline_by_kind_of_field(
    api: tuple[Service, TestClient[Any, Any]],
) -> None:
    service, client = api
    identifiers = [(t, f) for t, f, kind in walked_fields() if kind == "identifier"]
    batch = [with_value(t, f, lambda v: v[:1] + "\u00a0" + v[1:]) for t, f in identifiers]
    errors = await errors_of(client, batch)
    assert errors == {i: {f} for i, (_, f) in enumerate(identifiers)}

    name = envelope("nominal.upsert", visor_ref="VS-NBSP01", surname="van\u00a0Testperson")
    text = envelope("action.upsert", action_id="ACT-NBSP01", summary="Step one\n\tStep\u00a0two")
    resp = await signed_post(client, EVENTS, [name, text])
    assert resp.status == 202, await resp.text()
    async with service.sessions() as session:
        nominal = await session.get(Nominal, "VS-NBSP01")
        action = await session.get(Action, "ACT-NBSP01")
    assert nominal is not None and action is not None
    surname, summary = nominal.surname, action.summary
    assert (surname, summary) == ("van\u00a0Testperson", "Step one\n\tStep\u00a0two")

    tab_in_name = envelope("nominal.upsert", surname="Test\tperson")
    assert await errors_of(client, [tab_in_name]) == {0: {"data.surname"}}


@pytest.mark.parametrize("value", [" PC1234", "PC1234 ", "  "])
async def test_identifiers_neither_begin_nor_end_with_a_space(
    api: tuple[Service, TestClient[Any, Any]], value: str
) -> None:
    assert await errors_of(api[1], [envelope("action.upsert", owner=value)]) == {0: {"data.owner"}}


# --- the alerts API's query parameters ------------------------------------------------------------


async def _recall(client: TestClient[Any, Any]) -> str:
    resp = await signed_post(client, EVENTS, [envelope("recall.issued", recall_type="emergency")])
    assert resp.status == 202, await resp.text()
    [alert_id] = (await resp.json())["alerts"]
    return str(alert_id)


async def valid_params(client: TestClient[Any, Any]) -> dict[str, str]:
    """A valid value of every known query parameter (the cursor one the API returned)."""
    await _recall(client)
    second = envelope("recall.issued", recall_type="standard", visor_ref="VS-0000002")
    assert (await signed_post(client, EVENTS, [second])).status == 202
    page = await (await signed_get(client, ALERTS, params={"limit": "1"})).json()
    values = {
        "state": "open",
        "kind": "recall.issued",
        "visor_ref": "VS-0000001",
        "team": "north",
        "limit": "5",
        "cursor": page["next_cursor"],
    }
    assert set(values) == set(KNOWN_PARAMS), "add a valid value for the new query parameter"
    return values


async def test_every_query_parameter_refuses_a_trailing_break_space_or_invisible_character(
    api: tuple[Service, TestClient[Any, Any]],
) -> None:
    client = api[1]
    params = await valid_params(client)
    for name, value in params.items():
        resp = await signed_get(client, ALERTS, params={name: value})
        assert resp.status == 200, (name, await resp.text())
        for suffix in ("\n", "\r\n", " ", "\x00", "\u2028", "\u202e", "\u200b", "\x85"):
            resp = await signed_get(client, ALERTS, params={name: value + suffix})
            assert resp.status == 400, (name, repr(suffix))
            [error] = (await resp.json())["errors"]
            assert error["field"] == name, (name, repr(suffix))
            assert value not in error["message"] or value == "5"


@pytest.mark.parametrize("raw", ["%C2%B2", "%D9%A3", "%EF%BC%95", "+5", "5.0", "0x5", "1e2"])
async def test_limit_is_ascii_digits_only(api: tuple[Service, TestClient[Any, Any]], raw: str) -> None:
    resp = await signed_get(api[1], f"{ALERTS}?limit={raw}")  # "²" was a 500
    assert resp.status == 400
    assert [e["field"] for e in (await resp.json())["errors"]] == ["limit"]


async def test_an_alert_id_with_a_line_break_is_not_found(api: tuple[Service, TestClient[Any, Any]]) -> None:
    client = api[1]
    alert_id = await _recall(client)
    assert (await signed_get(client, f"{ALERTS}/{alert_id}")).status == 200
    for suffix in ("%0A", "%0D%0A", "%00", "%E2%80%A8"):
        resp = await signed_get(client, f"{ALERTS}/{alert_id}{suffix}")
        assert resp.status == 404, suffix


async def test_an_unknown_parameter_name_is_named_only_when_plain(
    api: tuple[Service, TestClient[Any, Any]],
) -> None:
    client = api[1]
    plain = await signed_get(client, f"{ALERTS}?colour=red")
    assert [e["field"] for e in (await plain.json())["errors"]] == ["colour"]
    odd = await signed_get(client, f"{ALERTS}?%E2%80%AEevil%0Aname=1")
    assert odd.status == 400 and [e["field"] for e in (await odd.json())["errors"]] == [""]


# --- other typed text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed", ["smith \u00b2 mar 1980", "smith 1\u00b2 mar 1980", "smith \u0661\u0664 mar 1980"]
)
def test_flags_query_with_unicode_digits_does_not_raise(typed: str) -> None:
    query = parse_query(typed)  # "²" passed str.isdigit() and then int() raised
    assert query is not None and query.date_of_birth is None


def test_flags_dates_and_pnc_ids_are_ascii_digits_matched_whole() -> None:
    from casewatch.lookup.query import pnc_key

    assert pnc_key("98/1234X") == "98/1234X" and pnc_key("\u0669\u0668/1234X") is None
    query = parse_query("smith \u0661\u0664/\u0660\u0663/\u0661\u0669\u0668\u0660")
    assert query is not None and query.date_of_birth is None


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("teams", "id", "north\n"),
        ("teams", "digest_time", "07:00\n"),
        ("teams", "spoc_email", "north.spoc@force.example\n"),
        ("teams", "name", "North\u202eMOSOVO"),
        ("teams", "channel", "C0NORTH\u200b"),
        ("officers", "id", "PC1234\n"),
        ("officers", "slack_user_id", "U0PC1234 "),
        ("officers", "name", "PC\u2028Example"),
    ],
)
def test_configuration_refuses_line_breaks_and_invisible_characters(
    section: str, key: str, value: str
) -> None:
    from tests.support import OFFICERS, TEAMS

    rows = copy.deepcopy(TEAMS if section == "teams" else OFFICERS)
    rows[0][key] = value
    with pytest.raises(ConfigError) as info:
        make_settings("sqlite+aiosqlite:///unused.db", **{section: rows})
    assert key in str(info.value)


def test_schedule_time_is_matched_whole() -> None:
    with pytest.raises(ConfigError, match="retention_time"):
        make_settings("sqlite+aiosqlite:///unused.db", schedules={"retention_time": "04:00\n"})


# --- the character table ---------------------------------------------------------------------------


@pytest.mark.skipif(
    unicodedata.unidata_version != UNICODE_VERSION, reason="the table is pinned to Unicode 14.0.0"
)
def test_the_pinned_table_is_what_unicodedata_says() -> None:
    assert list(FORBIDDEN) == forbidden_from_unicodedata()


def test_kinds_differ_only_in_no_break_space_tab_and_newline() -> None:
    for ch in ("\u00a0", "\t", "\n"):
        assert text_problem(ch, TextKind.IDENTIFIER) is not None
    assert text_problem("a\u00a0b", TextKind.NAME) is None
    assert text_problem("a\tb", TextKind.NAME) is not None
    assert text_problem("a\t\nb\u00a0", TextKind.TEXT) is None
    assert text_problem("a\rb", TextKind.TEXT) is not None
    assert text_problem("Ren\u00e9e \u674e \u0416 \U0001f600", TextKind.IDENTIFIER) is None
