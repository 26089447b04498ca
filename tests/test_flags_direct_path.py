"""bot.http's direct path for slash commands (issue 17: /flags without Bolt's per-request
dispatch) against Bolt's dispatch: the same signed requests, one to the service's endpoint and
one to an endpoint that sends everything through Bolt, on the same service and database; the
status, content type and body of each answer, and the audit entries each wrote, are compared
request by request, on SQLite and on PostgreSQL. Bodies that Bolt would read otherwise (a
`payload` field, JSON, an ssl_check, a command not ours) still go to Bolt. The one deliberate
difference: a command whose text holds the word "payload", which Bolt left unanswered (404)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.request_verification import RequestVerification
from sqlalchemy import select

from bot.app import build_bolt_app, slash_commands
from bot.commands import BotDeps
from bot.http import direct_command, slack_events_handler, slack_verifier
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
    app = web.Application()
    bolt = build_bolt_app(bot.service.settings, deps, process_before_response=True)
    verifier = slack_verifier(SIGNING_SECRET, bot.service.ctx.clock)
    for middleware in bolt._async_middleware_list:  # as mount_slack: Bolt checks on the same clock
        if isinstance(middleware, RequestVerification):
            middleware._verifier = verifier
    app.router.add_post("/slack/events", slack_events_handler(bolt, verifier))  # no direct commands
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


async def _answer(client: TestClient[Any, Any], body: bytes) -> tuple[int, str | None, bytes]:
    resp = await client.post("/slack/events", data=body, headers=slack_headers(body))
    return resp.status, resp.headers.get("Content-Type"), await resp.read()


@pytest.fixture
def dispatches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The requests bot.http handed to Bolt's dispatch (their command field)."""
    seen: list[str] = []
    original = AsyncApp.async_dispatch

    async def counted(self: Any, req: Any) -> Any:
        seen.append(str(req.body.get("command", "")))
        return await original(self, req)

    monkeypatch.setattr(AsyncApp, "async_dispatch", counted)
    return seen


async def _compare(bot: Bot, bodies: list[bytes], dispatches: list[str]) -> list[str]:
    """Each body to both endpoints; returns the commands the direct endpoint left to Bolt."""
    left_to_bolt: list[str] = []
    async with _bolt_only(bot, bot_deps(bot.service)) as bolt_only:
        for body in bodies:
            before = await _last_audit_id(bot)
            dispatches.clear()
            direct = await _answer(bot.client, body)
            left_to_bolt += dispatches
            direct_audit = await _audit_after(bot, before)
            middle = await _last_audit_id(bot)
            through_bolt = await _answer(bolt_only, body)
            bolt_audit = await _audit_after(bot, middle)
            assert direct == through_bolt, body
            assert direct_audit == bolt_audit, body
    return left_to_bolt


async def test_slash_commands_answer_and_audit_as_through_bolt(bot: Bot, dispatches: list[str]) -> None:
    bodies = [command_body(command, text, user) for command, text, user in REQUESTS]
    left_to_bolt = await _compare(bot, bodies, dispatches)
    # Only the command that is not ours went to Bolt.
    assert left_to_bolt == ["/nope"]
    # And the comparison compared something: the answers and the entries were there.
    assert len(await _audit_after(bot, 0)) >= 2 * 12


async def test_bodies_bolt_reads_otherwise_still_go_to_bolt(sqlite_bot: Bot, dispatches: list[str]) -> None:
    ssl_check = urlencode({"ssl_check": "1", "token": "legacy-token", "command": "/flags"}).encode()
    typed = urlencode({"command": "/flags", "text": ALPHA, "user_id": PC, "type": "x"}).encode()
    as_json = b'{"command": "/flags", "text": "VS-0001001", "user_id": "U0PC1234", "team_id": "' + \
        TEAM_ID.encode() + b'"}'
    left_to_bolt = await _compare(sqlite_bot, [ssl_check, typed, as_json], dispatches)
    assert left_to_bolt == ["/flags", "/flags", "/flags"]


async def test_a_command_whose_text_says_payload_is_answered(sqlite_bot: Bot, dispatches: list[str]) -> None:
    """Bolt reads any form with "payload" anywhere in it as an interaction, finds no `payload`
    field and no listener, and answers 404: the officer sees nothing. Here it is a search."""
    body = command_body("/flags", "payloadperson", PC)
    before = await _last_audit_id(sqlite_bot)
    status, _, answer = await _answer(sqlite_bot.client, body)
    assert dispatches == []  # answered directly, not left to Bolt
    assert status == 200
    assert b"no nominal" in answer.lower(), answer
    audit = await _audit_after(sqlite_bot, before)
    assert [row[2] for row in audit] == ["flags.lookup"]
    async with _bolt_only(sqlite_bot, bot_deps(sqlite_bot.service)) as bolt_only:
        assert (await _answer(bolt_only, body))[0] == 404  # Bolt's own dispatch: unanswered


def test_direct_command_reads_the_form_as_bolt_does() -> None:
    commands = slash_commands(BotDeps(ctx=None, sessions=None))  # type: ignore[arg-type]
    form = {"content-type": "application/x-www-form-urlencoded"}
    body = urlencode([("command", "/flags"), ("text", "x"), ("text", "y"), ("empty", "")])
    assert direct_command(body, form, commands) == {"command": "/flags", "text": "y", "empty": ""}
    assert direct_command(body, {"content-type": "application/json; charset=utf-8"}, commands) is None
    assert direct_command("", form, commands) is None
    assert direct_command(urlencode({"command": "/other"}), form, commands) is None
    assert direct_command(urlencode({"command": "/flags", "payload": "{}"}), form, commands) is None
    assert direct_command(urlencode({"command": "/flags", "text": "payload"}), form, commands) is not None
