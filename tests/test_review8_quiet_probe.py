"""Review 8 (R): the sealer's quiet signal after a real service's life (border checks that open
alerts, delivered to a Slack stand-in and an SMTP sink): nothing stays counted in flight, so the
sealer seals a gap after the work, not at its hard bound."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from sqlalchemy import func, select

from casewatch.clock import SystemClock
from casewatch.store.models import AuditEntry
from casewatch.wiring import create_service, start_background, start_http, stop
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.support import envelope, make_settings, nominal_data, signed_headers

TOKEN = "xoxb-review8-not-real"


async def _post(http: aiohttp.ClientSession, base: str, events: list[dict[str, Any]]) -> tuple[int, Any]:
    body = json.dumps(events).encode()
    headers = {"Content-Type": "application/json", **signed_headers(body, ts=int(time.time()))}
    async with http.post(f"{base}/api/v1/events", data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_nothing_stays_in_flight_after_alerts_are_delivered(db_url: str) -> None:
    mail = MailSink().start()
    try:
        async with SlackStandIn(token=TOKEN) as slack:
            settings = make_settings(
                db_url, http={"port": 0},
                slack={"mode": "http", "bot_token": TOKEN, "signing_secret": "review8-not-real",
                       "api_url": slack.url},
                smtp={"host": "127.0.0.1", "port": mail.port},
                delivery={"chat_interval_seconds": 0},
                audit={"seal_interval_seconds": 30},
                schedules={"enabled": False},
            )
            service = await create_service(settings, SystemClock())
            try:
                port = await start_http(service)
                await start_background(service)
                base = f"http://127.0.0.1:{port}"
                async with aiohttp.ClientSession() as http:
                    for n in range(3):
                        ref = f"VS-R8{n:05d}"
                        status, answer = await _post(http, base, [
                            envelope("nominal.upsert", nominal_data(), visor_ref=ref),
                            envelope("travel.border_alert", {"port": "Mockport (fictional)",
                                     "direction": "outbound", "checked_at": "2026-11-20T08:00:00Z"},
                                     visor_ref=ref),
                        ])
                        assert status == 202, answer
                    await slack.wait_for_calls("chat.postMessage", 3, within=20)
                    deadline = time.monotonic() + 10
                    while len(mail.messages) < 3:
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.05)
                # Everything answered and delivered: within a second nothing is in flight.
                deadline = time.monotonic() + 2
                while service.quiet.in_flight:
                    assert time.monotonic() < deadline, service.quiet.in_flight
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.6)
                assert service.quiet.in_flight == 0
                async with service.sessions() as session:
                    unsealed = (await session.execute(
                        select(func.count()).select_from(AuditEntry).where(AuditEntry.seq.is_(None))
                    )).scalar_one()
                assert unsealed == 0
            finally:
                await stop(service)
    finally:
        mail.stop()
