"""Property-based fuzzing of the two doors strangers can knock on, through the real aiohttp app:
the Slack endpoint (signed slash commands and button payloads with hostile text) and the events
API (signed bodies of hostile JSON). Always a clear answer below 500; the events API never
stores part of a rejected body. (tests/test_ingest_schema.py fuzzes the schema itself; this is
the HTTP layer and the store behind it.) Fictional data only."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from casewatch.ingest.schema import parse_envelopes
from casewatch.store.models import Event
from tests.support import envelope, service_client, signed_post
from tests.test_bot import PC, STRANGER, Bot, block_action_body, command_body, post_signed
from tests.test_bot import sqlite_bot as sqlite_bot  # noqa: F401 (fixture)

HOSTILE_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=50),  # control characters
    st.sampled_from([
        "'; DROP TABLE nominals; --", "\" OR 1=1 --", "VS-0001001' OR '1'='1", "%", "_", "\\",
        "\x00", "\u202e\u2066", "A" * 5000, "VS-" + "9" * 100, "Robert'); DELETE FROM alerts;--",
    ]),
)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(
    command=st.sampled_from(["/flags", "/tasks", "/ack", "/unknown"]),
    text=HOSTILE_TEXT,
    user=st.sampled_from([PC, STRANGER, "", "U" + "9" * 40]),
)
async def test_slash_commands_with_hostile_text_never_fail(
    sqlite_bot: Bot, command: str, text: str, user: str  # noqa: F811
) -> None:
    resp = await post_signed(sqlite_bot.client, command_body(command, text, user))
    assert resp.status < 500, await resp.text()
    if resp.status == 200 and resp.content_type == "application/json":
        answer: dict[str, Any] = await resp.json()
        assert answer.get("response_type", "ephemeral") == "ephemeral"  # never to a channel


@FUZZ
@given(action=st.sampled_from(["casewatch_ack", "casewatch_flags_show", "other"]), value=HOSTILE_TEXT)
async def test_button_payloads_with_hostile_values_never_fail(
    sqlite_bot: Bot, action: str, value: str  # noqa: F811
) -> None:
    resp = await post_signed(sqlite_bot.client, block_action_body(PC, action, value))
    assert resp.status < 500, await resp.text()


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
async def test_signed_garbage_to_the_slack_endpoint_is_a_4xx(sqlite_bot: Bot, raw: bytes) -> None:  # noqa: F811
    resp = await post_signed(sqlite_bot.client, raw)
    assert resp.status < 500, await resp.text()


def _nested_json(depth: int) -> str:
    """JSON nested `depth` deep, written out (json.dumps itself would recurse that deep)."""
    return '{"k": [' * depth + '"deep"' + "]}" * depth


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE_TEXT, inner, max_size=4),
    max_leaves=20,
)


async def test_hostile_event_bodies_are_4xx_and_store_nothing(sqlite_url: str) -> None:
    async with service_client(sqlite_url) as (service, client):

        async def count(model: Any) -> int:
            async with service.sessions() as session:
                return int((await session.execute(select(func.count()).select_from(model))).scalar_one())

        @FUZZ
        @given(
            data=JSONISH,
            field=st.sampled_from(["visor_ref", "occurred_at", "type", "id", "data"]),
            depth=st.integers(min_value=0, max_value=3000),
        )
        def body_for(data: Any, field: str, depth: int) -> None:
            # One valid envelope next to one hostile one: all or nothing.
            good = envelope("visit.recorded")
            bad = envelope("nominal.upsert")
            bad[field] = "__DEEP__" if depth > 2000 else data
            # A hostile text can still be a valid id or reference ("A"): such an envelope is not
            # hostile, and the batch is rightly stored.
            assume(depth > 2000 or bool(parse_envelopes([bad])[1]))
            text = json.dumps([good, bad]).replace('"__DEEP__"', _nested_json(depth))
            bodies.append(text.encode())

        bodies: list[bytes] = []
        body_for()
        bodies += [b"[" * 100_000, b'{"id": "x", "type": ', b"\xff\xfe", b"null", b"[]", b"{}"]
        events_before = await count(Event)
        for body in bodies:
            resp = await signed_post(client, "/api/v1/events", body)
            assert resp.status < 500, await resp.text()
            if resp.status >= 400:
                assert "errors" in await resp.json() or resp.status in (401, 413, 415)
        # Every hostile envelope was refused, so its valid neighbour was not stored either.
        assert await count(Event) == events_before
