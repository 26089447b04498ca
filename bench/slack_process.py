"""The e2e bench's Slack Web API stand-in as a process of its own, as Slack is another machine.

tests.slack_standin.SlackStandIn is an aiohttp server; in the bench process it runs on the
service's own event loop, so its HTTP parsing (~0.3 ms a post, three posts an event) and its
loop turns are the service's. Here the same stand-in, unchanged, runs in a child started with
"spawn" (nothing of the bench's loop or threads is copied), on its own loop. Each call it records
is sent to the bench as (method, args, token, at), `at` its own time.monotonic() as the call was
recorded (CLOCK_MONOTONIC: one clock for every process of the machine, as bench.relay's). The
parent gives the calls back as tests.slack_standin.Call, so `calls_to` reads as the stand-in's.
Scripting (fail_next, delay_next) is not offered: the bench does not script, and tests keep the
in-process stand-in.
"""

from __future__ import annotations

import asyncio
from multiprocessing.connection import Connection
from typing import Any

from bench.relay import ChildServer
from tests.slack_standin import Call

CallRow = tuple[str, dict[str, Any], str, float]  # what crosses the process boundary


def _serve(ready: Connection, calls: Any, stop: Any, token: str | None) -> None:
    """The child: the stand-in on loopback, a free port, until `stop` is set."""
    asyncio.run(_standin(ready, calls, stop, token))


async def _standin(ready: Connection, calls: Any, stop: Any, token: str | None) -> None:
    from tests.slack_standin import SlackStandIn

    class Forwarding(list[Call]):
        """The stand-in's own list of calls, each call also put on the queue to the bench."""

        def append(self, call: Call) -> None:
            super().append(call)
            calls.put((call.method, call.args, call.token, call.at))

    standin = SlackStandIn(token=token)
    standin.calls = Forwarding()
    async with standin:
        ready.send(standin.port)
        await asyncio.to_thread(stop.wait)


class ProcessSlackStandIn(ChildServer):
    """`async with ProcessSlackStandIn(token=...) as slack`: slack.url, slack.calls and
    slack.calls_to(method), as tests.slack_standin.SlackStandIn's, from a child process."""

    def __init__(self, token: str | None = None) -> None:
        super().__init__(_serve, (token,), name="bench-slack")

    @property
    def url(self) -> str:
        """The base URL to give slack_sdk (slack.api_url)."""
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def calls(self) -> list[Call]:
        rows: list[CallRow] = self.received()
        return [Call(method, args, token, at) for method, args, token, at in rows]

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def __aenter__(self) -> ProcessSlackStandIn:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)
