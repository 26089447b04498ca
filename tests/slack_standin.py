"""A local stand-in for the Slack Web API, for tests: aiohttp on 127.0.0.1, any free port.

    async with SlackStandIn(token="xoxb-test") as slack:
        settings = ... slack.api_url = slack.url ...
        slack.fail_next("chat.postMessage", status=429, retry_after=7)
        slack.fail_next("chat.postMessage", error="channel_not_found")
        slack.fail_next("chat.postMessage", status=503)
        slack.delay_next("chat.postMessage", 5.0)       # a slow reply
        slack.channel_errors["C0GONE"] = "channel_not_found"   # every call to that channel
        ...
        slack.calls_to("chat.postMessage")  # what was asked, in order

Implements chat.postMessage (keeping message metadata), chat.update, chat.postEphemeral,
conversations.open (DMs), conversations.history, conversations.replies, views.publish (App Home
views per user, kept in `home_views`, with Slack's `hash` check: hash_conflict when the hash given
is not the current one) and auth.test, keeping posted messages so that chat.update behaves like Slack
(message_not_found for an unknown ts). Any other method is
recorded and answered {"ok": true} plus whatever `responses[method]` holds, so a Bolt app can be
pointed at it too. `delay_next(..., handle_first=True)` posts at once but answers late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str
    at: float = field(default_factory=time.monotonic)


@dataclass
class Script:
    status: int = 200
    error: str | None = None
    retry_after: float | None = None
    body: Any = None
    delay: float = 0.0
    handle_first: bool = False  # do the work, then wait before answering


class SlackStandIn:
    def __init__(self, token: str | None = None, *, bot_user_id: str = "UCASEWATCH") -> None:
        self.token = token  # if set, calls with another token get invalid_auth
        self.bot_user_id = bot_user_id
        self.calls: list[Call] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.channel_errors: dict[str, str] = {}
        self.responses: dict[str, dict[str, Any]] = {}
        self.home_views: dict[str, dict[str, Any]] = {}  # user id -> the published Home view
        self._scripts: dict[str, deque[Script]] = {}
        self._ts = 0
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()  # cuts slow replies short, so stop() never waits on them
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL to give slack_sdk (slack.api_url)."""
        return f"http://127.0.0.1:{self.port}/api/"

    async def start(self) -> SlackStandIn:
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        app.router.add_get("/api/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # noqa: SLF001 (aiohttp keeps the bound port here)
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackStandIn:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- scripting ------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
        times: int = 1,
    ) -> None:
        """The next `times` calls of `method` fail: HTTP `status` (429 adds Retry-After), or a
        Slack error body {"ok": false, "error": error}, or exactly `body`."""
        if status == 200 and error is None and body is None:
            error = "internal_error"
        for _ in range(times):
            self._scripts.setdefault(method, deque()).append(
                Script(status=status, error=error, retry_after=retry_after, body=body)
            )

    def delay_next(self, method: str, seconds: float, times: int = 1, *, handle_first: bool = False) -> None:
        """The next `times` calls of `method` answer normally, but only after `seconds`. With
        `handle_first` the call takes effect at once (the message is posted) and only the answer
        is late: a client that gives up then does not know its message went out."""
        for _ in range(times):
            self._scripts.setdefault(method, deque()).append(Script(delay=seconds, handle_first=handle_first))

    def cut_delays_short(self) -> None:
        """Slow replies waiting now, and any later, answer at once (as when the stand-in stops),
        for a test that is done with its slow reply and must not leave a client waiting on it."""
        self._stopping.set()

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for_calls(self, method: str, count: int, within: float = 5.0) -> list[Call]:
        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.calls_to(method)) >= count)

        await asyncio.wait_for(enough(), within)
        return self.calls_to(method)

    # --- the API --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args = await _arguments(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token = token or str(args.pop("token", ""))
        self.calls.append(Call(method, args, token))
        async with self._changed:
            self._changed.notify_all()
        script = self._scripts.get(method)
        step = script.popleft() if script else None
        if step is not None and step.delay:
            if step.handle_first:
                body = self._answer(method, args, token)
                await self._pause(step.delay)
                return web.json_response(body)
            await self._pause(step.delay)
        if step is not None and not step.delay:
            return _scripted(step)
        return web.json_response(self._answer(method, args, token))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _answer(self, method: str, args: dict[str, Any], token: str) -> dict[str, Any]:
        if self.token is not None and token != self.token:
            return {"ok": False, "error": "invalid_auth"}
        channel = str(args.get("channel", ""))
        if channel in self.channel_errors:
            return {"ok": False, "error": self.channel_errors[channel]}
        handler = {
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "conversations.open": self._open,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "auth.test": self._auth_test,
            "views.publish": self._publish_view,
        }.get(method)
        body = handler(args) if handler else {"ok": True}
        body.update(self.responses.get(method, {}))
        return body

    def _next_ts(self) -> str:
        self._ts += 1
        return f"1700000000.{self._ts:06d}"

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        message = {
            "ts": ts,
            "text": args.get("text"),
            "blocks": args.get("blocks"),
            "thread_ts": args.get("thread_ts"),
            "metadata": args.get("metadata"),
        }
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (str(args.get("channel", "")), str(args.get("ts", "")))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        self.messages[key].update({"text": args.get("text"), "blocks": args.get("blocks")})
        return {"ok": True, "channel": key[0], "ts": key[1], "text": args.get("text")}

    def _history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel", ""))
        found = [dict(m) for (c, _), m in self.messages.items() if c == channel and not m.get("thread_ts")]
        found.sort(key=lambda m: str(m["ts"]), reverse=True)
        limit = int(args.get("limit") or 100)
        if str(args.get("include_all_metadata", "")).lower() not in ("1", "true"):
            for m in found:
                m.pop("metadata", None)
        return {"ok": True, "messages": found[:limit], "has_more": len(found) > limit}

    def _replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """conversations.replies as Slack documents it: the thread's parent (`ts`) first, then its
        replies oldest first; thread_not_found for a `ts` that is no message of the channel."""
        channel, ts = str(args.get("channel", "")), str(args.get("ts", ""))
        if (channel, ts) not in self.messages:
            return {"ok": False, "error": "thread_not_found"}
        found = [dict(self.messages[(channel, ts)])] + sorted(
            (dict(m) for (c, _), m in self.messages.items() if c == channel and m.get("thread_ts") == ts),
            key=lambda m: str(m["ts"]),
        )
        limit = int(args.get("limit") or 1000)
        if str(args.get("include_all_metadata", "")).lower() not in ("1", "true"):
            for m in found:
                m.pop("metadata", None)
        return {"ok": True, "messages": found[:limit], "has_more": len(found) > limit}

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("user"):
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users", ""))
        if not users:
            return {"ok": False, "error": "users_list_not_supplied"}
        return {"ok": True, "channel": {"id": "D" + users.split(",")[0].lstrip("UW")}}

    def _publish_view(self, args: dict[str, Any]) -> dict[str, Any]:
        """views.publish as Slack documents it: user_id and a view are required; a Home view has
        at most 100 blocks and 250 kB; a `hash` that is not the current view's is a conflict.
        Each publish gets a new hash, returned with the view."""
        user = str(args.get("user_id", ""))
        view = args.get("view")
        if not user or not isinstance(view, dict) or view.get("type") != "home":
            return {"ok": False, "error": "invalid_arguments"}
        if len(json.dumps(view)) > 250_000:
            return {"ok": False, "error": "view_too_large"}
        blocks = view.get("blocks")
        if not isinstance(blocks, list) or len(blocks) > 100:
            return {"ok": False, "error": "invalid_arguments"}
        current = self.home_views.get(user)
        given = args.get("hash")
        if given and (current is None or given != current["hash"]):
            return {"ok": False, "error": "hash_conflict"}
        published = {
            **view,
            "id": current["id"] if current else f"V0HOME{len(self.home_views) + 1:04d}",
            "team_id": "T0CASEWATCH",
            "hash": f"{time.time():.0f}.{self._next_ts()}",
        }
        self.home_views[user] = published
        return {"ok": True, "view": published}

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://casewatch-test.slack.example/",
            "team": "Casewatch Test",
            "user": "casewatch",
            "team_id": "T0CASEWATCH",
            "user_id": self.bot_user_id,
            "bot_id": "B0CASEWATCH",
        }


def _scripted(step: Script) -> web.Response:
    headers = {"Retry-After": f"{step.retry_after:g}"} if step.retry_after is not None else {}
    if step.body is not None:
        return web.json_response(step.body, status=step.status, headers=headers)
    if step.status >= 500:
        return web.Response(status=step.status, text="upstream unavailable", headers=headers)
    if step.status == 429:
        return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
    return web.json_response({"ok": False, "error": step.error}, status=step.status, headers=headers)


async def _arguments(request: web.Request) -> dict[str, Any]:
    args: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            data = await request.json()
            if isinstance(data, dict):
                args.update(data)
        else:
            args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    for key in ("blocks", "attachments", "metadata", "view"):
        if isinstance(args.get(key), str):
            try:
                args[key] = json.loads(args[key])
            except ValueError:
                pass
    return args
