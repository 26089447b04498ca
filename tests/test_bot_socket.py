"""Socket Mode: the same listeners, reached as Socket Mode requests. First through Bolt's dispatch
directly (as slack_bolt's Socket Mode adapter calls it), then over a real WebSocket to a local
stand-in of Slack's Socket Mode endpoint on 127.0.0.1, started by the service's own wiring.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from slack_bolt.request.async_request import AsyncBoltRequest
from sqlalchemy import select

from bot.app import build_bolt_app
from bot.commands import BotDeps
from casewatch.store.models import Acknowledgement, Alert, Delivery
from casewatch.wiring import Service, start_background, stop
from tests.slack_standin import SlackStandIn
from tests.support import make_service
from tests.test_bot import (
    ALPHA,
    CR,
    PC,
    RECALLED,
    STRANGER,
    TEAM_ID,
    bot_settings,
    buttons,
    seed,
    shown,
)

APP_TOKEN = "xapp-test-not-real"
Running = tuple[Service, SlackStandIn, dict[str, str]]


def command_payload(command: str, text: str, user: str) -> dict[str, Any]:
    return {
        "token": "legacy-verification-token", "team_id": TEAM_ID, "team_domain": "casewatch-test",
        "channel_id": "C0NORTH", "channel_name": "north-mosovo", "user_id": user,
        "user_name": user.lower(), "command": command, "text": text, "api_app_id": "A0CASEWATCH",
        "is_enterprise_install": "false", "response_url": "https://hooks.slack.example/commands/x",
        "trigger_id": "1.2.3",
    }


def button_payload(user: str, alert_id: str, response_url: str) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0CASEWATCH", "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": "1700000000.000001", "channel_id": "C0NORTH"},
        "team": {"id": TEAM_ID, "domain": "casewatch-test"},
        "channel": {"id": "C0NORTH", "name": "north-mosovo"},
        "response_url": response_url, "trigger_id": "1.2.3",
        "actions": [{"action_id": "casewatch_ack", "block_id": "b1", "value": alert_id, "type": "button",
                     "action_ts": "1700000001.000001"}],
    }


@asynccontextmanager
async def socket_service(db_url: str) -> AsyncIterator[Running]:
    async with SlackStandIn() as slack:
        settings = bot_settings(slack)
        settings["slack"] = {
            **settings["slack"], "mode": "socket", "app_token": APP_TOKEN, "signing_secret": "",
        }
        # The seeded alerts have no case data behind them: a scheduled scan would (rightly)
        # resolve them mid-test.
        settings["schedules"] = {"enabled": False}
        svc = await make_service(db_url, **settings)
        try:
            yield svc, slack, await seed(svc)
        finally:
            await stop(svc)


@pytest.fixture
async def service(sqlite_url: str) -> AsyncIterator[Running]:
    """SQLite: the listeners' store behaviour is covered on both databases in test_bot.py."""
    async with socket_service(sqlite_url) as running:
        yield running


@pytest.fixture
async def any_db_service(db_url: str) -> AsyncIterator[Running]:
    async with socket_service(db_url) as running:
        yield running


# --- through Bolt's dispatch, as the Socket Mode adapter calls it ------------------------------


async def dispatch(svc: Service, body: dict[str, Any]) -> Any:
    bolt = build_bolt_app(svc.settings, BotDeps(svc.ctx, svc.sessions))
    # What slack_bolt.adapter.socket_mode does with each envelope: no HTTP, no signature.
    return await bolt.async_dispatch(AsyncBoltRequest(mode="socket_mode", body=body, headers={}))


async def test_socket_mode_flags_uses_the_same_listener(
    service: Running,
) -> None:
    svc, _, _ = service
    response = await dispatch(svc, command_payload("/flags", RECALLED, CR))
    assert response.status == 200
    answer = json.loads(response.body)
    assert answer["response_type"] == "ephemeral"
    assert "RECALLED / UNLAWFULLY AT LARGE" in shown(answer)


async def test_socket_mode_refuses_unknown_users(service: Running) -> None:
    svc, _, _ = service
    answer = json.loads((await dispatch(svc, command_payload("/flags", ALPHA, STRANGER))).body)
    assert "not linked to an officer" in answer["text"] and ALPHA not in shown(answer)


