"""Every signed request goes through Bolt's dispatch (bot.http), read by bot.http.SlackRequest:
Bolt's own request, but a form with the word "payload" in it and no `payload` field is read as
the form it is (Bolt took it for an interaction and left the command unanswered, a 404). The
service's endpoint against one that reads each request with Bolt's plain AsyncBoltRequest: the
same signed requests to both, on the same service and database; the status, content type and body
of each answer, and the audit entries each wrote, agree request by request, on SQLite and on
PostgreSQL. The reading itself is compared body by body, generated forms included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.request_verification import RequestVerification
from slack_bolt.request.async_request import AsyncBoltRequest
from sqlalchemy import select

from bot.app import build_bolt_app
from bot.commands import BotDeps
from bot.http import SlackRequest, slack_signature_problem, slack_verifier
from casewatch.store.models import AuditEntry
from casewatch.wiring import bot_deps
from tests.test_bot import (
    ALPHA,
    CR,
    PC,
    PC_SOUTH,
    SIGNING_SECRET,
    SOUTH,
    STRANGER,
    TEAM_ID,
    Bot,
    bot,
    command_body,
    slack_headers,
    sqlite_bot,
)

__all__ = ["bot", "sqlite_bot"]  # the fixtures, used here by name

# (command, text, user): every outcome a slash command has.
REQUESTS = [
    ("/flags", ALPHA, PC),  # found, restricted markers not shown
    ("/flags", ALPHA, CR),  # found, cleared for restricted markers
    ("/flags", "Sampleton", PC),  # several
    ("/flags", "sampleton 03/02/1981", PC),  # surname and date of birth: one
    ("/flags", "Nobodyhere", PC),  # not found
    ("/flags", "", PC),  # usage
    ("/flags", "Sampleton 31/02/1981", PC),  # unreadable date
    ("/flags", SOUTH, PC),  # another team's: a reason is needed
    ("/flags", f"{SOUTH} reason: fictional enquiry", PC),
    ("/flags", SOUTH, PC_SOUTH),
    ("/flags", "1980/0012345Z", CR),  # by PNC ID
    ("/flags", ALPHA, STRANGER),  # not in the directory: refused
    ("/flags", "a\u202eb", PC),  # a format character
    ("/tasks", "", PC),
    ("/tasks", "", STRANGER),
    ("/ack", "", PC),
    ("/ack", "A-NOPE00", PC),
    ("/nope", ALPHA, PC),  # not ours: Bolt's 404
]

AUDIT_COLUMNS = ("at", "actor", "action", "subject", "purpose", "details", "nominals", "content_hash")


async def _audit_after(bot: Bot, last_id: int) -> list[tuple[Any, ...]]:
    async with bot.service.sessions() as session:
        newer = select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id)
        rows = await session.execute(newer)
        return [tuple(getattr(e, c) for c in AUDIT_COLUMNS) for e in rows.scalars()]


async def _last_audit_id(bot: Bot) -> int:
    async with bot.service.sessions() as session:
        last = select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1)
        found = (await session.execute(last)).scalar()
        return int(found or 0)


@asynccontextmanager
async def _bolt_only(bot: Bot, deps: BotDeps) -> AsyncIterator[TestClient[Any, Any]]:
    """An endpoint as bot.http's, but each request read by Bolt's plain AsyncBoltRequest."""
    app = web.Application()
    bolt = build_bolt_app(bot.service.settings, deps, process_before_response=True)
    verifier = slack_verifier(SIGNING_SECRET, bot.service.ctx.clock)
    for middleware in bolt._async_middleware_list:  # as mount_slack: Bolt checks on the same clock
        if isinstance(middleware, RequestVerification):
            middleware._verifier = verifier

    async def handle(request: web.Request) -> web.StreamResponse:
        body = (await request.read()).decode()
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert slack_signature_problem(body, headers, verifier) is None
        plain = AsyncBoltRequest(body=body, query=request.query_string, headers=dict(headers))
        return await to_aiohttp_response(await bolt.async_dispatch(plain))

    app.router.add_post("/slack/events", handle)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def _answer(client: TestClient[Any, Any], body: bytes) -> tuple[int, str | None, bytes]:
    resp = await client.post("/slack/events", data=body, headers=slack_headers(body))
    return resp.status, resp.headers.get("Content-Type"), await resp.read()


@pytest.fixture
def dispatches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The requests handed to Bolt's dispatch (their command field)."""
    seen: list[str] = []
    original = AsyncApp.async_dispatch

    async def counted(self: Any, req: Any) -> Any:
        seen.append(str(req.body.get("command", "")))
        return await original(self, req)

    monkeypatch.setattr(AsyncApp, "async_dispatch", counted)
    return seen


async def _compare(bot: Bot, bodies: list[bytes], dispatches: list[str]) -> list[str]:
    """Each body to both endpoints; returns the commands the service's endpoint dispatched."""
    dispatched: list[str] = []
    async with _bolt_only(bot, bot_deps(bot.service)) as bolt_only:
        for body in bodies:
            before = await _last_audit_id(bot)
            dispatches.clear()
            served = await _answer(bot.client, body)
            dispatched += dispatches
            served_audit = await _audit_after(bot, before)
            middle = await _last_audit_id(bot)
            through_bolt = await _answer(bolt_only, body)
            bolt_audit = await _audit_after(bot, middle)
            assert served == through_bolt, body
            assert served_audit == bolt_audit, body
    return dispatched


