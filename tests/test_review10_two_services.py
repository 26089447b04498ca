"""Review (tenth session) of the ninth session's fast paths under concurrent writers: two started
services (two serve processes) on one database, each with its delivery workers, its group
committer and its keep-alive notifiers (the armed MAIL FROM), post at the same time checks of the
same nominals (the batch's locking reads by one array parameter, the combined write on
PostgreSQL, the held nominals routing the alerts, the audit's one statement), singles and
batches. Every request is answered 202, every event stored once, every alert routed by the
nominal's own area and manager, and every delivery sent once by one of the two: none twice, none
lost, each mail in the sink once. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from sqlalchemy import select

from casewatch.clock import FixedClock
from casewatch.store.models import Alert, BorderCheck, Delivery, Event
from casewatch.wiring import Service, start_background, stop
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.support import TEAMS, client_for, envelope, make_service, nominal_data, signed_post
from tests.test_review10_delivery_differential import NPT, ROUTING, TOKEN, _until_settled
from tests.test_triggers_case_data import utc

NOW = "2026-11-20T09:00:00Z"
NOMINALS = 24
AREAS = ("N01", "S02")
MANAGERS = ("PC1234", "PC5678")


def _ref(n: int) -> str:
    return f"VS-{7000000 + n:07d}"


def _setup() -> list[dict[str, Any]]:
    return [
        envelope("nominal.upsert", nominal_data(area=AREAS[n % 2], offender_manager=MANAGERS[n % 2],
                                                team="north" if n % 2 == 0 else "south"),
                 id=f"setup-{n}", visor_ref=_ref(n), occurred_at="2026-11-01T00:00:00Z")
        for n in range(NOMINALS)
    ]


def _checks(side: str, n: int) -> dict[str, Any]:
    direction = "outbound" if side == "a" else "inbound"
    minute = 10 if side == "a" else 20
    return envelope("travel.border_alert", id=f"{side}-check-{n}", visor_ref=_ref(n),
                    occurred_at=f"2026-11-20T08:{minute}:00Z", port=f"Port {side}{n}", direction=direction,
                    checked_at=f"2026-11-20T08:{minute}:00Z")


def _requests(side: str) -> list[list[dict[str, Any]]]:
    """Singles for half the nominals, batches of four for the rest; each side in its own order."""
    order = list(range(NOMINALS)) if side == "a" else list(reversed(range(NOMINALS)))
    singles = [[_checks(side, n)] for n in order[: NOMINALS // 2]]
    rest = order[NOMINALS // 2:]
    batches = [[_checks(side, n) for n in rest[i: i + 4]] for i in range(0, len(rest), 4)]
    return [*singles, *batches]


async def _service(url: str, slack: SlackStandIn, mail: MailSink) -> Service:
    teams = [{**team, "npt_channels": NPT} for team in TEAMS]
    return await make_service(
        url, clock=FixedClock(utc(NOW)), routing=ROUTING, teams=teams,
        slack={"mode": "http", "bot_token": TOKEN, "signing_secret": "review10-not-real",
               "api_url": slack.url},
        smtp={"host": "127.0.0.1", "port": mail.port, "timeout_seconds": 5},
        delivery={"send_timeout_seconds": 5, "chat_interval_seconds": 0, "email_interval_seconds": 0,
                  "poll_seconds": 0.05},
        schedules={"enabled": False},
    )


async def test_two_services_at_once_store_route_and_send_each_thing_once(db_url: str) -> None:
    mail = MailSink().start()
    try:
        async with SlackStandIn(token=TOKEN) as slack:
            first, second = await _service(db_url, slack, mail), await _service(db_url, slack, mail)
            try:
                await start_background(first)
                await start_background(second)
                async with client_for(first) as a, client_for(second) as b:
                    setup = await signed_post(a, "/api/v1/events", _setup())
                    assert setup.status == 202, await setup.text()

                    async def side(client: Any, name: str) -> list[int]:
                        statuses = []
                        for request in _requests(name):
                            resp = await signed_post(client, "/api/v1/events", request)
                            statuses.append(resp.status)
                        return statuses

                    statuses = await asyncio.gather(side(a, "a"), side(b, "b"))
                assert all(s == 202 for run in statuses for s in run), statuses
                await _until_settled(first)
                stored = await _stored(first)
            finally:
                await stop(second)
                await stop(first)
            posts = len(slack.calls_to("chat.postMessage"))
    finally:
        mail.stop()
    assert stored["events"] == NOMINALS * 3 and stored["checks"] == NOMINALS * 2
    deliveries = stored["deliveries"]
    assert deliveries and all(d["state"] == "sent" and d["attempts"] == 1 for d in deliveries)
    # Each alert routed by its nominal's own area (npt channel) and manager (owner email).
    for d in deliveries:
        n = int(d["visor_ref"][-2:]) if d["visor_ref"] else None
        if n is None:
            continue
        if d["receiver"].startswith("npt:"):
            assert d["target"] == NPT[AREAS[n % 2]], d
        if d["receiver"].startswith("officer:"):
            assert d["receiver"] == f"officer:{MANAGERS[n % 2]}", d
    receivers = Counter(d["receiver"].split(":")[0] for d in deliveries)
    assert receivers["npt"] >= NOMINALS and receivers["officer"] >= NOMINALS, receivers
    emails = [d for d in deliveries if d["channel"] == "email"]
    assert len(mail.messages) == len(emails)
    ids = Counter(str(m["Message-ID"]) for m in mail.messages)
    assert all(c == 1 for c in ids.values()), [i for i, c in ids.items() if c > 1]
    assert posts == len(deliveries) - len(emails)


async def _stored(service: Service) -> dict[str, Any]:
    async with service.sessions() as session:
        events = len(list((await session.execute(select(Event.id))).scalars()))
        checks = len(list((await session.execute(select(BorderCheck.id))).scalars()))
        rows = (await session.execute(
            select(Delivery.channel, Delivery.receiver, Delivery.target, Delivery.state, Delivery.attempts,
                   Alert.visor_ref, Alert.kind).join(Alert, Alert.id == Delivery.alert_id)
        )).all()
    deliveries = [dict(zip(("channel", "receiver", "target", "state", "attempts", "visor_ref", "kind"), r,
                           strict=True)) for r in rows]
    json.dumps(deliveries)
    return {"events": events, "checks": checks, "deliveries": deliveries}
