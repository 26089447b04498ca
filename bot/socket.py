"""Socket Mode: the same listeners over an outbound WebSocket, for networks that allow no inbound
connection. Uses slack_sdk's aiohttp Socket Mode client (no extra dependency)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import build_bolt_app, finish_background, quiet_slack_logging
from bot.commands import BotDeps
from casewatch.context import Context

log = logging.getLogger(__name__)

Cleanup = Callable[[], Awaitable[None]]


async def start_socket_mode(
    ctx: Context,
    sessions: async_sessionmaker[AsyncSession],
    *,
    deps: BotDeps | None = None,
    ping_interval: float = 10,
) -> Cleanup:
    """Connect in the background (the client retries by itself until Slack answers, so a Slack
    outage never stops the service from starting) and return the function that disconnects."""
    app_token = ctx.settings.slack.app_token.get_secret_value()
    if not app_token:
        raise ValueError("slack.app_token is required when slack.mode is 'socket'")
    bolt = build_bolt_app(ctx.settings, deps or BotDeps(ctx, sessions))
    handler = AsyncSocketModeHandler(
        bolt, app_token=app_token, logger=quiet_slack_logging(), ping_interval=ping_interval
    )
    connecting = asyncio.create_task(
        handler.connect_async(), name="slack-socket-mode-connect"  # type: ignore[no-untyped-call]
    )
    log.info("Slack Socket Mode: connecting through %s", ctx.settings.slack.api_url)

    async def stop() -> None:
        await handler.close_async()  # type: ignore[no-untyped-call]
        await finish_background(bolt)
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await connecting

    return stop
