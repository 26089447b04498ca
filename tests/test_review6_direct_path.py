"""Review (sixth session, issue 17): bot.http's direct path for slash commands against Bolt's
dispatch, for signed bodies and headers the first comparison (test_flags_direct_path) does not
send: duplicated keys (the last wins in both), a percent-encoded command, no user_id, an
enterprise install, string values where Bolt's context builder looks for objects, `ssl_check=0`,
an empty `type`, Slack's retry headers, other content types, separators and leading bytes that
make the body no command. Each body goes to the service's endpoint and to one that sends
everything through Bolt; status, content type, body and the actions of the audit entries each
wrote must agree, and the bodies Bolt reads otherwise must have gone to Bolt.

Known differences, left out on purpose (all need a body signed with the signing secret, and the
direct path is the saner answer): `authorizations=x` or `event=x` in the form make Bolt's request
parsing or a middleware raise (500, nothing done) where the direct path answers; a request with
the header `X-Slack-Bolt-Lazy-Only: 1` (Bolt's own re-invocation marker, outside the signature)
gets Bolt's 404 where the direct path answers it as the same replay without the header would."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from casewatch.wiring import bot_deps
from tests.test_bot import ALPHA, PC, TEAM_ID, Bot, bot, slack_headers
from tests.test_flags_direct_path import _audit_after, _bolt_only, _last_audit_id, dispatches

__all__ = ["bot", "dispatches"]  # the fixtures, used here by name

BASE = [
    ("token", "legacy-verification-token"), ("team_id", TEAM_ID), ("channel_id", "C0NORTH"),
    ("user_id", PC), ("text", ALPHA), ("response_url", "https://hooks.slack.example/commands/T0/1/x"),
]


def _form(*pairs: tuple[str, str]) -> bytes:
    return urlencode([*BASE, *pairs]).encode()


FLAGS = ("command", "/flags")
# (name, body, headers beyond the signature's, answered directly?)
CASES: list[tuple[str, bytes, dict[str, str], bool]] = [
    ("the last of two commands wins: /ack", _form(FLAGS, ("command", "/ack")), {}, True),
    ("the last of two commands wins: /flags", _form(("command", "/ack"), FLAGS), {}, True),
    ("a percent-encoded command", b"command=%2Fflags&user_id=" + PC.encode() + b"&text=" + ALPHA.encode(),
     {}, True),
    ("no user_id", urlencode([FLAGS, ("text", ALPHA), ("team_id", TEAM_ID)]).encode(), {}, True),
    ("an enterprise install", _form(FLAGS, ("enterprise_id", "E0EXAMPLE"), ("is_enterprise_install", "true")),
     {}, True),
    ("another workspace", urlencode([*BASE[:1], ("team_id", "T0ELSEWHERE"), *BASE[2:], FLAGS]).encode(),
     {}, True),
    ("enterprise as text", _form(FLAGS, ("enterprise", "E0")), {}, True),
    ("team as text", _form(FLAGS, ("team", "T0")), {}, True),
    ("user as text", _form(FLAGS, ("user", "U0OTHER")), {}, True),
    ("channel as text", _form(FLAGS, ("channel", "C0OTHER")), {}, True),
    ("container as text", _form(FLAGS, ("container", "x")), {}, True),
    ("a function's token", _form(FLAGS, ("bot_access_token", "xwfp-not-real")), {}, True),
    ("shared channel", _form(FLAGS, ("is_ext_shared_channel", "true")), {}, True),
    ("ssl_check=0", _form(FLAGS, ("ssl_check", "0")), {}, False),
    ("an empty type", _form(FLAGS, ("type", "")), {}, False),
    ("Slack's retry headers", _form(FLAGS),
     {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}, True),
    ("a lazy function's name", _form(FLAGS), {"X-Slack-Bolt-Lazy-Function-Name": "on_command"}, True),
    ("JSON in capitals is not JSON", _form(FLAGS), {"Content-Type": "Application/JSON"}, True),
    ("no content type", _form(FLAGS), {"Content-Type": ""}, True),
    ("text/plain", _form(FLAGS), {"Content-Type": "text/plain"}, True),
    ("';' is no separator", b"command=/flags;text=" + ALPHA.encode() + b";user_id=" + PC.encode(), {}, False),
    ("a byte order mark", "\ufeffcommand=/flags&user_id=".encode() + PC.encode(), {}, False),
    ("a space before '{'", b' {"command": "/flags"}', {}, False),
    ("a command with a trailing space", _form(("command", "/flags ")), {}, False),
]


async def _answer(client: Any, body: bytes, extra: dict[str, str]) -> tuple[int, str | None, bytes]:
    resp = await client.post("/slack/events", data=body, headers={**slack_headers(body), **extra})
    return resp.status, resp.headers.get("Content-Type"), await resp.read()


async def test_odd_signed_requests_answer_and_audit_as_through_bolt(bot: Bot, dispatches: list[str]) -> None:
    answered = 0
    async with _bolt_only(bot, bot_deps(bot.service)) as bolt_only:
        for name, body, extra, direct_expected in CASES:
            before = await _last_audit_id(bot)
            dispatches.clear()
            direct = await _answer(bot.client, body, extra)
            assert (dispatches == []) is direct_expected, name
            direct_audit = [entry[2] for entry in await _audit_after(bot, before)]
            middle = await _last_audit_id(bot)
            through_bolt = await _answer(bolt_only, body, extra)
            bolt_audit = [entry[2] for entry in await _audit_after(bot, middle)]
            assert direct == through_bolt, name
            assert direct_audit == bolt_audit, name
            answered += direct[0] == 200 and bool(direct_audit)
    assert answered >= 15  # the comparison compared answers that did the work and wrote entries
