"""Review (sixth session, issue 17; since the eleventh session every request goes through Bolt's
dispatch): signed bodies and headers the first comparison (test_slack_request) does not send:
duplicated keys (the last wins), a percent-encoded command, no user_id, an enterprise install,
string values where Bolt's context builder looks for objects, `ssl_check=0`, an empty `type`,
Slack's retry headers, other content types, separators and leading bytes that make the body no
command. Each body goes to the service's endpoint (bot.http.SlackRequest) and to one that reads it
with Bolt's plain AsyncBoltRequest; status, content type, body and the actions of the audit
entries each wrote must agree, and each request must have gone through Bolt's dispatch once.

Left out: `authorizations=x` or `event=x` in a signed form make Bolt's request parsing or a
middleware raise (a 500, nothing done) on both endpoints alike; it needs the signing secret."""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import urlencode

from casewatch.wiring import bot_deps
from tests.test_bot import ALPHA, NOW_TS, PC, TEAM_ID, Bot, bot, slack_headers
from tests.test_slack_request import _audit_after, _bolt_only, _last_audit_id, dispatches

__all__ = ["bot", "dispatches"]  # the fixtures, used here by name

BASE = [
    ("token", "legacy-verification-token"), ("team_id", TEAM_ID), ("channel_id", "C0NORTH"),
    ("user_id", PC), ("text", ALPHA), ("response_url", "https://hooks.slack.example/commands/T0/1/x"),
]


def _form(*pairs: tuple[str, str]) -> bytes:
    return urlencode([*BASE, *pairs]).encode()


FLAGS = ("command", "/flags")
# (name, body, headers beyond the signature's)
CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("the last of two commands wins: /ack", _form(FLAGS, ("command", "/ack")), {}),
    ("the last of two commands wins: /flags", _form(("command", "/ack"), FLAGS), {}),
    ("a percent-encoded command", b"command=%2Fflags&user_id=" + PC.encode() + b"&text=" + ALPHA.encode(),
     {}),
    ("no user_id", urlencode([FLAGS, ("text", ALPHA), ("team_id", TEAM_ID)]).encode(), {}),
    ("an enterprise install", _form(FLAGS, ("enterprise_id", "E0EXAMPLE"), ("is_enterprise_install", "true")),
     {}),
    ("another workspace", urlencode([*BASE[:1], ("team_id", "T0ELSEWHERE"), *BASE[2:], FLAGS]).encode(),
     {}),
    ("enterprise as text", _form(FLAGS, ("enterprise", "E0")), {}),
    ("team as text", _form(FLAGS, ("team", "T0")), {}),
    ("user as text", _form(FLAGS, ("user", "U0OTHER")), {}),
    ("channel as text", _form(FLAGS, ("channel", "C0OTHER")), {}),
    ("container as text", _form(FLAGS, ("container", "x")), {}),
    ("a function's token", _form(FLAGS, ("bot_access_token", "xwfp-not-real")), {}),
    ("shared channel", _form(FLAGS, ("is_ext_shared_channel", "true")), {}),
    ("ssl_check=0", _form(FLAGS, ("ssl_check", "0")), {}),
    ("an empty type", _form(FLAGS, ("type", "")), {}),
    ("Slack's retry headers", _form(FLAGS),
     {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}),
    ("a lazy function's name", _form(FLAGS), {"X-Slack-Bolt-Lazy-Function-Name": "on_command"}),
    ("JSON in capitals is not JSON", _form(FLAGS), {"Content-Type": "Application/JSON"}),
    ("no content type", _form(FLAGS), {"Content-Type": ""}),
    ("text/plain", _form(FLAGS), {"Content-Type": "text/plain"}),
    ("';' is no separator", b"command=/flags;text=" + ALPHA.encode() + b";user_id=" + PC.encode(), {}),
    ("a byte order mark", "\ufeffcommand=/flags&user_id=".encode() + PC.encode(), {}),
    ("a space before '{'", b' {"command": "/flags"}', {}),
    ("a command with a trailing space", _form(("command", "/flags ")), {}),
]


# Several cases send one body with other headers: each signed at its own second, since the same
# signed request twice is a replay (bot.http.ReplayGuard). Within the 5-minute window.
_SECONDS_BACK = itertools.count()


async def _answer(client: Any, body: bytes, extra: dict[str, str]) -> tuple[int, str | None, bytes]:
    headers = slack_headers(body, ts=NOW_TS - next(_SECONDS_BACK) % 240)
    resp = await client.post("/slack/events", data=body, headers={**headers, **extra})
    return resp.status, resp.headers.get("Content-Type"), await resp.read()


async def test_odd_signed_requests_answer_and_audit_as_through_bolt(bot: Bot, dispatches: list[str]) -> None:
    answered = 0
    async with _bolt_only(bot, bot_deps(bot.service)) as bolt_only:
        for name, body, extra in CASES:
            before = await _last_audit_id(bot)
            dispatches.clear()
            served = await _answer(bot.client, body, extra)
            assert len(dispatches) == 1, name  # through Bolt's dispatch, once
            served_audit = [entry[2] for entry in await _audit_after(bot, before)]
            middle = await _last_audit_id(bot)
            through_bolt = await _answer(bolt_only, body, extra)
            bolt_audit = [entry[2] for entry in await _audit_after(bot, middle)]
            assert served == through_bolt, name
            assert served_audit == bolt_audit, name
            answered += served[0] == 200 and bool(served_audit)
    assert answered >= 15  # the comparison compared answers that did the work and wrote entries
