"""The demo's probation events, posted over real HTTP on loopback to a real service (SQLite and
PostgreSQL): each shows what it says, and posting them again gives duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from casewatch.clock import SystemClock
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.models import Alert
from casewatch.wiring import start_http, stop
from integrations.probation.demo import LEVEL_UP, RECALLED, RELEASED, post_demo_events
from tests.support import SECRET, envelope, make_service, nominal_data


async def test_the_demo_events_go_through_the_real_endpoint(db_url: str) -> None:
    service = await make_service(
        db_url, SystemClock(), probation={"enabled": True}, http={"host": "127.0.0.1", "port": 0}
    )
    try:
        now = datetime.now(UTC)
        raw = [
            envelope(
                "nominal.upsert",
                nominal_data(crn=f"X{n:06d}", noms_number=f"A{n:04d}DM", mappa_level=2),
                visor_ref=f"VS-D{n:06d}", occurred_at=now - timedelta(days=10),
            )
            for n in (LEVEL_UP, RECALLED, RELEASED)
        ]
        envelopes, errors = parse_envelopes(raw)
        assert not errors
        await ingest(service.sessions, envelopes, service.ctx, source="demo")
        port = await start_http(service)

        first = await post_demo_events(port, SECRET, now=now)
        outcomes = [(reply["items"][0]["outcome"], reply["items"][0].get("reason")) for _, reply in first]
        assert outcomes == [
            ("accepted", None), ("accepted", None), ("accepted", None),
            ("ignored", "unknown_person"), ("ignored", "unknown_type"),
        ]
        async with service.sessions() as session:
            kinds = set((await session.execute(select(Alert.kind))).scalars())
        assert {"mappa.level_changed", "recall.issued"} <= kinds

        again = await post_demo_events(port, SECRET, now=now + timedelta(minutes=5))
        assert [reply["items"][0]["outcome"] for _, reply in again][:3] == ["duplicate"] * 3
    finally:
        await stop(service)
