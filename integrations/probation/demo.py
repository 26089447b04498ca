"""The demo's probation feed: a few fictional domain events about the demo's nominals (their CRN is
X<number:06>, their NOMS number A<number:04>DM: casewatch/demo/data.py) posted, signed with the
ingest secret, to a running service's POST /api/v1/probation/events, as a queue bridge would.

Each goes in the SNS notification an SQS subscriber receives, with a fixed MessageId, so running
the demo again in the same folder gives duplicates.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timedelta
from typing import Any

import aiohttp

from casewatch.api import auth
from integrations.probation import samples
from integrations.probation.http import ROUTE

# Demo nominals nothing else in the demo uses (the scenarios of casewatch/demo/data.py use 1 to
# 26, the snapshot demo the east team's from 27: east is every third, 27, 30, ...).
LEVEL_UP, RECALLED, RELEASED = 40, 41, 43


def demo_events(now: datetime) -> list[tuple[str, dict[str, Any]]]:
    """(what it shows, the SNS notification) for each demo domain event."""
    at = now - timedelta(hours=2)

    def crn(n: int) -> str:
        return f"X{n:06d}"

    def noms(n: int) -> str:
        return f"A{n % 10000:04d}DM"

    events = [
        (
            f"VS-D{LEVEL_UP:06d}: MAPPA registration updated to level 3 (mappa.level_changed)",
            samples.mappa_registration(
                "probation-case.registration.updated", crn=crn(LEVEL_UP), occurred_at=at, level=3,
                registration_id="900001",
            ),
        ),
        (
            f"VS-D{RECALLED:06d}: recall recorded by probation (recall.issued, to the control room)",
            samples.recall_added(crn=crn(RECALLED), occurred_at=at, recall_type="STANDARD"),
        ),
        (
            f"VS-D{RELEASED:06d}: released from prison (detention.ended: a notification is owed)",
            samples.prisoner_moved(
                "prison-offender-events.prisoner.released", noms=noms(RELEASED), occurred_at=at,
                reason="RELEASED",
            ),
        ),
        (
            "a person who is not a nominal (acknowledged, ignored, counted)",
            samples.mappa_registration("probation-case.registration.added", crn="X999999", occurred_at=at),
        ),
        (
            "an event type casewatch does not map (acknowledged, ignored, counted)",
            samples.domain_event("probation-case.address.created", occurred_at=at, crn=crn(LEVEL_UP)),
        ),
    ]
    return [
        (shows, samples.sns_notification(event, message_id=f"demo-probation-{number}"))
        for number, (shows, event) in enumerate(events, start=1)
    ]


async def post_demo_events(
    port: int, secret: str, *, now: datetime, host: str = "127.0.0.1"
) -> list[tuple[str, dict[str, Any]]]:
    """Post the demo's domain events one by one; (what it shows, the service's reply) each."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError("the demo posts to a loopback address only")
    url = f"http://{host}:{port}{ROUTE}"
    replies = []
    async with aiohttp.ClientSession() as session:
        for shows, notification in demo_events(now):
            body = json.dumps(notification).encode()
            headers = auth.signed_post_headers(secret, ROUTE, body)
            async with session.post(url, data=body, headers=headers) as resp:
                reply = await resp.json()
                if resp.status != 202:
                    raise RuntimeError(f"the probation endpoint answered {resp.status}: {reply}")
            replies.append((shows, reply))
    return replies