async def test_socket_mode_tasks_and_ack_command(service: Running) -> None:
    svc, _, alerts = service
    answer = json.loads((await dispatch(svc, command_payload("/tasks", "", PC))).body)
    assert ("casewatch_ack", alerts["pc_high"]) in buttons(answer)
    answer = json.loads((await dispatch(svc, command_payload("/ack", alerts["pc_high"], PC))).body)
    assert "acknowledged by you" in shown(answer)
    async with svc.sessions() as session:
        alert = await session.get(Alert, alerts["pc_high"])
        assert alert is not None and (alert.state, alert.acknowledged_by) == ("acknowledged", "PC1234")


async def test_socket_mode_button(service: Running) -> None:
    svc, slack, alerts = service
    response = await dispatch(svc, button_payload(PC, alerts["pc_medium"], slack.url + "response.sm"))
    assert response.status == 200 and response.body == ""
    [call] = await slack.wait_for_calls("response.sm", 1)
    assert "acknowledged by you" in shown(call.args)
    async with svc.sessions() as session:
        [ack] = (await session.execute(select(Acknowledgement))).scalars().all()
    assert (ack.alert_id, ack.officer_id, ack.via) == (alerts["pc_medium"], "PC1234", "slack_button")


# --- over a WebSocket, started by the wiring -----------------------------------------------------


class SocketModeStandIn:
    """Slack's Socket Mode endpoint, locally: hands out envelopes, collects the app's replies."""

    def __init__(self) -> None:
        self.outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.connected = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/link"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/link", self._link)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1, "debug_info": {"host": "local"}})
        self.connected.set()

        async def pump() -> None:
            while True:
                await ws.send_json(await self.outgoing.get())

        pumping = asyncio.create_task(pump())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self.replies.put(json.loads(msg.data))
        finally:
            pumping.cancel()
        return ws


async def _posted_about(slack: SlackStandIn, alert_id: str) -> tuple[str, str]:
    """(channel, ts) of the channel message about the alert, once the delivery worker sent it."""
    for _ in range(100):
        for (channel, ts), message in slack.messages.items():
            if alert_id in json.dumps(message):
                return channel, ts
        await asyncio.sleep(0.05)
    raise AssertionError(f"no channel message about {alert_id}")


async def _updated(slack: SlackStandIn, message: tuple[str, str]) -> Any:
    for _ in range(100):
        for call in slack.calls_to("chat.update"):
            if (call.args.get("channel"), call.args.get("ts")) == message:
                return call
        await asyncio.sleep(0.05)
    raise AssertionError(f"channel message {message} was not updated")


async def test_socket_mode_over_a_websocket_started_by_the_wiring(any_db_service: Running) -> None:
    svc, slack, alerts = any_db_service
    socket = SocketModeStandIn()
    await socket.start()
    try:
        slack.responses["apps.connections.open"] = {"url": socket.url}
        await start_background(svc)
        await asyncio.wait_for(socket.connected.wait(), 10)
        [opened] = slack.calls_to("apps.connections.open")
        assert opened.token == APP_TOKEN

        await socket.outgoing.put({
            "envelope_id": "env-flags", "type": "slash_commands", "accepts_response_payload": True,
            "payload": command_payload("/flags", ALPHA, CR),
        })
        reply = await asyncio.wait_for(socket.replies.get(), 10)
        assert reply["envelope_id"] == "env-flags"
        assert reply["payload"]["response_type"] == "ephemeral"
        assert "Covert tactic (fictional)" in shown(reply["payload"])  # control room is cleared

        # The delivery workers (started by the same wiring) post the alert to the team channel.
        posted = await _posted_about(slack, alerts["pc_high"])
        await socket.outgoing.put({
            "envelope_id": "env-ack", "type": "interactive", "accepts_response_payload": False,
            "payload": button_payload(CR, alerts["pc_high"], slack.url + "response.ws"),
        })
        reply = await asyncio.wait_for(socket.replies.get(), 10)
        assert reply == {"envelope_id": "env-ack"}  # acknowledged at once, nothing else
        [call] = await slack.wait_for_calls("response.ws", 1)
        assert "acknowledged by you" in shown(call.args)
        async with svc.sessions() as session:
            alert = await session.get(Alert, alerts["pc_high"])
            assert alert is not None and alert.acknowledged_by == "CR0001"
            deliveries = (await session.execute(
                select(Delivery).where(Delivery.alert_id == alert.id, Delivery.purpose == "acknowledged")
            )).scalars().all()
        # The acknowledgement queued updates for whoever was told of the alert, and the channel
        # message with the button is edited to show it.
        assert deliveries
        update = await _updated(slack, posted)
        assert alerts["pc_high"] in json.dumps(update.args)
    finally:
        await stop(svc)  # closes the Socket Mode connection before the stand-in goes
        await socket.stop()
