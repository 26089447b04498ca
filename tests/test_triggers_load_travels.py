"""triggers.load.travels reads a nominal's travel notifications and marks their cancellations in
one statement (eighth session; before, the cancelled trips and the notifications were two reads):
it gives what the two reads give, row by row, on SQLite and PostgreSQL. The travel notification
and cancellation are the Sexual Offences Act 2003 s.86 / SI 2004/1220 notifications (a trip abroad
notified, then withdrawn); fictional nominals only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from casewatch.ingest.pipeline import ingest
from casewatch.store.models import TravelNotification
from casewatch.triggers import load
from casewatch.wiring import Service
from tests.support import envelope, nominal_data
from tests.test_ingest_single_fast import _parsed, service_fixture  # noqa: F401 (fixture)

AT = "2026-11-01T00:00:00Z"


def _on(ref: str, type_: str, n: int, **data: Any) -> dict[str, Any]:
    return envelope(type_, id=f"lt-{ref}-{n}", visor_ref=ref, occurred_at=AT, **data)


async def _two_reads(service: Service, ref: str) -> list[Any]:
    """The reads load.travels made before: the nominal's cancelled trips, then its notifications."""
    async with service.sessions() as session:
        cancelled = await load.cancelled_trips(session, ref)
        rows = await session.execute(select(TravelNotification).where(TravelNotification.visor_ref == ref))
        return sorted((load.travel_facts(t, cancelled) for t in rows.scalars()), key=lambda t: t.event_id)


async def test_travels_in_one_statement_are_the_two_reads(service: Service) -> None:
    ref, other = "VS-0090001", "VS-0090002"
    trip = {"departure_on": "2026-11-20", "return_on": "2026-11-27"}
    events = [
        envelope("nominal.upsert", nominal_data(), id="lt-up-1", visor_ref=ref, occurred_at=AT),
        envelope("nominal.upsert", nominal_data(), id="lt-up-2", visor_ref=other, occurred_at=AT),
        _on(ref, "travel.notified", 1, trip_id="T-KEPT", **trip),
        _on(ref, "travel.notified", 2, trip_id="T-WITHDRAWN", **trip),
        _on(ref, "travel.cancelled", 3, trip_id="T-WITHDRAWN"),
        _on(ref, "travel.notified", 4, **trip),  # no trip id: never cancelled
        # Another nominal's cancellation of a trip id this one also uses cancels only its own.
        _on(other, "travel.notified", 5, trip_id="T-KEPT", **trip),
        _on(other, "travel.cancelled", 6, trip_id="T-KEPT"),
    ]
    await ingest(service.sessions, _parsed(events), service.ctx, source="test")
    for who in (ref, other, "VS-0090003"):
        async with service.sessions() as session:
            one = sorted(await load.travels(session, who), key=lambda t: t.event_id)
        assert one == await _two_reads(service, who)
    async with service.sessions() as session:
        mine = {t.trip_id: t.cancelled for t in await load.travels(session, ref)}
        theirs = {t.trip_id: t.cancelled for t in await load.travels(session, other)}
    assert mine == {"T-KEPT": False, "T-WITHDRAWN": True, None: False}
    assert theirs == {"T-KEPT": True}
