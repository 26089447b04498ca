"""The e2e bench's Slack stand-in and event source in processes of their own (bench.slack_process,
bench.loadgen.PacedSender) answer and send exactly as the in-loop ones, and their times are on the
bench's own clock."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from bench.cases import border_check_post, serve
from bench.dataset import INGEST_SECRET
from bench.loadgen import PacedSender, send_paced
from bench.slack_process import ProcessSlackStandIn
from casewatch.api import auth
from tests.slack_standin import SlackStandIn

TOKEN = "xoxb-bench8-test"


def _calls_script() -> list[tuple[str, str, Any, str]]:
    """(method, content kind, arguments, token): what the bench's notifier sends, and the stand-in's
    documented refusals, form-encoded and JSON."""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "VS-T000001 border check"}}]
    return [
        ("auth.test", "form", {}, TOKEN),
        ("chat.postMessage", "json", {"channel": "C0TEAM1", "text": "alert VS-T000001", "blocks": blocks,
                                      "metadata": {"event_type": "casewatch_alert",
                                                   "event_payload": {"alert_id": 7}}}, TOKEN),
        ("chat.postMessage", "form", {"channel": "C0TEAM2", "text": "alert VS-T000002",
                                      "blocks": json.dumps(blocks)}, TOKEN),
        ("conversations.open", "json", {"users": "U0OFFICER1"}, TOKEN),
        ("chat.update", "json", {"channel": "C0TEAM1", "ts": "1700000000.000001", "text": "updated"}, TOKEN),
        ("chat.update", "json", {"channel": "C0TEAM1", "ts": "1700000000.999999", "text": "lost"}, TOKEN),
        ("chat.postMessage", "json", {"channel": "", "text": "nowhere"}, TOKEN),
        ("chat.postMessage", "json", {"channel": "C0TEAM1"}, TOKEN),
        ("chat.postMessage", "json", {"channel": "C0TEAM1", "text": "forged"}, "xoxb-not-ours"),
        ("conversations.history", "form", {"channel": "C0TEAM1", "include_all_metadata": "true"}, TOKEN),
    ]


async def _exercise(url: str) -> list[tuple[int, Any, float, float]]:
    """Each scripted call's (status, answer, monotonic before, monotonic after)."""
    out = []
    async with aiohttp.ClientSession() as http:
        for method, kind, args, token in _calls_script():
            headers = {"Authorization": f"Bearer {token}"}
            before = time.monotonic()
            if kind == "json":
                request = http.post(f"{url}{method}", json=args, headers=headers)
            else:
                request = http.post(f"{url}{method}", data=urlencode(args), headers={
                    **headers, "Content-Type": "application/x-www-form-urlencoded"})
            async with request as r:
                answer = await r.json()
                out.append((r.status, answer, before, time.monotonic()))
    return out


async def test_the_process_stand_in_answers_and_records_as_the_in_loop_one() -> None:
    async with SlackStandIn(token=TOKEN) as here:
        expected = await _exercise(here.url)
        expected_calls = [(c.method, c.args, c.token) for c in here.calls]
    async with ProcessSlackStandIn(token=TOKEN) as there:
        got = await _exercise(there.url)
        # The child's queue feeds the parent from a thread of its own: a call recorded before its
        # answer went out may still be on its way (the bench polls for arrivals likewise).
        for _ in range(500):  # up to 5 s
            if len(there.calls) >= len(_calls_script()):
                break
            await asyncio.sleep(0.01)
        got_calls = list(there.calls)
        posts = there.calls_to("chat.postMessage")
    assert [(status, answer) for status, answer, _, _ in got] == [(s, a) for s, a, _, _ in expected]
    assert [(c.method, c.args, c.token) for c in got_calls] == expected_calls
    assert len(got_calls) == len(_calls_script())
    # The documented behaviours, so that the comparison is not of two wrong answers.
    answers = [answer for _, answer, _, _ in got]
    assert answers[1]["ok"] and answers[1]["ts"] == "1700000000.000001"
    assert answers[4]["ok"] and answers[5] == {"ok": False, "error": "message_not_found"}
    assert answers[6]["error"] == "channel_not_found" and answers[7]["error"] == "no_text"
    assert answers[8] == {"ok": False, "error": "invalid_auth"}
    assert answers[9]["messages"][0]["metadata"]["event_payload"] == {"alert_id": 7}
    # Each call's time is on this process's monotonic clock, within its request.
    for call, (_, _, before, after) in zip(got_calls, got, strict=True):
        assert before <= call.at <= after
    assert [c.args["channel"] for c in posts] == ["C0TEAM1", "C0TEAM2", "", "C0TEAM1", "C0TEAM1"]


@pytest.fixture
async def events_server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback /api/v1/events that checks the bench's signature as the service does and answers
    202, noting each POST's event, its arrival (monotonic) and the client's port."""
    seen: list[dict[str, Any]] = []

    async def post(request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.read()
        problem = auth.check(
            INGEST_SECRET, request.headers.get(auth.TIMESTAMP_HEADER),
            request.headers.get(auth.SIGNATURE_HEADER), body, now=datetime.now(UTC),
            max_skew_seconds=300, method="POST", target=request.path_qs,
        )
        if problem is not None:
            return web.json_response({"error": problem}, status=401)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen.append({"event": json.loads(body), "at": arrived, "port": peer[1] if peer else None})
        return web.json_response({"accepted": 1}, status=202)

    app = web.Application()
    app.router.add_post("/api/v1/events", post)
    async with serve(app) as url:
        yield f"{url}/api/v1/events", seen


@pytest.mark.parametrize("where", ["process", "loop"])
async def test_the_paced_sender_signs_paces_and_times_each_post(
    where: str, events_server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = events_server
    rate = 40.0
    batches = [["VS-T000001", "VS-T000002", "VS-T000003"], ["VS-T000004", "VS-T000005"]]
    results = []
    if where == "process":
        sender = PacedSender(url, border_check_post).start()
        try:
            for keys in batches:
                results.append(await sender.send(keys, rate))
        finally:
            sender.stop()
    else:
        async with aiohttp.ClientSession() as http:
            for keys in batches:
                results.append(await send_paced(http, url, border_check_post, keys, rate))
    sent: dict[str, float] = {}
    for keys, (sent_at, answered, statuses) in zip(batches, results, strict=True):
        assert list(sent_at) == keys and statuses == [202] * len(keys) and len(answered) == len(keys)
        sent.update(sent_at)
        for key, took in zip(keys, answered, strict=True):
            arrival = next(s["at"] for s in seen if s["event"]["visor_ref"] == key)
            assert sent_at[key] <= arrival <= sent_at[key] + took  # one clock for both processes
    assert [s["event"]["visor_ref"] for s in seen] == [k for keys in batches for k in keys]
    assert all(s["event"]["type"] == "travel.border_alert" for s in seen)
    assert len({s["event"]["id"] for s in seen}) == len(seen)
    times = list(sent.values())
    assert all(b - a >= 1 / rate for a, b in zip(times, times[1:], strict=False))
    # One keep-alive connection for every POST, across batches, as the in-loop client keeps.
    assert len({s["port"] for s in seen}) == 1
