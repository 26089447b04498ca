"""Envelope validation (casewatch.ingest.schema, the types of casewatch.model.events): per-field
errors with index and dotted path, strict types, and never an exception on any JSON value."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casewatch.ingest.schema import MAX_BATCH, FieldError, parse_envelopes
from casewatch.model.events import EVENT_CLASSES, EVENT_TYPES, EnvelopeBase
from tests.support import SAMPLE_DATA, T0, envelope, nominal_data


def errors_of(raw: Any) -> list[tuple[int, str]]:
    envelopes, errors = parse_envelopes(raw)
    assert envelopes == [] or not errors
    return [(e.index, e.field) for e in errors]


def only_error(raw: Any) -> FieldError:
    envelopes, errors = parse_envelopes(raw)
    assert envelopes == []
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("event_type", sorted(SAMPLE_DATA))
def test_every_sample_event_is_valid(event_type: str) -> None:
    envelopes, errors = parse_envelopes(envelope(event_type))
    assert errors == []
    assert [e.type for e in envelopes] == [event_type]


def test_every_contract_type_has_a_schema() -> None:
    assert set(EVENT_TYPES) == {
        "nominal.upsert",
        "notification.received",
        "travel.notified",
        "travel.cancelled",
        "travel.border_alert",
        "mappa.level_changed",
        "recall.issued",
        "recall.returned",
        "detention.started",
        "detention.ended",
        "change.detected",
        "action.upsert",
        "visit.recorded",
        "meeting.held",
        "rmp.reviewed",
        "order.upsert",
    }


@pytest.mark.parametrize(("event_type", "event_class"), EVENT_CLASSES.items())
def test_each_type_parses_to_its_own_classes(event_type: str, event_class: type[EnvelopeBase]) -> None:
    raw = envelope(event_type)
    [env], errors = parse_envelopes(raw)
    assert errors == [] and type(env) is event_class and env.type == event_type
    assert type(env.data) is EVENT_TYPES[event_type] and env.raw is raw


_KNOWN = "unknown event type; known types: " + ", ".join(EVENT_TYPES)
# (envelope, every error as (field, message) in the reply's order). The union's tag never shows in
# a path; the envelope's errors come before its data's; an unknown type leaves the data unchecked.
ERROR_ORDER_CASES: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
    (
        {**envelope("action.upsert", due_on=None, owner=""), "id": 5, "extra": 1},
        [
            ("id", "must be a string"),
            ("extra", "is not a known field"),
            ("data.owner", "String should have at least 1 character"),
            ("data.due_on", "must be a date string YYYY-MM-DD"),
        ],
    ),
    ({**envelope("visit.recorded", visited_on=1), "type": "visit.planned"}, [("type", _KNOWN)]),
    ({**envelope("visit.recorded"), "type": None, "visor_ref": " "}, [
        ("type", "must be a string"),
        ("visor_ref", "must be 1 to 32 letters, digits, '-' or '/', starting with a letter or digit"),
    ]),
    ({**envelope("visit.recorded"), "data": []}, [("data", "must be an object")]),
    ({k: v for k, v in envelope("visit.recorded").items() if k != "data"}, [("data", "is required")]),
    (
        envelope("recall.issued", recall_type="emergency", emergency=True),
        [("data.emergency", "is not a known field")],
    ),
]


@pytest.mark.parametrize(("raw", "expected"), ERROR_ORDER_CASES)
def test_errors_in_order_with_the_senders_paths(raw: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    envelopes, errors = parse_envelopes(raw)
    assert envelopes == [] and [(e.field, e.message) for e in errors] == expected


def test_valid_envelope_is_typed_and_in_utc() -> None:
    raw = envelope("action.upsert", occurred_at="2026-07-01T10:00:00+01:00")
    [env], errors = parse_envelopes(raw)
    assert errors == []
    assert env.occurred_at == datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    assert env.data.due_on == date(2026, 12, 1)
    assert env.raw is raw
    [border], _ = parse_envelopes(envelope("travel.border_alert", checked_at="2026-07-01T10:00:00.250+01:00"))
    assert border.data.checked_at == datetime(2026, 7, 1, 9, 0, 0, 250000, tzinfo=UTC)


# One row per kind of field problem: (event type, data overrides, field, words in the message).
FIELD_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("action.upsert", {"due_on": None}, "data.due_on", "date"),
    ("action.upsert", {"due_on": "2026-02-30"}, "data.due_on", "real calendar date"),
    ("action.upsert", {"due_on": "01/12/2026"}, "data.due_on", "YYYY-MM-DD"),
    ("action.upsert", {"due_on": 20261201}, "data.due_on", "date string"),
    ("action.upsert", {"status": "closed"}, "data.status", "'open' or 'done'"),
    ("action.upsert", {"source": "MAPP"}, "data.source", "mapp_meeting"),
    ("action.upsert", {"owner": ""}, "data.owner", "at least 1"),
    ("action.upsert", {"owner": "x" * 65}, "data.owner", "at most 64"),
    ("action.upsert", {"summary": "bad\x00byte"}, "data.summary", "control characters"),
    ("action.upsert", {"summary": "   "}, "data.summary", "blank"),
    ("action.upsert", {"summary": 12}, "data.summary", "string"),
    ("action.upsert", {"priority": "high"}, "data.priority", "not a known field"),
    ("nominal.upsert", {"mappa_level": "2"}, "data.mappa_level", "1, 2, 3 or null"),
    ("nominal.upsert", {"mappa_level": True}, "data.mappa_level", "1, 2, 3 or null"),
    ("nominal.upsert", {"mappa_level": 4}, "data.mappa_level", "1, 2, 3 or null"),
    ("nominal.upsert", {"category": 1}, "data.category", "'1'"),
    ("nominal.upsert", {"registered": "yes"}, "data.registered", "true or false"),
    ("nominal.upsert", {"registered": 1}, "data.registered", "true or false"),
    ("nominal.upsert", {"risk_level": "very high"}, "data.risk_level", "very_high"),
    ("nominal.upsert", {"lead_agency": "nca"}, "data.lead_agency", "probation"),
    ("nominal.upsert", {"date_of_birth": "1899-12-31"}, "data.date_of_birth", "1900"),
    ("nominal.upsert", {"surname": "x" * 101}, "data.surname", "at most 100"),
    ("nominal.upsert", {"surname": "Tab\tin name"}, "data.surname", "control characters"),
    ("nominal.upsert", {"markers": "VIO"}, "data.markers", "list"),
    ("nominal.upsert", {"markers": [{"code": "VIO"}]}, "data.markers.0.label", "required"),
    (
        "nominal.upsert",
        {"markers": [{"code": "VIO", "label": "x", "restricted": "no"}]},
        "data.markers.0.restricted",
        "true or false",
    ),
    ("nominal.upsert", {"markers": [{"code": "V", "label": "x"}] * 101}, "data.markers", "at most 100"),
    ("nominal.upsert", {"aliases": ["ok", 5]}, "data.aliases.1", "string"),
    ("nominal.upsert", {"last_notification_on": "2026-13-01"}, "data.last_notification_on", "calendar"),
    ("notification.received", {"kind": "annual"}, "data.kind", "periodic"),
    ("travel.notified", {"destination": "fr"}, "data.destination", "ISO 3166"),
    ("travel.notified", {"destination": "XX"}, "data.destination", "ISO 3166"),
    ("travel.notified", {"return_on": "2026-11-30"}, "data.return_on", "before departure_on"),
    ("travel.border_alert", {"direction": "in"}, "data.direction", "inbound"),
    ("travel.border_alert", {"checked_at": "2026-11-20T08:00:00"}, "data.checked_at", "no timezone"),
    ("travel.border_alert", {"checked_at": "2026-11-20"}, "data.checked_at", "offset"),
    ("travel.border_alert", {"checked_at": "9999-12-31T23:59:59-01:00"}, "data.checked_at", "9000"),
    ("mappa.level_changed", {"to_level": 1}, "data.to_level", "differ"),
    ("mappa.level_changed", {"rationale": None}, "data.rationale", "string"),
    ("recall.issued", {"recall_type": "FIXED_TERM"}, "data.recall_type", "fixed_term"),
    ("recall.returned", {"returned_at": 1732000000}, "data.returned_at", "date-time string"),
    ("visit.recorded", {"visited_on": "2026-11-19T10:00:00Z"}, "data.visited_on", "YYYY-MM-DD"),
]


@pytest.mark.parametrize(("event_type", "overrides", "field", "words"), FIELD_CASES)
def test_field_errors_name_the_field(
    event_type: str, overrides: dict[str, Any], field: str, words: str
) -> None:
    error = only_error(envelope(event_type, **overrides))
    assert (error.index, error.field) == (0, field)
    assert words in error.message


@pytest.mark.parametrize("missing", sorted(SAMPLE_DATA["action.upsert"]))
def test_missing_data_field(missing: str) -> None:
    data = dict(SAMPLE_DATA["action.upsert"])
    del data[missing]
    error = only_error(envelope("action.upsert", data))
    assert (error.field, error.message) == (f"data.{missing}", "is required")


def test_optional_fields_may_be_left_out() -> None:
    [env], errors = parse_envelopes(
        envelope("travel.notified", {"departure_on": "2026-12-01", "destination": "IE"})
    )
    assert errors == []
    assert env.data.return_on is None
    [nominal], errors = parse_envelopes(envelope("nominal.upsert", nominal_data(mappa_level=None)))
    assert errors == [] and nominal.data.mappa_level is None and nominal.data.aliases == []


ENVELOPE_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"id": ""}, "id", "at least 1"),
    ({"id": "x" * 201}, "id", "at most 200"),
    ({"id": 123}, "id", "string"),
    ({"id": "line\nbreak"}, "id", "control characters"),
    ({"type": "nominal.delete"}, "type", "unknown event type"),
    ({"type": None}, "type", "string"),
    ({"occurred_at": "2026-11-20T09:30:00"}, "occurred_at", "no timezone"),
    ({"occurred_at": "yesterday"}, "occurred_at", "ISO 8601"),
    ({"occurred_at": "2026-11-31T09:30:00Z"}, "occurred_at", "real date"),
    ({"visor_ref": "VS 0001"}, "visor_ref", "letters, digits"),
    ({"visor_ref": "V" * 33}, "visor_ref", "1 to 32"),
    ({"visor_ref": ""}, "visor_ref", "1 to 32"),
    ({"data": []}, "data", "object"),
    ({"source": "visor"}, "source", "not a known field"),
]


@pytest.mark.parametrize(("overrides", "field", "words"), ENVELOPE_CASES)
def test_envelope_errors(overrides: dict[str, Any], field: str, words: str) -> None:
    raw = {**envelope("visit.recorded"), **overrides}
    error = only_error(raw)
    assert error.field == field
    assert words in error.message


@pytest.mark.parametrize("missing", ["id", "type", "occurred_at", "visor_ref", "data"])
def test_missing_envelope_field(missing: str) -> None:
    raw = envelope("visit.recorded")
    del raw[missing]
    error = only_error(raw)
    assert (error.field, error.message) == (missing, "is required")


def test_unknown_type_message_does_not_echo_the_input() -> None:
    error = only_error({**envelope("visit.recorded"), "type": "Testperson, Alex"})
    assert "Testperson" not in error.message and "visit.recorded" in error.message


def test_errors_of_a_batch_carry_their_index_and_all_problems() -> None:
    batch = [
        envelope("visit.recorded"),
        envelope("action.upsert", due_on="2026-02-30", status="closed"),
        envelope("visit.recorded"),
        {**envelope("recall.issued", recall_type="x"), "occurred_at": "2026-11-20T09:30:00"},
        "not an envelope",
    ]
    assert errors_of(batch) == [
        (1, "data.due_on"),
        (1, "data.status"),
        (3, "occurred_at"),
        (3, "data.recall_type"),
        (4, ""),
    ]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ([], "at least one"),
        ([envelope("visit.recorded")] * (MAX_BATCH + 1), "at most 1000"),
        ("a string", "object"),
        (42, "object"),
        (None, "object"),
    ],
)
def test_body_errors(raw: Any, words: str) -> None:
    error = only_error(raw)
    assert (error.index, error.field) == (0, "")
    assert words in error.message


def test_a_full_batch_is_fine() -> None:
    envelopes, errors = parse_envelopes([envelope("visit.recorded") for _ in range(MAX_BATCH)])
    assert errors == [] and len(envelopes) == MAX_BATCH


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    event_type=st.sampled_from(sorted(SAMPLE_DATA)),
    field=st.text(max_size=12),
    value=json_values,
    where=st.sampled_from(["data", "envelope"]),
)
def test_never_raises_on_any_json(event_type: str, field: str, value: Any, where: str) -> None:
    raw = envelope(event_type)
    keys = list(raw["data"] if where == "data" else raw)
    target = raw["data"] if where == "data" else raw
    target[keys[hash(field) % len(keys)] if field.isdigit() or not field else field] = value
    envelopes, errors = parse_envelopes(raw)
    assert bool(envelopes) != bool(errors)
    for error in errors:
        assert isinstance(error.message, str) and error.message


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_never_raises_on_any_body(raw: Any) -> None:
    envelopes, errors = parse_envelopes(raw)
    assert errors and not envelopes


@pytest.mark.parametrize(
    "key", ["\nbad", "evil\x1b[2J", "bidi\u202e", "k" * 65, "sp ace", "dotted.key", "\u00e9t\u00e9"]
)
def test_unknown_keys_are_named_only_when_plain(key: str) -> None:
    raw = {
        "id": "e1", "type": "visit.recorded", "occurred_at": "2026-11-20T09:30:00Z",
        "visor_ref": "VS-1", "data": {"visited_on": "2026-11-20", key: 1},
    }
    _, errors = parse_envelopes(raw)
    assert [(e.field, e.message) for e in errors] == [("data.(unknown key)", "is not a known field")]
    _, errors = parse_envelopes({**raw, "data": {"visited_on": "2026-11-20"}, key: 1})
    assert [e.field for e in errors] == ["(unknown key)"]


def test_a_plain_unknown_key_is_named() -> None:
    raw = {
        "id": "e1", "type": "visit.recorded", "occurred_at": "2026-11-20T09:30:00Z",
        "visor_ref": "VS-1", "data": {"visited_on": "2026-11-20", "visited_by": "PC1"},
    }
    assert [e.field for e in parse_envelopes(raw)[1]] == ["data.visited_by"]


def test_with_the_clock_an_event_from_the_future_is_refused_and_the_batch_with_it() -> None:
    """Issue 18 review: occurred_at more than max_ahead_seconds after `now` is refused (a batch is
    all or nothing); without `now` (no clock to compare with) it is not checked."""
    ok = envelope("visit.recorded", occurred_at=T0)
    ahead = envelope("visit.recorded", occurred_at=T0 + timedelta(seconds=61))
    envelopes, errors = parse_envelopes([ok, ahead], now=T0, max_ahead_seconds=60)
    assert envelopes == [] and [(e.index, e.field) for e in errors] == [(1, "occurred_at")]
    assert "60 seconds after the server's clock" in errors[0].message
    assert len(parse_envelopes([ok, ahead], now=T0, max_ahead_seconds=61)[0]) == 2
    assert len(parse_envelopes([ok, ahead])[0]) == 2
