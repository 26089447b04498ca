"""Issue 15: the data paths of the supervision triggers (contract v2), on SQLite and PostgreSQL,
signed events in through the real HTTP app.

- nominal.upsert's new fields (home_address, visit_every_days, licence_conditions,
  exclusion_zones, description), stored and loaded;
- meeting.held (one row per nominal and meeting_id, updated when the minutes date arrives; the
  source's ids are unique per nominal only, as order ids), rmp.reviewed,
  order.upsert (one row per nominal and order_id; a stale one ignored);
- risk_changes: a known nominal's change of risk level, MAPPA category or area, recorded on its
  second upsert (not the first) and carried to the rules as Applied.risk_change;
- the loaders the rules read (load.nominals, meetings, meetings_between, last_rmp_reviews,
  last_visits, orders, risk_change_facts);
- the 0008 migration, both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.model.facts import MeetingFacts, OrderFacts, RiskChangeFacts
from casewatch.store.migrate import current_revision, head_revision, upgrade
from casewatch.store.models import Meeting, Nominal, Order, RiskChange, RmpReview
from casewatch.triggers import load
from casewatch.triggers.applied import Applied
from casewatch.triggers.dispatch import on_applied as original
from tests.support import downgrade_to, envelope, nominal_data, service_client, signed_post
from tests.test_triggers_case_data import utc

EVENTS = "/api/v1/events"
REF = "VS-TEST-0150"
OTHER = "VS-TEST-0151"  # a nominal with none of the new records
CLOCK = FixedClock(utc("2026-12-14T00:00:00Z"))
ADDRESS = "1 Fictional Road\nSampletown"  # free text keeps line breaks
CONDITIONS = ["Fictional condition: reside where approved", "Fictional condition: curfew 19:00-07:00"]
ZONES = ["Fictional Park, Sampletown"]
DESCRIPTION = "Fictional: tall, short grey hair"
PROHIBITION = "Fictional prohibition: no unsupervised contact"
AT = "2026-11-01T00:00:00Z"


def _event(
    type_: str, event_id: str, data: dict[str, Any], ref: str = REF, at: str = "2026-11-01T00:00:00Z"
) -> dict[str, Any]:
    return envelope(type_, data, id=event_id, visor_ref=ref, occurred_at=at)


def _upsert(event_id: str, at: str, ref: str = REF, **fields: Any) -> dict[str, Any]:
    return _event("nominal.upsert", event_id, nominal_data(**fields), ref=ref, at=at)


def _meeting(
    event_id: str, at: str, meeting_id: str = "MAPP-150", ref: str = REF, **fields: Any
) -> dict[str, Any]:
    data = {"meeting_id": meeting_id, "held_on": "2026-11-02", "level": 3, **fields}
    return _event("meeting.held", event_id, data, ref=ref, at=at)


def _order(
    event_id: str, at: str, order_id: str = "ORD-150", ref: str = REF, **fields: Any
) -> dict[str, Any]:
    data = {
        "order_id": order_id, "kind": "shpo", "made_on": "2025-06-01", "expires_on": "2030-06-01",
        "prohibitions": [PROHIBITION], "status": "active", **fields,
    }
    return _event("order.upsert", event_id, data, ref=ref, at=at)


def _everything() -> list[dict[str, Any]]:
    return [
        _upsert(
            "i15-n1", "2026-10-01T00:00:00Z", home_address=ADDRESS, visit_every_days=28,
            licence_conditions=CONDITIONS, exclusion_zones=ZONES, description=DESCRIPTION,
        ),
        _upsert("i15-n2", "2026-10-01T00:00:00Z", ref=OTHER),
        _meeting("i15-m1", "2026-11-02T12:00:00Z"),
        _meeting("i15-m2", "2026-09-01T12:00:00Z", meeting_id="MAPP-149", held_on="2026-09-01", level=2,
                 minutes_on_visor_on="2026-09-10"),
        _event("rmp.reviewed", "i15-r1", {"reviewed_on": "2026-08-01"}),
        _event("rmp.reviewed", "i15-r2", {"reviewed_on": "2026-10-15"}),
        _event("visit.recorded", "i15-v1", {"visited_on": "2026-10-20"}),
        _event("visit.recorded", "i15-v2", {"visited_on": "2026-09-20"}),
        _order("i15-o1", "2026-11-01T00:00:00Z"),
        _order("i15-o2", "2026-11-01T00:00:00Z", order_id="ORD-149", kind="foreign_travel_order",
               made_on="2024-01-10", expires_on=None, prohibitions=[], status="discharged"),
    ]


async def _post(client: Any, batch: Sequence[dict[str, Any]], accepted: int | None = None) -> dict[str, Any]:
    resp = await signed_post(client, EVENTS, list(batch))
    assert resp.status == 202, await resp.text()
    body: dict[str, Any] = await resp.json()
    if accepted is not None:
        assert body["accepted"] == accepted, body
    return body


async def _count(session: AsyncSession, model: Any) -> int:
    return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def _counts(service: Any) -> tuple[int, ...]:
    async with service.sessions() as session:
        return tuple([await _count(session, m) for m in (Meeting, RmpReview, Order, RiskChange)])


async def test_each_new_event_and_field_is_stored_and_a_replay_changes_nothing(db_url: str) -> None:
    async with service_client(db_url, clock=CLOCK) as (service, client):
        await _post(client, _everything(), accepted=10)
        async with service.sessions() as session:
            nominal = await session.get(Nominal, REF)
            assert nominal is not None
            assert (
                nominal.home_address, nominal.visit_every_days, nominal.licence_conditions,
                nominal.exclusion_zones, nominal.description,
            ) == (ADDRESS, 28, CONDITIONS, ZONES, DESCRIPTION)
            other = await session.get(Nominal, OTHER)
            assert other is not None
            assert (other.home_address, other.visit_every_days, other.licence_conditions,
                    other.exclusion_zones, other.description) == (None, None, [], [], None)
            meetings = (await session.execute(select(Meeting).order_by(Meeting.meeting_id))).scalars()
            assert [
                (m.meeting_id, m.visor_ref, m.held_on, m.level, m.minutes_on_visor_on, m.event_id)
                for m in meetings
            ] == [
                ("MAPP-149", REF, date(2026, 9, 1), 2, date(2026, 9, 10), "i15-m2"),
                ("MAPP-150", REF, date(2026, 11, 2), 3, None, "i15-m1"),
            ]
            reviews = (await session.execute(select(RmpReview).order_by(RmpReview.event_id))).scalars()
            assert [(r.visor_ref, r.reviewed_on) for r in reviews] == [
                (REF, date(2026, 8, 1)), (REF, date(2026, 10, 15)),
            ]
            orders = (await session.execute(select(Order).order_by(Order.order_id))).scalars()
            assert [
                (o.order_id, o.visor_ref, o.kind, o.made_on, o.expires_on, o.prohibitions, o.status)
                for o in orders
            ] == [
                ("ORD-149", REF, "foreign_travel_order", date(2024, 1, 10), None, [], "discharged"),
                ("ORD-150", REF, "shpo", date(2025, 6, 1), date(2030, 6, 1), [PROHIBITION], "active"),
            ]
        before = await _counts(service)
        assert before == (2, 2, 2, 0)  # first upserts record no risk change
        again = await signed_post(client, EVENTS, _everything())
        assert again.status == 202, await again.text()
        assert await again.json() == {"accepted": 0, "duplicates": 10, "alerts": []}
        assert await _counts(service) == before


def _nominal(**fields: Any) -> dict[str, Any]:
    return _upsert("bad", "2026-11-01T00:00:00Z", **fields)


@pytest.mark.parametrize(
    ("event", "field", "message"),
    [
        (_meeting("bad", AT, level=1), "data.level", "must be 2 or 3"),
        (_meeting("bad", AT, level="3"), "data.level", "must be 2 or 3"),
        (_meeting("bad", AT, meeting_id=" M-1"), "data.meeting_id", ""),
        (_event("meeting.held", "bad", {"meeting_id": "M-1", "level": 2}), "data.held_on", "is required"),
        (_event("rmp.reviewed", "bad", {"reviewed_on": "2026-02-30"}), "data.reviewed_on", "calendar"),
        (_order("bad", AT, kind="asbo"), "data.kind", "'shpo'"),
        (_order("bad", AT, status="revoked"), "data.status", "'discharged'"),
        (_order("bad", AT, prohibitions=["x"] * 51), "data.prohibitions", "at most 50"),
        (_order("bad", AT, prohibitions=["x" * 501]), "data.prohibitions.0", "at most 500"),
        (_order("bad", AT, expires_on="2025-05-31"), "data.expires_on", "before made_on"),
        (_order("bad", AT, order_id="x" * 101), "data.order_id", "at most 100"),
        (_nominal(home_address="1 Fictional\u202eRoad"), "data.home_address", "(U+202E)"),
        (_nominal(home_address="1 Fictional\u200bRoad"), "data.home_address", "(U+200B)"),
        (_nominal(home_address="x" * 301), "data.home_address", "at most 300"),
        (_nominal(home_address=" "), "data.home_address", "must not be blank"),
        (_nominal(visit_every_days=0), "data.visit_every_days", "1 to 730"),
        (_nominal(visit_every_days=731), "data.visit_every_days", "1 to 730"),
        (_nominal(visit_every_days=True), "data.visit_every_days", "1 to 730"),
        (_nominal(licence_conditions=["x"] * 51), "data.licence_conditions", "at most 50"),
        (_nominal(exclusion_zones=["x"] * 21), "data.exclusion_zones", "at most 20"),
        (_nominal(exclusion_zones=["x" * 201]), "data.exclusion_zones.0", "at most 200"),
        (_nominal(description="x" * 501), "data.description", "at most 500"),
    ],
    ids=[
        "meeting-level-1", "meeting-level-string", "meeting-id-space", "meeting-no-date", "review-bad-date",
        "order-bad-kind", "order-bad-status", "order-51-prohibitions", "order-long-prohibition",
        "order-expires-before-made", "order-long-id", "address-bidi", "address-zero-width",
        "address-long", "address-blank", "visit-days-0", "visit-days-731", "visit-days-bool",
        "51-conditions", "21-zones", "long-zone", "long-description",
    ],
)
async def test_bad_values_are_refused_with_a_clear_error(
    db_url: str, event: dict[str, Any], field: str, message: str
) -> None:
    async with service_client(db_url, clock=CLOCK) as (service, client):
        resp = await signed_post(client, EVENTS, [event])
        assert resp.status == 400
        [error] = (await resp.json())["errors"]
        assert (error["index"], error["field"]) == (0, field)
        assert message in error["message"]
        assert await _counts(service) == (0, 0, 0, 0)
        async with service.sessions() as session:
            assert await _count(session, Nominal) == 0


async def test_a_later_meeting_held_sets_the_minutes_and_a_stale_one_is_ignored(db_url: str) -> None:
    async with service_client(db_url, clock=CLOCK) as (service, client):
        await _post(client, [_meeting("mt-1", "2026-11-02T12:00:00Z")], accepted=1)
        # The minutes go on ViSOR on 6 November: the same meeting_id, sent again.
        await _post(client, [_meeting("mt-2", "2026-11-06T15:00:00Z", minutes_on_visor_on="2026-11-06")])
        # An older export of the meeting (no minutes yet) arrives late: kept as an event, no change.
        await _post(client, [_meeting("mt-3", "2026-11-03T09:00:00Z", level=2)], accepted=1)
        # The same meeting id for another nominal is another meeting (ids are unique per nominal
        # only): it neither takes REF's row over nor changes it.
        await _post(client, [_meeting("mt-4", "2026-11-07T09:00:00Z", ref=OTHER, level=2)], accepted=1)
        async with service.sessions() as session:
            [meeting] = (await session.execute(select(Meeting).where(Meeting.visor_ref == REF))).scalars()
            assert (meeting.level, meeting.minutes_on_visor_on, meeting.event_id) == (
                3, date(2026, 11, 6), "mt-2"
            )
            assert await load.meetings(session, [REF, OTHER]) == {
                REF: [MeetingFacts("MAPP-150", REF, date(2026, 11, 2), 3, date(2026, 11, 6))],
                OTHER: [MeetingFacts("MAPP-150", OTHER, date(2026, 11, 2), 2, None)],
            }


async def test_a_later_order_upsert_replaces_the_order_and_a_stale_one_is_ignored(db_url: str) -> None:
    async with service_client(db_url, clock=CLOCK) as (service, client):
        await _post(client, [_order("or-1", "2026-11-01T00:00:00Z")], accepted=1)
        await _post(client, [_order("or-2", "2026-11-10T00:00:00Z", status="discharged", prohibitions=[])])
        await _post(client, [_order("or-3", "2026-11-05T00:00:00Z", status="expired")], accepted=1)  # stale
        # The same order id for another nominal is another order.
        await _post(client, [_order("or-4", "2026-11-01T00:00:00Z", ref=OTHER)], accepted=1)
        async with service.sessions() as session:
            found = await load.orders(session, [REF, OTHER, "VS-TEST-0152"])
        assert found == {
            REF: [OrderFacts("ORD-150", REF, "shpo", date(2025, 6, 1), date(2030, 6, 1), "discharged", ())],
            OTHER: [
                OrderFacts(
                    "ORD-150", OTHER, "shpo", date(2025, 6, 1), date(2030, 6, 1), "active", (PROHIBITION,)
                )
            ],
        }


async def test_a_risk_change_is_recorded_on_a_known_nominals_upsert_only(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first upsert is no change; a later one changing risk level and area records one row
    (category unchanged: its pair stays empty) and hands it to the rules; an unchanged or a stale
    upsert records nothing."""
    seen: list[Applied] = []
    async def on_applied(
        session: AsyncSession, applied: Sequence[Applied], ctx: Context, held: Any = None, checks: Any = None,
        **more: Any,
    ) -> list[str]:
        seen.extend(applied)
        return await original(session, applied, ctx, held, checks, **more)

    monkeypatch.setattr("casewatch.ingest.pipeline.on_applied", on_applied)
    async with service_client(db_url, clock=CLOCK) as (service, client):
        await _post(client, [_upsert("rc-1", "2026-11-01T00:00:00Z")], accepted=1)
        await _post(client, [_upsert("rc-2", "2026-11-05T00:00:00Z", risk_level="high", area="N02")])
        await _post(client, [_upsert("rc-3", "2026-11-06T00:00:00Z", risk_level="high", area="N02")])
        await _post(client, [_upsert("rc-4", "2026-11-04T00:00:00Z", risk_level="low", category="2")])
        rc5 = _upsert("rc-5", "2026-11-07T00:00:00Z", risk_level="high", area="N02", category="3")
        await _post(client, [rc5])
        async with service.sessions() as session:
            rows = (await session.execute(select(RiskChange).order_by(RiskChange.changed_at))).scalars().all()
            facts = [load.risk_change_facts(r) for r in rows]
            nominal = (await load.nominals(session, [REF]))[REF]
    assert facts == [
        RiskChangeFacts("rc-2", REF, "medium", "high", None, None, "N01", "N02", utc("2026-11-05T00:00:00Z")),
        RiskChangeFacts("rc-5", REF, None, None, "1", "3", None, None, utc("2026-11-07T00:00:00Z")),
    ]
    carried = {item.event_id: item.risk_change for item in seen}
    assert set(carried) == {"rc-1", "rc-2", "rc-3", "rc-4", "rc-5"}
    assert carried["rc-1"] is None and carried["rc-3"] is None and carried["rc-4"] is None
    assert [load.risk_change_facts(carried[e]) for e in ("rc-2", "rc-5")] == facts  # type: ignore[arg-type]
    assert (nominal.risk_level, nominal.category, nominal.area) == ("high", "3", "N02")


