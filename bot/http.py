"""HTTP mode: Slack's requests arrive at POST /slack/events on casewatch's own aiohttp app, are
verified here (signature and the 5-minute timestamp window), and go through Bolt's dispatch, which
verifies them again."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import build_bolt_app
from bot.commands import BotDeps
from casewatch.context import Context

log = logging.getLogger(__name__)

SLACK_EVENTS_PATH = "/slack/events"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_SKEW_SECONDS = 300
_STAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits, the whole value ("\u00b2" passes isdigit())


def slack_signature_problem(raw: bytes, headers: Mapping[str, str], secret: str) -> str | None:
    """Why the request is not Slack's, or None: Slack's v0 signature over the raw bytes, within
    the 5-minute window. The reasons are fixed phrases: nothing of the request is in them."""
    stamp = headers.get("x-slack-request-timestamp", "")
    if not _STAMP.fullmatch(stamp):
        return "timestamp missing or not unix seconds"
    if abs(time.time() - int(stamp)) > MAX_SKEW_SECONDS:
        return "timestamp outside the 5-minute window"
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + raw, hashlib.sha256)
    given = headers.get("x-slack-signature", "").encode("utf-8", "replace")
    if not hmac.compare_digest(f"v0={digest.hexdigest()}".encode(), given):
        return "signature does not match"
    return None


def slack_events_handler(bolt: AsyncApp, signing_secret: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        plain = {k.lower(): v for k, v in request.headers.items()}
        # Verified here, before Bolt sees the request: Bolt logs the whole body of a request that
        # fails its check. One fixed line per refusal; no body, header value or size is logged.
        problem = slack_signature_problem(raw, plain, signing_secret)
        if problem is not None:
            log.info("Slack request refused (401): %s", problem)
            return web.json_response({"error": "invalid request"}, status=401)
        headers: dict[str, str | Sequence[str]] = dict(plain)
        try:
            body = raw.decode("utf-8")
            bolt_request = AsyncBoltRequest(body=body, query=request.query_string, headers=headers)
        except (UnicodeDecodeError, ValueError, TypeError, KeyError):
            return web.json_response({"error": "the request body could not be read"}, status=400)
        bolt_response = await bolt.async_dispatch(bolt_request)
        return await to_aiohttp_response(bolt_response)

    return handle


async def _not_configured(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {"error": "Slack is not configured here: slack.signing_secret is empty"}, status=503
    )


def mount_slack(
    app: web.Application,
    ctx: Context,
    sessions: async_sessionmaker[AsyncSession],
    *,
    deps: BotDeps | None = None,
) -> AsyncApp | None:
    """Add POST /slack/events to `app`. Without a signing secret nothing could be verified, so
    the route then answers 503 instead of trusting anyone. Returns the Bolt app, if built."""
    secret = ctx.settings.slack.signing_secret.get_secret_value()
    if not secret:
        log.warning("slack.mode is 'http' but slack.signing_secret is empty: /slack/events answers 503")
        app.router.add_post(SLACK_EVENTS_PATH, _not_configured)
        return None
    bolt = build_bolt_app(ctx.settings, deps or BotDeps(ctx, sessions))
    app.router.add_post(SLACK_EVENTS_PATH, slack_events_handler(bolt, secret))
    return bolt
