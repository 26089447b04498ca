"""An answer goes to a response URL only when it is Slack's (bot.response_url): the URL comes in
the signed body, but it is still a value from outside, and the answer holds personal data.

A second Slack stand-in on another loopback port plays the foreign address: it must receive
nothing, through the direct slash-command path, Bolt's dispatch, and the buttons. All names and
references are fictional.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.app import build_bolt_app
from bot.commands import BotDeps
from bot.http import mount_slack
from bot.render import TRY_AGAIN
from bot.response_url import trusted_response_url
from tests.slack_standin import SlackStandIn
from tests.test_bot import (
    ALPHA,
    CR,
    PC,
    SAMPLE_B,
    block_action_body,
    command_body,
    post_signed,
    running_bot,
)
from tests.test_bot_socket import command_payload

API = "http://127.0.0.1:8123/api/"


@pytest.mark.parametrize(
    ("url", "trusted"),
    [
        ("https://hooks.slack.com/commands/T0/1/abc", True),
        ("https://hooks.slack.com/actions/T0/1/abc", True),
        ("https://hooks.slack.com/app/T0/1/abc", True),
        ("https://HOOKS.SLACK.COM/commands/T0/1/abc", True),
        ("https://hooks.slack.com:443/commands/T0/1/abc", True),
        ("https://hooks.slack-gov.com/commands/T0/1/abc", True),
        ("http://127.0.0.1:8123/api/response.x", True),  # the origin of slack.api_url
        ("http://127.0.0.1:8123/anything", True),
        ("http://hooks.slack.com/commands/T0/1/abc", False),  # not HTTPS
        ("https://hooks.slack.com:8443/commands/T0/1/abc", False),
        ("https://hooks.slack.com.attacker.example/commands/T0/1/abc", False),
        ("https://attacker.example/commands/T0/1/abc", False),
        ("https://hooks.slack.com@attacker.example/x", False),
        ("https://user@hooks.slack.com/commands/x", False),
        ("https://user:pw@hooks.slack.com/commands/x", False),
        ("https://slack.com/api/chat.postMessage", False),
        ("http://127.0.0.1:8124/api/response.x", False),  # another port on loopback
        ("http://localhost:8123/api/response.x", False),  # same server, another name: not the origin
        ("https://127.0.0.1:8123/api/response.x", False),  # another scheme
        ("https://hooks.slack.com/commands/x#frag", False),
        ("https://hooks.slack.com/commands/x y", False),
        ("https://hooks.slack.com/commands/x\n", False),
        ("https://hooks.slack.com/commands/\u200bx", False),
        ("https://hooks.slаck.com/commands/x", False),  # Cyrillic a
        ("https://hooks.slack.com:99999/commands/x", False),
        ("https://hooks.slack.com:port/commands/x", False),
        ("https://hooks.slack.com\\@attacker.example/x", False),
        ("javascript:alert(1)", False),
        ("//hooks.slack.com/commands/x", False),
        ("https://hooks.slack.com/" + "a" * 2100, False),
        ("", False),
        (None, False),
        (["https://hooks.slack.com/commands/x"], False),
    ],
)
def test_only_slacks_addresses_are_trusted(url: object, trusted: bool) -> None:
    assert (trusted_response_url(url, API) is not None) is trusted


def test_a_bad_api_url_trusts_only_slacks_hosts() -> None:
    assert trusted_response_url("https://hooks.slack.com/commands/x", "not a url") is not None
    assert trusted_response_url("http://127.0.0.1:8123/x", "not a url") is None


async def _quiet_for(foreign: SlackStandIn, seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)
    assert foreign.calls == [], "an answer went to an address that is not Slack's"


async def test_a_late_slash_answer_is_not_sent_to_a_foreign_address(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bot(sqlite_url) as bot, SlackStandIn() as foreign:
        app = web.Application()
        # A zero budget forces the late path, the one that posts to the response URL.
        deps = BotDeps(bot.service.ctx, bot.service.sessions, answer_budget_seconds=0)
        mount_slack(app, bot.service.ctx, bot.service.sessions, deps=deps)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            caplog.set_level(logging.WARNING, logger="bot.app")
            body = command_body("/flags", ALPHA, CR, response_url=foreign.url + "response.slow")
            resp = await post_signed(client, body)
            assert resp.status == 200
            holding = await resp.json()
            assert holding == {"text": TRY_AGAIN, "response_type": "ephemeral"}
            await _quiet_for(foreign)
            # The work still finished: the lookup is audited as always.
            assert [e.subject for e in await bot.audit("flags.lookup")] == [ALPHA]
            assert "Slack response URL refused" in caplog.text
            assert foreign.url not in caplog.text and "127.0.0.1" not in caplog.text

            # The same request with Slack's (here: the configured stand-in's) address is answered there.
            body = command_body("/flags", ALPHA, CR, response_url=bot.slack.url + "response.slow")
            holding = await (await post_signed(client, body)).json()
            assert "Still working" in holding["text"]
            [call] = await bot.slack.wait_for_calls("response.slow", 1)
            assert "FICTIONALSON, Alpha Test" in str(call.args)


async def test_bolts_dispatch_checks_the_response_url_too(sqlite_url: str) -> None:
    """Socket Mode's path: the slash command through Bolt's own dispatch."""
    async with running_bot(sqlite_url) as bot, SlackStandIn() as foreign:
        deps = BotDeps(bot.service.ctx, bot.service.sessions, answer_budget_seconds=0)
        bolt = build_bolt_app(bot.service.ctx.settings, deps, process_before_response=True)
        payload = command_payload("/flags", ALPHA, CR)
        payload["response_url"] = foreign.url + "response.slow"
        # What slack_bolt.adapter.socket_mode does with each envelope: no HTTP, no signature.
        response = await bolt.async_dispatch(AsyncBoltRequest(mode="socket_mode", body=payload, headers={}))
        assert response.status == 200
        assert TRY_AGAIN in response.body
        await _quiet_for(foreign)
        assert [e.subject for e in await bot.audit("flags.lookup")] == [ALPHA]


async def test_a_button_with_a_foreign_response_url_answers_by_ephemeral_message(sqlite_url: str) -> None:
    async with running_bot(sqlite_url) as bot, SlackStandIn() as foreign:
        foreign_url = foreign.url + "response.x"
        body = block_action_body(PC, "casewatch_flags_show", SAMPLE_B, response_url=foreign_url)
        resp = await post_signed(bot.client, body)
        assert resp.status == 200
        [call] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
        assert call.args["user"] == PC and "SAMPLETON, Delta" in str(call.args)
        await _quiet_for(foreign)


async def test_a_fast_answer_never_looks_at_the_response_url(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Answered within the budget, the command needs no response URL: none is checked, posted
    to or warned about (real Slack always sends one of its own; test bodies often do not)."""
    async with running_bot(sqlite_url) as bot, SlackStandIn() as foreign:
        caplog.set_level(logging.WARNING, logger="bot.app")
        body = command_body("/flags", ALPHA, CR, response_url=foreign.url + "response.fast")
        answer = await (await post_signed(bot.client, body)).json()
        assert "FICTIONALSON, Alpha Test" in str(answer)
        await _quiet_for(foreign)
        assert "response URL" not in caplog.text
