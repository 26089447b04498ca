"""HTTP mode: Slack's requests arrive at POST /slack/events on casewatch's own aiohttp app, are
verified here (slack_sdk's SignatureVerifier on the service's clock: signature and the 5-minute
timestamp window), and go through Bolt's dispatch, which verifies them again with the same
verifier. A body that is not UTF-8 is never Slack's: it is answered 400 before verification."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.middleware.request_verification import RequestVerification
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import Clock as SlackClock
from slack_sdk.signature import SignatureVerifier
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import build_bolt_app, finish_background
from bot.commands import BotDeps
from casewatch.clock import Clock
from casewatch.context import Context

log = logging.getLogger(__name__)

SLACK_EVENTS_PATH = "/slack/events"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_STAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits, the whole value ("\u00b2" passes isdigit())


class _ServiceClock(SlackClock):
    """slack_sdk's clock (unix seconds) read from the service's injected clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock.now().timestamp()


def slack_verifier(signing_secret: str, clock: Clock) -> SignatureVerifier:
    return SignatureVerifier(signing_secret, clock=_ServiceClock(clock))


def slack_signature_problem(body: str, headers: Mapping[str, str], verifier: SignatureVerifier) -> str | None:
    """Why the request is not Slack's, or None: Slack's v0 signature over the body, within the
    5-minute window (slack_sdk's SignatureVerifier). The reasons are fixed phrases: nothing of the
    request is in them. Headers the verifier would choke on (int() takes "\uff11", hmac refuses
    non-ASCII text) are refused first."""
    stamp = headers.get("x-slack-request-timestamp", "")
    if not _STAMP.fullmatch(stamp):
        return "timestamp missing or not unix seconds"
    if abs(verifier.clock.now() - int(stamp)) > 5 * 60:
        return "timestamp outside the 5-minute window"
    signature = headers.get("x-slack-signature", "")
    if not signature.isascii() or not verifier.is_valid(body, stamp, signature):
        return "signature does not match"
    return None


class ReplayGuard:
    """The signed Slack requests this process took within the 5-minute window, so that the same
    request sent again is refused: anyone who captured one (a proxy's log, say) could otherwise
    have it answered again, `/flags` with its restricted markers included. Slack makes every
    request unique (a slash command's trigger_id, a button's action_ts, the timestamp of each
    delivery), so no request of Slack's is refused. Kept per process: behind one port with
    several processes a copy may reach another one (bench/README, "Two serve processes"). At most
    `limit` entries: past it the oldest go first."""

    def __init__(self, window_seconds: float = 5 * 60 + 60, limit: int = 200_000) -> None:
        self.window = window_seconds  # the timestamp window and a minute of clock difference
        self.limit = limit
        self._seen: dict[str, float] = {}  # signature -> when taken; in the order taken

    def first_time(self, signature: str, now: float) -> bool:
        """True the first time `signature` (HMAC over the timestamp and body) is seen."""
        seen = self._seen
        while seen:  # the oldest go: out of the window, or over the limit
            oldest = next(iter(seen))
            if now - seen[oldest] <= self.window and len(seen) < self.limit:
                break
            del seen[oldest]
        if signature in seen:
            return False
        seen[signature] = now
        return True


class SlackRequest(AsyncBoltRequest):
    """Bolt's request, with one mistake of Bolt's reading mended. Bolt
    (slack_bolt.request.internals.parse_body) takes any form with the text "payload" anywhere in
    it for an interaction, and a form with no `payload` field then reads as empty: a slash command
    whose text holds the word (`/flags payloadperson`) found no listener and got a 404, no answer
    at all. A form without a `payload` field is read here as the form it is; every other body as
    Bolt reads it (tests/test_slack_request.py compares the two). A body Bolt could not read as
    objects raises here (ValueError, or AttributeError from Bolt's own reading): a 400, not Bolt's
    500 from inside its dispatch."""

    def __init__(
        self,
        *,
        body: str,
        query: str | dict[str, Sequence[str]] | None = None,
        headers: dict[str, str | Sequence[str]] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(body=body, query=query, headers=headers, context=context)
        if not isinstance(self.body.get("event", {}), dict):
            raise ValueError("an event callback's event is not an object")  # Bolt reads it as one
        as_json = self.content_type == "application/json" or body.startswith("{")  # as parse_body
        if self.body or as_json or "payload" not in body:
            return
        form = dict(parse_qsl(body, keep_blank_values=True))
        if "payload" not in form:
            self.body = form
            self.context = build_async_context(AsyncBoltContext(context or {}), form)

    def to_copyable(self) -> SlackRequest:  # a lazy listener's copy reads the body the same way
        return SlackRequest(
            body=self.raw_body, query=self.query, headers=self.headers, context=self.context.to_copyable()
        )


def slack_events_handler(
    bolt: AsyncApp, verifier: SignatureVerifier, replays: ReplayGuard | None = None
) -> Handler:
    """POST /slack/events: verified here (signature, window, not seen before), then Bolt's dispatch."""
    replays = replays if replays is not None else ReplayGuard()

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        plain = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = raw.decode("utf-8")  # Slack sends UTF-8 (the verifier reads text)
        except UnicodeDecodeError:
            log.info("Slack request refused (400): body is not UTF-8")
            return web.json_response({"error": "the request body could not be read"}, status=400)
        # Verified here, before Bolt sees the request: Bolt logs the whole body of a request that
        # fails its check. One fixed line per refusal; no body, header value or size is logged.
        problem = slack_signature_problem(body, plain, verifier)
        if problem is None and not replays.first_time(plain["x-slack-signature"], verifier.clock.now()):
            problem = "the same request was taken before (a replay)"
        if problem is not None:
            log.info("Slack request refused (401): %s", problem)
            return web.json_response({"error": "invalid request"}, status=401)
        headers: dict[str, str | Sequence[str]] = dict(plain)
        try:
            bolt_request = SlackRequest(body=body, query=request.query_string, headers=headers)
        except (ValueError, TypeError, KeyError, AttributeError):
            # Bolt's context builder reads a JSON body or payload as an object: a signed array or
            # null raised AttributeError there (a 500).
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
    # process_before_response: the acknowledgement is the HTTP response as soon as the listener's
    # acknowledging function returns (bot.app), not at Bolt's next 10 ms poll for it.
    deps = deps or BotDeps(ctx, sessions)
    bolt = build_bolt_app(ctx.settings, deps, process_before_response=True)
    verifier = slack_verifier(secret, ctx.clock)
    # Bolt checks again behind us: with this verifier, so both read the same clock.
    for middleware in bolt._async_middleware_list:
        if isinstance(middleware, RequestVerification):
            middleware._verifier = verifier
    handler = slack_events_handler(bolt, verifier)
    app.router.add_post(SLACK_EVENTS_PATH, handler)

    async def finish(_: web.Application) -> None:
        await finish_background(bolt)

    app.on_shutdown.append(finish)  # before the service closes the database (wiring.stop)
    return bolt