async def test_slash_commands_go_through_bolt_and_answer_as_bolt_reads_them(
    bot: Bot, dispatches: list[str]
) -> None:
    bodies = [command_body(command, text, user) for command, text, user in REQUESTS]
    dispatched = await _compare(bot, bodies, dispatches)
    assert dispatched == [command for command, _, _ in REQUESTS]  # each once, through Bolt
    # And the comparison compared something: the answers and the entries were there.
    assert len(await _audit_after(bot, 0)) >= 2 * 12


async def test_bodies_that_are_no_plain_command_read_as_bolt_reads_them(
    sqlite_bot: Bot, dispatches: list[str]
) -> None:
    ssl_check = urlencode({"ssl_check": "1", "token": "legacy-token", "command": "/flags"}).encode()
    typed = urlencode({"command": "/flags", "text": ALPHA, "user_id": PC, "type": "x"}).encode()
    as_json = b'{"command": "/flags", "text": "VS-0001001", "user_id": "U0PC1234", "team_id": "' + \
        TEAM_ID.encode() + b'"}'
    interaction = urlencode({"payload": '{"type": "block_actions", "user": {"id": "U0PC1234"}}'}).encode()
    dispatched = await _compare(sqlite_bot, [ssl_check, typed, as_json, interaction], dispatches)
    assert dispatched == ["/flags", "/flags", "/flags", ""]


async def test_a_command_whose_text_says_payload_is_answered(sqlite_bot: Bot, dispatches: list[str]) -> None:
    """Bolt reads any form with "payload" anywhere in it as an interaction, finds no `payload`
    field and no listener, and answers 404: the officer sees nothing. Here it is a search."""
    body = command_body("/flags", "payloadperson", PC)
    before = await _last_audit_id(sqlite_bot)
    status, _, answer = await _answer(sqlite_bot.client, body)
    assert dispatches == ["/flags"]  # through Bolt's dispatch, read as the command it is
    assert status == 200
    assert b"no nominal" in answer.lower(), answer
    audit = await _audit_after(sqlite_bot, before)
    assert [row[2] for row in audit] == ["flags.lookup"]
    async with _bolt_only(sqlite_bot, bot_deps(sqlite_bot.service)) as bolt_only:
        assert (await _answer(bolt_only, body))[0] == 404  # Bolt's plain reading: unanswered


FORM = {"content-type": "application/x-www-form-urlencoded"}


def _read(body: str, headers: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Bolt's reading and ours: (Bolt's body, our body, the context fields that differ)."""
    plain = AsyncBoltRequest(body=body, headers=dict(headers))
    ours = SlackRequest(body=body, headers=dict(headers))
    context_keys = set(plain.context) | set(ours.context)
    differ = {k: (plain.context.get(k), ours.context.get(k)) for k in context_keys
              if plain.context.get(k) != ours.context.get(k)}
    return plain.body, ours.body, differ


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("", FORM),
        (urlencode([("command", "/flags"), ("text", "x"), ("text", "y"), ("empty", "")]), FORM),
        (urlencode({"command": "/flags", "payload": "{}"}), FORM),
        (urlencode({"payload": '{"type": "view_submission", "team": {"id": "T0X"}}'}), FORM),
        ('{"type": "event_callback", "team_id": "T0X", "event": {"type": "app_home_opened"}}', FORM),
        ('{"payload": 1}', FORM),
        ("command=/flags&text=payload", {"content-type": "application/json"}),
        ("{}", FORM),
        ("{payload}", FORM),
    ],
)
def test_what_bolt_reads_we_read_the_same(body: str, headers: dict[str, Any]) -> None:
    try:
        plain_body, our_body, differ = _read(body, headers)
    except ValueError:  # Bolt cannot read it: neither can we
        with pytest.raises(ValueError):
            SlackRequest(body=body, headers=dict(headers))
        return
    assert our_body == plain_body and differ == {}


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_KEYS = st.sampled_from(["command", "text", "user_id", "team_id", "channel_id", "response_url", "token"])
_VALUES = st.one_of(_TEXT, st.just("payload"), _TEXT.map(lambda t: f"{t}payload{t}"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=8))
def test_a_form_without_a_payload_field_is_read_as_the_form(pairs: list[tuple[str, str]]) -> None:
    body = urlencode(pairs)
    plain_body, our_body, differ = _read(body, FORM)
    form = dict(pairs)
    assert our_body == form
    if "payload" not in body:
        assert plain_body == our_body and differ == {}  # Bolt's reading, untouched
    ours = SlackRequest(body=body, headers=dict(FORM))
    copy = ours.to_copyable()  # as a lazy listener gets it
    assert isinstance(copy, SlackRequest) and copy.body == form
    assert copy.context.get("user_id") == ours.context.get("user_id")
    assert copy.context.get("team_id") == ours.context.get("team_id")