async def test_the_loaders_return_the_facts_the_rules_read(db_url: str) -> None:
    async with service_client(db_url, clock=CLOCK) as (service, client):
        await _post(client, _everything(), accepted=10)
        async with service.sessions() as session:
            nominals = await load.nominals(session, [REF, OTHER])
            assert (nominals[REF].risk_level, nominals[REF].category, nominals[REF].visit_every_days) == (
                "medium", "1", 28
            )
            assert nominals[OTHER].visit_every_days is None
            assert await load.nominal(session, REF) == nominals[REF]
            expected_meetings = [
                MeetingFacts("MAPP-149", REF, date(2026, 9, 1), 2, date(2026, 9, 10)),
                MeetingFacts("MAPP-150", REF, date(2026, 11, 2), 3, None),
            ]
            assert await load.meetings(session, [REF, OTHER]) == {REF: expected_meetings}
            assert await load.meetings_between(session, "VS-TEST-0149", OTHER) == {REF: expected_meetings}
            assert await load.meetings_between(session, REF, OTHER) == {}
            assert await load.last_rmp_reviews(session, [REF, OTHER]) == {REF: date(2026, 10, 15)}
            assert await load.last_visits(session, [REF, OTHER]) == {REF: date(2026, 10, 20)}
            assert await load.orders(session, [REF, OTHER]) == {
                REF: [
                    OrderFacts("ORD-149", REF, "foreign_travel_order", date(2024, 1, 10), None, "discharged"),
                    OrderFacts(
                        "ORD-150", REF, "shpo", date(2025, 6, 1), date(2030, 6, 1), "active", (PROHIBITION,)
                    ),
                ]
            }


