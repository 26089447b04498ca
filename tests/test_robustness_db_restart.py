"""The PostgreSQL server restarted under a running service (its own throw-away server from
scripts/pg-temp, restarted with `pg-temp restart`): the events API and the delivery workers
carry on once it is back, and every alert reaches every receiver exactly once. Loopback only."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from casewatch.clock import SystemClock
from casewatch.store.engine import make_engine
from casewatch.store.migrate import upgrade
from casewatch.wiring import create_service, start_background, start_http, stop
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.support import envelope, make_settings, nominal_data, signed_headers

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TOKEN = "xoxb-restart-test-not-real"


def _pg_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = ":".join([env.get("PATH", ""), *glob.glob("/usr/lib/postgresql/*/bin")])
    return env


def _pg_temp(command: str, pg_dir: Path) -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "pg-temp"), command, str(pg_dir)],
        capture_output=True, text=True, env=_pg_env(), check=True, timeout=90,
    )
    return done.stdout.strip()


@pytest.fixture
def own_pg() -> Iterator[tuple[str, Path]]:
    """A PostgreSQL server of this test's own, since it is restarted under the service."""
    if shutil.which("initdb", path=_pg_env()["PATH"]) is None:
        if os.environ.get("CASEWATCH_REQUIRE_POSTGRES") == "1":
            pytest.fail("CASEWATCH_REQUIRE_POSTGRES=1 but initdb is not installed")
        pytest.skip("no PostgreSQL server binaries (initdb)")
    # Not under pytest's 0700 tmp dirs: the server may run as another user (scripts/pg-temp).
    top = Path(tempfile.mkdtemp(prefix="casewatch-pg-restart-"))
    top.chmod(0o755)  # noqa: S103
    pg_dir = top / "pg"
    try:
        url = _pg_temp("start", pg_dir)
        yield url, pg_dir
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "pg-temp"), "stop", str(pg_dir)],
                       env=_pg_env(), check=False, timeout=90)
        shutil.rmtree(top, ignore_errors=True)


async def _post(http: aiohttp.ClientSession, base: str, events: list[dict[str, Any]]) -> tuple[int, Any]:
    body = json.dumps(events).encode()
    headers = {"Content-Type": "application/json", **signed_headers(body, ts=int(time.time()))}
    async with http.post(f"{base}/api/v1/events", data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def _until(done: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "not delivered in time"
        await asyncio.sleep(0.2)


def _border(ref: str) -> list[dict[str, Any]]:
    return [
        envelope("nominal.upsert", nominal_data(), visor_ref=ref),
        envelope("travel.border_alert", {"port": "Mockport (fictional)", "direction": "outbound",
                                         "checked_at": "2026-11-20T08:00:00Z"}, visor_ref=ref),
    ]


async def test_service_carries_on_after_the_database_restarts(own_pg: tuple[str, Path]) -> None:
    url, pg_dir = own_pg
    engine = make_engine(url)
    await upgrade(engine)
    await engine.dispose()
    mail = MailSink().start()
    try:
        async with SlackStandIn(token=TOKEN) as slack:
            settings = make_settings(
                url, http={"port": 0},
                slack={"mode": "http", "bot_token": TOKEN, "signing_secret": "restart-not-real",
                       "api_url": slack.url},
                smtp={"host": "127.0.0.1", "port": mail.port},
                delivery={"poll_seconds": 0.1, "chat_interval_seconds": 0, "backoff_base_seconds": 0.2,
                          "backoff_max_seconds": 1},
                schedules={"enabled": False},
            )
            service = await create_service(settings, SystemClock())
            try:
                port = await start_http(service)
                await start_background(service)
                base = f"http://127.0.0.1:{port}"
                async with aiohttp.ClientSession() as http:
                    status, before = await _post(http, base, _border("VS-P000001"))
                    assert status == 202, before
                    await slack.wait_for_calls("chat.postMessage", 1, within=20)

                    await asyncio.to_thread(_pg_temp, "restart", pg_dir)

                    statuses = []
                    for _ in range(20):  # the pool notices dead connections (pre-ping) and reconnects
                        status, after = await _post(http, base, _border("VS-P000002"))
                        statuses.append(status)
                        if status == 202:
                            break
                        await asyncio.sleep(0.5)
                    assert statuses[-1] == 202, (statuses, after)
                    assert all(s in (202, 503) for s in statuses), statuses  # never a bare 500
                    async with http.get(f"{base}/readyz") as ready:
                        assert ready.status == 200
                    alerts = before["alerts"] + after["alerts"]
                    await _until(lambda: all(
                        any(a in str(m.get("text")) for m in slack.messages.values()) for a in alerts
                    ) and len(mail.messages) >= 2)
            finally:
                await stop(service)
        posted = Counter(a for m in slack.messages.values() for a in alerts if a in str(m.get("text")))
    finally:
        mail.stop()
    assert all(posted[a] >= 1 for a in alerts)
    assert len(slack.messages) == len(slack.calls_to("chat.postMessage"))  # no retry re-posted
