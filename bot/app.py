"""The Bolt app: one set of listeners, served over HTTP (bot.http) or Socket Mode (bot.socket).

Listeners are registered by `register(app, deps)`; nothing is built at import time. Each one
acknowledges within Slack's 3 seconds: a slash command's answer *is* its acknowledgement
(ephemeral, so personal data never reaches a channel), and when the answer takes longer than
`deps.answer_budget_seconds` the command acknowledges with a holding reply and sends the answer
to the response URL from a background task instead. Buttons and the App Home event acknowledge
at once and do their work in lazy listeners (Bolt runs those after the acknowledgement). So the
listeners suit `process_before_response=True` (HTTP mode: Bolt returns the acknowledgement as the
HTTP response as soon as the acknowledging function returns, instead of polling for it every
10 ms) as well as False (Socket Mode). The App Home tab is published (views.publish) each time
someone opens it, and again after an Acknowledge button pressed on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.lazy_listener.async_internals import to_runnable_function
from slack_bolt.lazy_listener.asyncio_runner import AsyncioLazyListenerRunner
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import render
from bot.commands import BotDeps, ack_reply, flags_reply, home_view, tasks_reply
from bot.render import Message
from bot.response_url import trusted_response_url
from casewatch.config import Settings
from casewatch.logs import LibraryDetailsFilter, slack_filter

log = logging.getLogger(__name__)

# Bolt and slack_sdk log request and response bodies at DEBUG; those carry names and markers.
# At INFO, Bolt logs the whole body of a request that fails verification: the filter
# (casewatch.logs) rewrites their records to a bounded line with no request content.
SLACK_LOGGER = "casewatch.bot.slack"  # one of casewatch.logs.SLACK_LOGGERS


def _filter_slack_loggers() -> None:
    """The details filter on every Slack logger that exists now (Bolt makes one per middleware,
    copying the filters of the logger it is given when it has none of its own)."""
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("slack_bolt", "slack_sdk")]
    for name in [SLACK_LOGGER, "slack_bolt", "slack_sdk", *names]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, LibraryDetailsFilter) for f in logger.filters):
            logger.addFilter(slack_filter())


def quiet_slack_logging() -> logging.Logger:
    """The logger Bolt and its clients get, held at INFO or above whatever the service level
    (a level set on these loggers on purpose, above INFO, is kept), with the details filter."""
    for name in (SLACK_LOGGER, "slack_bolt", "slack_sdk"):
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # NOTSET (0) too: it would follow the root level down
            logger.setLevel(logging.INFO)
    _filter_slack_loggers()
    return logging.getLogger(SLACK_LOGGER)


def build_bolt_app(settings: Settings, deps: BotDeps, *, process_before_response: bool = False) -> AsyncApp:
    """An AsyncApp for this workspace, with the casewatch listeners registered.

    The bot token is handed out by `authorize` rather than given as `token=`: with `token=`, Bolt
    calls auth.test on the first request, and nothing here needs what it returns. Web API calls
    go to `slack.api_url` (a local stand-in in tests).
    """
    logger = quiet_slack_logging()
    bot_token = settings.slack.bot_token.get_secret_value() or None

    async def authorize(
        enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        return AuthorizeResult(
            enterprise_id=enterprise_id, team_id=team_id, user_id=user_id, bot_token=bot_token
        )

    app = AsyncApp(
        logger=logger,
        name="casewatch",
        signing_secret=settings.slack.signing_secret.get_secret_value(),
        client=AsyncWebClient(base_url=settings.slack.api_url, logger=logger, timeout=10),
        authorize=authorize,
        request_verification_enabled=True,
        process_before_response=process_before_response,
    )
    # Bolt starts lazy listeners as tasks it keeps no hold of: ours are kept, so that stopping
    # the service lets the work already acknowledged finish (finish_background) before the
    # database goes.
    app._async_listener_runner.lazy_listener_runner = _TrackedLazyListeners(logger)
    register(app, deps)
    _filter_slack_loggers()  # the loggers Bolt has just made for its middlewares
    return app


class _TrackedLazyListeners(AsyncioLazyListenerRunner):
    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger)
        self.running: set[asyncio.Task[Any]] = set()

    def start(self, function: Callable[..., Awaitable[None]], request: AsyncBoltRequest) -> None:
        task = asyncio.ensure_future(
            to_runnable_function(internal_func=function, logger=self.logger, request=request)
        )
        self.running.add(task)
        task.add_done_callback(self.running.discard)


async def finish_background(app: AsyncApp, within_seconds: float = 10.0) -> None:
    """Wait (at most `within_seconds`) for the work this app acknowledged and still runs: lazy
    listeners (buttons, App Home) and late answers to slash commands. Call it on the way out,
    before the database is closed; what is still running then is cancelled."""
    runner = app._async_listener_runner.lazy_listener_runner
    tasks = set(_LATE_ANSWERS)
    if isinstance(runner, _TrackedLazyListeners):
        tasks |= runner.running
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=within_seconds)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        log.warning("slack: %d background task(s) still running at shutdown were cancelled", len(pending))


# Answers still being worked on after their command was acknowledged: held here so that the
# tasks are not garbage-collected before they have answered.
_LATE_ANSWERS: set[asyncio.Task[None]] = set()


async def _answer(
    ack: AsyncAck, respond: AsyncRespond, work: asyncio.Task[Message], budget: float, api_url: str
) -> None:
    """Acknowledge with the answer if it is ready within the budget, else acknowledge now and
    send the answer to the response URL when it is (in the background: with
    process_before_response the acknowledgement goes out only when this returns). With no
    response URL that may be used (see checked_respond), a late answer cannot be sent: the
    acknowledgement says to try again, and the work still finishes (its audit entry)."""
    done, _ = await asyncio.wait({work}, timeout=budget)
    if work in done:
        await ack(response_type="ephemeral", **work.result())
        return
    late_to = checked_respond(respond, api_url)
    await ack(response_type="ephemeral", text=render.STILL_WORKING if late_to else render.TRY_AGAIN)
    late = asyncio.create_task(_answer_late(late_to, work), name="slack-late-answer")
    _LATE_ANSWERS.add(late)
    late.add_done_callback(_LATE_ANSWERS.discard)


async def _answer_late(respond: AsyncRespond | None, work: asyncio.Task[Message]) -> None:
    message = await work
    if respond is None:
        log.warning("a late answer was not sent: no response URL it may go to")
        return
    await _respond(respond, message, replace_original=True)


def checked_respond(respond: AsyncRespond, api_url: str) -> AsyncRespond | None:
    """`respond` if its response URL may be posted to (bot.response_url), else None: an answer
    holds personal data, and the URL came from outside."""
    if trusted_response_url(respond.response_url, api_url) is not None:
        return respond
    if respond.response_url:
        log.warning("Slack response URL refused: not an address of Slack's (slack.api_url)")
    return None


async def _ack_now(ack: AsyncAck) -> None:
    """The acknowledgement of a button or an event whose work runs in a lazy listener."""
    await ack()


async def _respond(respond: AsyncRespond, message: Message, *, replace_original: bool) -> None:
    try:
        await respond(response_type="ephemeral", replace_original=replace_original, **message)
    except Exception as exc:  # noqa: BLE001 - nothing more can be told to this user
        log.warning("could not answer through the response URL: %s", type(exc).__name__)


async def _tell_clicker(
    body: dict[str, Any],
    respond: AsyncRespond | None,
    client: AsyncWebClient,
    message: Message,
    *,
    replace_original: bool = False,
) -> None:
    """Answer the person who clicked, and only them: through the response URL when Slack gave
    one that may be used (`respond`, see checked_respond), replacing the message clicked on if
    asked, else as an ephemeral message in the channel."""
    if respond is not None:
        await _respond(respond, message, replace_original=replace_original)
        return
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    if not channel:
        return
    try:
        await client.chat_postEphemeral(channel=channel, user=body["user"]["id"], **message)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not post the ephemeral answer: %s", type(exc).__name__)


# A rate-limited views.publish is tried once more after Slack's Retry-After, if that is this short;
# else the tab keeps its last view until the next time it is opened.
HOME_RETRY_LIMIT_SECONDS = 10.0


def _retry_after(exc: SlackApiError) -> float | None:
    """Seconds to wait before trying again, for a 429 (Retry-After), else None."""
    response = exc.response
    if getattr(response, "status_code", None) != 429:
        return None
    headers = getattr(response, "headers", None) or {}
    try:
        return max(0.0, float(headers.get("Retry-After", "1")))
    except (TypeError, ValueError):
        return 1.0


async def publish_home(
    client: AsyncWebClient,
    deps: BotDeps,
    slack_user_id: str,
    view_hash: str | None,
    notice: Message | None = None,
) -> None:
    """Build this user's Home view and publish it, with `notice` (an answer, e.g. to a button)
    at the top. With the hash of the view Slack showed, a publish that lost a race
    (hash_conflict: a newer view is there) is left alone."""
    view = await home_view(deps, slack_user_id)
    if notice is not None:
        view["blocks"] = [*view["blocks"][:1], *notice.get("blocks", [])[:1], *view["blocks"][1:]][:100]
    for attempt in (1, 2):
        try:
            await client.views_publish(user_id=slack_user_id, view=view, hash=view_hash)
            return
        except SlackApiError as exc:
            wait = _retry_after(exc)
            if attempt == 1 and wait is not None and wait <= HOME_RETRY_LIMIT_SECONDS:
                await asyncio.sleep(wait)
                continue
            error = exc.response.get("error") if wait is None else "ratelimited"
            level = logging.INFO if error == "hash_conflict" else logging.WARNING
            log.log(level, "App Home not published: %s", error)
            return
        except Exception as exc:  # noqa: BLE001 - the tab keeps its last view
            log.warning("App Home not published: %s", type(exc).__name__)
            return


def _home_hash(body: dict[str, Any]) -> str | None:
    view = body.get("view")
    if isinstance(view, dict) and view.get("type") == "home" and isinstance(view.get("hash"), str):
        return str(view["hash"])
    return None


def _user_id(body: dict[str, Any]) -> str:
    user = body.get("user")
    if isinstance(user, dict):
        return str(user.get("id") or "")
    return str(body.get("user_id") or "")


# What a slash command does with its payload (Bolt's `command`: the form fields Slack sent).
SlashWork = Callable[[dict[str, Any]], Coroutine[Any, Any, Message]]


def slash_commands(deps: BotDeps) -> dict[str, SlashWork]:
    """Each slash command's work, by command."""

    def flags(command: dict[str, Any]) -> Coroutine[Any, Any, Message]:
        return flags_reply(deps, command.get("user_id", ""), command.get("text") or "")

    def tasks(command: dict[str, Any]) -> Coroutine[Any, Any, Message]:
        return tasks_reply(deps, command.get("user_id", ""))

    def ack(command: dict[str, Any]) -> Coroutine[Any, Any, Message]:
        return ack_reply(deps, command.get("user_id", ""), command.get("text") or "", "slack_command")

    return {"/flags": flags, "/tasks": tasks, "/ack": ack}