NEW_TABLES = {"risk_changes", "meetings", "rmp_reviews", "orders"}
NEW_COLUMNS = {"home_address", "visit_every_days", "licence_conditions", "exclusion_zones", "description"}


async def test_migration_0008_adds_the_supervision_tables_and_is_reversible(engine: AsyncEngine) -> None:
    def columns(conn: Connection) -> set[str]:
        return {c["name"] for c in inspect(conn).get_columns("nominals")}

    def tables(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names())

    def unique_keys(conn: Connection, table: str) -> list[list[str]]:
        return [u["column_names"] for u in inspect(conn).get_unique_constraints(table)]

    assert await current_revision(engine) == head_revision()
    async with engine.begin() as conn:
        assert NEW_COLUMNS <= await conn.run_sync(columns)
        assert NEW_TABLES <= await conn.run_sync(tables)
        await conn.run_sync(downgrade_to, str(engine.url), "0007")
    assert await current_revision(engine) == "0007"
    async with engine.connect() as conn:
        assert not NEW_COLUMNS & await conn.run_sync(columns)
        assert not NEW_TABLES & await conn.run_sync(tables)
        catalog = (
            "SELECT indexname FROM pg_indexes"
            if engine.dialect.name == "postgresql"
            else "SELECT name FROM sqlite_master WHERE type = 'index'"
        )
        # The expression index /flags uses survives (no batch rebuild of nominals).
        assert "ix_nominals_visor_ref_compact" in set((await conn.execute(text(catalog))).scalars())
    # A nominal stored before 0008 gets empty lists for its conditions and zones.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO nominals (visor_ref, surname, surname_key, forenames, date_of_birth, category,"
                " registered, risk_level, lead_agency, team, offender_manager, area, on_licence,"
                " no_fixed_abode, aliases, state_as_of, updated_at) VALUES ('VS-TEST-0159', 'Testperson',"
                " 'testperson', '', '1980-01-01', '1', true, 'low', 'police', 'north', 'PC1234', 'N01',"
                " false, false, '[]', '2026-11-01 00:00:00', '2026-11-01 00:00:00')"
            )
        )
    await upgrade(engine, "0008")
    async with engine.connect() as conn:
        assert NEW_COLUMNS <= await conn.run_sync(columns)
        assert NEW_TABLES <= await conn.run_sync(tables)
        n = Nominal
        lists = (await conn.execute(select(n.licence_conditions, n.exclusion_zones, n.home_address))).one()
        assert tuple(lists) == ([], [], None)
        # Meetings, as orders, are unique per nominal and source id, not by the source id alone.
        assert await conn.run_sync(unique_keys, "meetings") == [["visor_ref", "meeting_id"]]
        assert await conn.run_sync(unique_keys, "orders") == [["visor_ref", "order_id"]]
