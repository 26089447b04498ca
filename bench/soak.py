"""A bounded soak: steady ingest through the events API while the Slack stand-in answers 429 in
bursts; at the end, the outbox must drain (queue depth 0, nothing dead) and memory stay flat.

    python -m bench.soak --seconds 600          # the long run (SQLite unless --db-url)

The suite runs it for ~20 s (tests/test_robustness_soak.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from typing import Any

import aiohttp
from sqlalchemy import select

from bench.cases import events_signed, serve
from casewatch.clock import SystemClock
from casewatch.config import load_config
from casewatch.store.engine import make_engine
from casewatch.store.migrate import upgrade
from casewatch.store.models import Delivery
from casewatch.wiring import create_service, start_background, stop
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.support import nominal_data

SECRET_SECTIONS = {"ingest": {"secret": "bench-ingest-secret-not-real"}}
TOKEN = "xoxb-soak-not-real"  # noqa: S105 (fictional, loopback only)


def _rss_mb() -> float:
    """Current resident set size (Linux), else the peak."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return round(pages * resource.getpagesize() / 2**20, 1)
    except OSError:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _events(n: int) -> list[dict[str, Any]]:
    ref = f"VS-S{n:07d}"
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    base: list[dict[str, Any]] = [
        {"id": f"soak-{n}-visit", "type": "visit.recorded", "occurred_at": at, "visor_ref": ref,
         "data": {"visited_on": at[:10]}},
    ]
    if n % 2 == 0:  # every other tick opens an alert (a recall: control room, team, SPOC)
        base.append({"id": f"soak-{n}-nominal", "type": "nominal.upsert", "occurred_at": at,
                     "visor_ref": ref, "data": nominal_data(team="north", offender_manager="PC0001")})
        base.append({"id": f"soak-{n}-recall", "type": "recall.issued", "occurred_at": at, "visor_ref": ref,
                     "data": {"recall_type": "standard", "issued_at": at}})
    return base


async def run_soak(
    db_url: str, seconds: float, *, ticks_per_s: float = 5.0, drain_s: float = 30.0
) -> dict[str, Any]:
    engine = make_engine(db_url)
    await upgrade(engine)
    await engine.dispose()
    mail = MailSink().start()
    out: dict[str, Any] = {"seconds": seconds, "ticks_per_s": ticks_per_s}
    try:
        async with SlackStandIn(token=TOKEN) as slack:
            settings = load_config("/dev/null", environ={}, overrides={
                **SECRET_SECTIONS,
                "database": {"url": db_url},
                "service": {"log_level": "WARNING"},
                "slack": {"mode": "http", "bot_token": TOKEN, "signing_secret": "soak-not-real",
                          "api_url": slack.url},
                "smtp": {"host": "127.0.0.1", "port": mail.port},
                "routing": {"control_room_channel": "C0SOAKCR"},
                "delivery": {"poll_seconds": 0.1, "chat_interval_seconds": 0, "backoff_base_seconds": 0.5,
                             "backoff_max_seconds": 2, "fallback_after_seconds": 3600},
                "schedules": {"enabled": False},
                "teams": [{"id": "north", "name": "North (fictional)", "channel": "C0SOAKN",
                           "spoc_email": "north.spoc@force.example"}],
            })
            service = await create_service(settings, SystemClock())
            try:
                await start_background(service)
                async with serve(service.app) as url, aiohttp.ClientSession() as http:
                    started = time.monotonic()
                    rss_start = _rss_mb()
                    statuses: Counter[int] = Counter()
                    n = bursts = 0
                    while time.monotonic() - started < seconds:
                        if n % int(3 * ticks_per_s) == 0:  # every ~3 s, Slack throttles for a while
                            for _ in range(5):
                                slack.fail_next("chat.postMessage", status=429, retry_after=1)
                            bursts += 1
                        body = json.dumps(_events(n)).encode()
                        headers = events_signed(body)
                        async with http.post(f"{url}/api/v1/events", data=body, headers=headers) as r:
                            statuses[r.status] += 1
                            await r.read()
                        n += 1
                        await asyncio.sleep(1 / ticks_per_s)
                    out.update(ticks=n, bursts=bursts, statuses=dict(statuses))
                    drain_started = time.monotonic()
                    depth = -1
                    while time.monotonic() - drain_started < drain_s:
                        async with service.sessions() as session:
                            states = Counter((await session.execute(select(Delivery.state))).scalars())
                        depth = states["pending"] + states["sending"]
                        if depth == 0:
                            break
                        await asyncio.sleep(0.25)
                    out.update(
                        drain_seconds=round(time.monotonic() - drain_started, 2), queue_depth=depth,
                        deliveries=dict(states), rss_start_mb=rss_start, rss_end_mb=_rss_mb(),
                        slack_429_answered=len(slack.calls_to("chat.postMessage")) - len(slack.messages),
                        mails=len(mail.messages),
                    )
            finally:
                await stop(service)
    finally:
        mail.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description="a bounded soak with 429 bursts")
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--db-url", default="", help="default: a temporary SQLite file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="casewatch-soak-") as tmp:
        url = args.db_url or f"sqlite+aiosqlite:///{tmp}/soak.db"
        result = asyncio.run(run_soak(url, args.seconds))
    print(json.dumps(result, indent=2))
    ok = result["queue_depth"] == 0 and "dead" not in result["deliveries"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