async def _on_error(error: Exception) -> None:
    # Bolt's default handler logs the traceback, whose frames can hold personal data.
    log.error("Slack request failed: %s", type(error).__name__)


def _slash_listener(work: SlashWork, budget: float, api_url: str) -> Callable[..., Awaitable[None]]:
    async def on_command(ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        await _answer(ack, respond, asyncio.create_task(work(command)), budget, api_url)

    return on_command


def register(app: AsyncApp, deps: BotDeps) -> None:
    """Register the casewatch listeners on `app`."""
    budget = deps.answer_budget_seconds
    api_url = deps.ctx.settings.slack.api_url

    async def on_ack_button(
        body: dict[str, Any],
        action: dict[str, Any],
        respond: AsyncRespond,
        client: AsyncWebClient,
    ) -> None:
        user = _user_id(body)
        message = await ack_reply(deps, user, str(action.get("value") or ""), "slack_button")
        if (body.get("view") or {}).get("type") == "home":
            # On the Home tab there is no message to answer under: the refreshed tab is the answer.
            await publish_home(client, deps, user, _home_hash(body), notice=message)
            return
        await _tell_clicker(body, checked_respond(respond, api_url), client, message)

    async def on_show_button(
        body: dict[str, Any],
        action: dict[str, Any],
        respond: AsyncRespond,
        client: AsyncWebClient,
    ) -> None:
        message = await flags_reply(deps, _user_id(body), str(action.get("value") or ""))
        await _tell_clicker(body, checked_respond(respond, api_url), client, message, replace_original=True)

    async def on_home_opened(event: dict[str, Any], client: AsyncWebClient) -> None:
        # Acknowledged by _ack_now before this runs; the "messages" tab has nothing of ours.
        if event.get("tab") != "home" or not event.get("user"):
            return
        await publish_home(client, deps, str(event["user"]), _home_hash(event))

    for name, work in slash_commands(deps).items():
        app.command(name)(_slash_listener(work, budget, api_url))
    # Buttons and the Home event: acknowledged at once, their work (database, Slack Web API calls,
    # a rate-limit wait) in lazy listeners, after the acknowledgement has gone.
    app.action(render.ACK_ACTION_ID)(ack=_ack_now, lazy=[on_ack_button])
    app.action(render.SHOW_ACTION_ID)(ack=_ack_now, lazy=[on_show_button])
    app.event("app_home_opened")(ack=_ack_now, lazy=[on_home_opened])
    app.error(_on_error)
