"""The bulk path for first upserts (casewatch.ingest.bulk), with large batches planned for their
keys (casewatch.ingest.plans), stores exactly what the plain ORM path stores: the same mixed
batches go through each into its own fresh database, on SQLite and on PostgreSQL, and every row
of every table is compared (ids and hashes that differ by nature aside; both runs use one fixed
clock, so every timestamp must match). And nominals first written in bulk behave afterwards as
nominals made the plain way: the events that follow them, and the scan, store and alert the same."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Integer, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.ingest.apply import Batch
from casewatch.ingest.bulk import FreshNominals
from casewatch.ingest.pipeline import PLANNED_FOR_THEIR_KEYS_FROM, IngestResult, ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Alert, Base
from casewatch.triggers.scan import run_scan
from tests.conftest import _pg_admin, pg_database_url
from tests.support import T0, envelope, make_settings, nominal_data

# What a nominal.upsert may carry, every field filled (fictional values).
MARKERS = [
    {"code": "VIO", "label": "Violence (fictional)", "restricted": False},
    {"code": "WEAP", "label": "Weapons (fictional)", "restricted": True},
]


def full(n: int, **overrides: Any) -> dict[str, Any]:
    return nominal_data(**{
        "forenames": f"Sample {n}", "pnc_id": f"26/{n:06d}A", "release_date": "2026-01-10",
        "licence_expiry": "2027-01-10", "relevant_date": "2020-05-01", "notification_ends_on": "2030-05-01",
        # two aliases that fold to one key: one alias row for both
        "aliases": ["Example", "EXAMPLE", "Sam Sample"], "home_address": "1 Fictional Road, Testtown",
        "visit_every_days": 90, "licence_conditions": ["Fictional condition: no contact with V1"],
        "exclusion_zones": ["Fictional Park"], "description": "Fictional: tall, fair hair",
        "crn": f"X{n:06d}", "noms_number": "A1234BC", "markers": MARKERS, "on_licence": True,
        **overrides,
    })


def ref(n: int) -> str:
    return f"VS-BULK{n:04d}"


def ev(
    type_: str, n: int, hours: float = 0, data: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    return envelope(type_, data, visor_ref=ref(n), occurred_at=T0 + timedelta(hours=hours), **fields)


def first_batch() -> list[dict[str, Any]]:
    return [
        ev("nominal.upsert", 1, data=full(1)),  # new, every field: bulk
        ev("nominal.upsert", 2, data=nominal_data(  # new, the least an upsert carries
            markers=[], last_notification_on=None, forenames="", team="south", offender_manager="PC5678",
            mappa_level=None,
        )),
        # new, then upserted again later in the batch: a level, risk and area change, new markers
        ev("nominal.upsert", 3, data=full(3)),
        ev("nominal.upsert", 3, hours=1, data=full(
            3, mappa_level=2, risk_level="high", area="N02", aliases=["Other Sample"],
            markers=[{"code": "ARSON", "label": "Arson (fictional)", "restricted": False}],
        )),
        # new, then an older upsert in the same batch: stale
        ev("nominal.upsert", 4, hours=2, data=full(4)),
        ev("nominal.upsert", 4, hours=1, data=full(4, mappa_level=3, forenames="Older")),
        # new, then events about it later in the batch
        ev("nominal.upsert", 5, data=full(5)),
        ev("notification.received", 5, hours=0.5, kind="periodic", notified_on="2026-11-19"),
        ev("mappa.level_changed", 5, hours=1, from_level=1, to_level=3, rationale="Fictional MAPP decision"),
        ev("travel.notified", 5, hours=1, departure_on="2026-12-01", return_on="2026-12-08",
           destination="FR"),
        ev("travel.border_alert", 5, hours=1, port="Dover", direction="outbound",
           checked_at="2026-11-25T08:00:00Z"),
        ev("action.upsert", 5, hours=1, action_id=f"ACT-{uuid.uuid4().hex[:8]}"),
        ev("visit.recorded", 5, hours=1, visited_on="2026-11-19"),
        ev("recall.issued", 5, hours=1),
        # a newer level change before the first upsert: the plain path's history read
        ev("mappa.level_changed", 6, hours=3, from_level=1, to_level=2, rationale="Fictional MAPP decision"),
        ev("nominal.upsert", 6, data=full(6)),
        # a clock-restarting notification before the first upsert
        ev("notification.received", 7, kind="weekly", notified_on="2026-11-19"),
        ev("nominal.upsert", 7, data=full(7)),
        # new; a second upsert changes the level; the level_changed that describes it adds the rationale
        ev("nominal.upsert", 8, data=full(8)),
        ev("nominal.upsert", 8, hours=1, data=full(8, mappa_level=2)),
        ev("mappa.level_changed", 8, hours=1, from_level=1, to_level=2, rationale="Fictional MAPP decision"),
        # a level change for a reference with no nominal yet (its upsert comes in the next batch)
        ev("mappa.level_changed", 9, hours=1, from_level=1, to_level=3, rationale="Fictional MAPP decision"),
        # a non-clock notification later in the batch does not touch the nominal
        ev("nominal.upsert", 10, data=full(10, aliases=[])),
        ev("notification.received", 10, hours=1, kind="travel", notified_on="2026-11-19"),
    ]


NEW_IN_SECOND = 110  # a chunk large enough to be planned for its keys (PLANNED_FOR_THEIR_KEYS_FROM)


def second_batch(repeat: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        # a nominal the first batch wrote in bulk: its stored markers and aliases are replaced
        ev("nominal.upsert", 1, hours=24, data=full(1, mappa_level=3, risk_level="very_high", markers=[])),
        ev("nominal.upsert", 9, data=full(9)),  # history stored by the first batch: plain path
        repeat,  # a duplicate
        # a snapshot's worth of new nominals, varied
        *(
            ev("nominal.upsert", n, data=full(
                n, mappa_level=(n % 3) + 1, risk_level=("low", "medium", "high")[n % 3],
                team=("north", "south")[n % 2], markers=MARKERS[: n % 3], aliases=[f"Alias{n}"] * (n % 2),
                last_notification_on=date(2026, 1 + n % 12, 1).isoformat(),
            ))
            for n in range(20, 20 + NEW_IN_SECOND)
        ),
        ev("mappa.level_changed", 21, hours=2, from_level=2, to_level=1, rationale="Fictional review"),
    ]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def template(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """A database kind and its migrated template (a SQLite file, a PostgreSQL database name)."""
    name = "sqlite_template" if request.param == "sqlite" else "pg_template"
    return request.param, request.getfixturevalue(name)


@pytest.fixture
async def two_stores(template: tuple[str, Any], tmp_path: Path) -> AsyncIterator[list[str]]:
    """Two fresh, migrated databases of one kind: [plain, bulk]."""
    kind, source = template
    if kind == "sqlite":
        urls = []
        for name in ("plain", "bulk"):
            shutil.copyfile(source, tmp_path / f"{name}.db")
            urls.append(f"sqlite+aiosqlite:///{tmp_path / name}.db")
        yield urls
        return
    names = [f"cw_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    for name in names:
        await _pg_admin(f"CREATE DATABASE {name} TEMPLATE {source}")
    yield [pg_database_url(name) for name in names]
    for name in names:
        await _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def bulk_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many nominal rows each FreshNominals.write inserted."""
    written: list[int] = []
    real = FreshNominals.write

    async def spy(self: FreshNominals, session: AsyncSession) -> None:
        written.append(len(self.nominals))
        await real(self, session)

    monkeypatch.setattr(FreshNominals, "write", spy)
    return written


async def _run(url: str, batches: Sequence[list[dict[str, Any]]]) -> list[IngestResult]:
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        ctx = Context(make_settings(url), FixedClock(T0 + timedelta(days=2)))
        results = []
        for raws in batches:
            envelopes, errors = parse_envelopes(raws)
            assert errors == []
            results.append(await ingest(sessions, envelopes, ctx, source="test"))
        return results
    finally:
        await engine.dispose()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


async def dump(url: str) -> dict[str, list[str]]:
    """Every table's rows as sorted JSON lines: integer ids left out (a row pointing at one
    carries the row it points at instead), alert ids (random) replaced by what the alert is,
    content and chain hashes (which cover the ids) left out."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            alerts = (await conn.execute(select(Alert))).all()
            alert_names = {
                a.id: f"<alert {a.kind} {a.visor_ref} {a.subject} {a.opened_by_event}>" for a in alerts
            }
            by_id: dict[tuple[str, Any], str] = {}
            out: dict[str, list[str]] = {}
            for table in Base.metadata.sorted_tables:
                lines = []
                for row in (await conn.execute(select(table))).mappings():
                    values: dict[str, Any] = {}
                    for column in table.columns:
                        value = row[column.name]
                        if column.name in ("content_hash", "chain_hash"):
                            continue
                        if column.name == "id" and isinstance(column.type, Integer):
                            continue
                        target = next(iter(column.foreign_keys), None)
                        if target is not None and (target.column.table.name, value) in by_id:
                            value = by_id[(target.column.table.name, value)]
                        values[column.name] = _plain(value)
                    line = json.dumps(values, sort_keys=True, default=str)
                    for alert_id, name in alert_names.items():
                        line = line.replace(alert_id, name)
                    if "id" in table.columns and isinstance(table.columns["id"].type, Integer):
                        by_id[(table.name, row["id"])] = line
                    lines.append(line)
                out[table.name] = sorted(lines)
            return out
    finally:
        await engine.dispose()


async def test_the_bulk_path_stores_what_the_plain_path_stores(
    two_stores: list[str], bulk_rows: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_url, bulk_url = two_stores
    first = first_batch()
    batches = [first, second_batch(first[0]), first]  # the last: every event a duplicate

    assert NEW_IN_SECOND >= PLANNED_FOR_THEIR_KEYS_FROM
    # The plain path: ORM objects for first upserts, every read left to the plan cache.
    monkeypatch.setattr(Batch, "bulk_first_upserts", False)
    monkeypatch.setattr("casewatch.ingest.pipeline.PLANNED_FOR_THEIR_KEYS_FROM", 10**9)
    plain_results = await _run(plain_url, batches)
    assert bulk_rows == [0, 0]  # (the last batch stores nothing: no apply at all)
    monkeypatch.setattr(Batch, "bulk_first_upserts", True)
    monkeypatch.setattr("casewatch.ingest.pipeline.PLANNED_FOR_THEIR_KEYS_FROM", PLANNED_FOR_THEIR_KEYS_FROM)
    bulk_results = await _run(bulk_url, batches)
    # Through Core: 1, 2 and 10 of the first batch (3, 4 and 8 were promoted by their second
    # upsert, 5 by its periodic notification; 6 and 7 had history); all but one of the new
    # nominals of the second (21 was promoted by its level change; 9 had history).
    assert bulk_rows == [0, 0, 3, NEW_IN_SECOND - 1]

    for plain, bulk in zip(plain_results, bulk_results, strict=True):
        assert (plain.accepted, plain.duplicates, plain.stored, len(plain.alerts)) == (
            bulk.accepted, bulk.duplicates, bulk.stored, len(bulk.alerts)
        )
    assert [r.duplicates for r in plain_results] == [0, 1, len(first)]

    plain_rows, bulk_rows_dumped = await dump(plain_url), await dump(bulk_url)
    for table in plain_rows:
        assert plain_rows[table] == bulk_rows_dumped[table], table
    # The comparison covered what it claims to: every kind of row the batches make is there.
    expected_min = {
        "nominals": 10 + NEW_IN_SECOND, "markers": 40, "nominal_aliases": 20,
        "events": len(first) + NEW_IN_SECOND + 3,
        "level_changes": 5, "risk_changes": 2, "notifications": 3, "alerts": 3, "deliveries": 3,
        "audit_log": 3, "audit_nominals": 3, "travel_notifications": 1, "border_checks": 1,
        "actions": 1, "visits": 1, "recalls": 1,
    }
    short = {t: len(plain_rows[t]) for t, least in expected_min.items() if len(plain_rows[t]) < least}
    assert short == {}, {t: len(r) for t, r in plain_rows.items()}


# --- what follows a bulk first upsert -----------------------------------------------------------
# The nominals a batch wrote through Core must then behave exactly as nominals made through the
# ORM: the supervision, custody, recall and travel events that follow them (in the same batch,
# in a later batch, or one event a request) store the same rows, open the same alerts with the
# same outbox and audit rows, and the time-based scan afterwards finds the same.

FOLLOWED = range(300, 312)  # new nominals, written in bulk by the first batch
FOLLOWED_IN_SAME_BATCH = range(312, 316)  # new nominals whose follow-ups share their first batch


def follow_ups(n: int, hours: float) -> list[dict[str, Any]]:
    """Every kind of event the brief names, for nominal n, from `hours` after T0 on."""
    at = T0 + timedelta(hours=hours)
    expires = (at + timedelta(days=20)).date().isoformat()
    return [
        ev("order.upsert", n, hours, order_id=f"ORD-{n}", expires_on=expires),
        ev("order.upsert", n, hours + 1, order_id=f"ORD-{n}", status="discharged" if n % 2 else "active",
           expires_on=expires),
        ev("meeting.held", n, hours, meeting_id=f"MAPP-{n}", held_on=at.date().isoformat(), level=2 + n % 2),
        ev("rmp.reviewed", n, hours, reviewed_on=(at - timedelta(days=n % 3 * 60)).date().isoformat()),
        ev("detention.started", n, hours, kind="remand", started_on=at.date().isoformat()),
        ev("detention.ended", n, hours + 2, ended_on=(at + timedelta(days=1)).date().isoformat()),
        ev("recall.issued", n, hours, recall_type="standard",
           issued_at=(at - timedelta(hours=1)).isoformat()),
        # every other recall comes back; the rest stay open for the scan
        *([ev("recall.returned", n, hours + 1, returned_at=at.isoformat())] if n % 2 == 0 else []),
        ev("travel.notified", n, hours, departure_on=(at + timedelta(days=2 + n % 9)).date().isoformat(),
           return_on=(at + timedelta(days=20)).date().isoformat(), destination="FR", trip_id=f"TRIP-{n}"),
        *([ev("travel.cancelled", n, hours + 1, trip_id=f"TRIP-{n}")] if n % 3 == 0 else []),
    ]


def followed_batches() -> list[list[dict[str, Any]]]:
    """The first batch (new nominals, four with their follow-ups after them), a later batch of
    follow-ups for half the rest, and the other half's follow-ups one event a batch."""
    first = [
        ev("nominal.upsert", n, data=full(
            n, mappa_level=1 + n % 3, risk_level=("low", "medium", "high")[n % 3],
            team=("north", "south")[n % 2], on_licence=n % 2 == 0, markers=MARKERS[: n % 3],
        ))
        for n in (*FOLLOWED, *FOLLOWED_IN_SAME_BATCH)
    ]
    first += [event for n in FOLLOWED_IN_SAME_BATCH for event in follow_ups(n, hours=1)]
    half = len(FOLLOWED) // 2
    later = [event for n in FOLLOWED[:half] for event in follow_ups(n, hours=5)]
    singles = [[event] for n in FOLLOWED[half:] for event in follow_ups(n, hours=8)]
    return [first, later, *singles]


async def _run_and_scan(url: str, batches: Sequence[list[dict[str, Any]]]) -> list[IngestResult]:
    results = await _run(url, batches)
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        ctx = Context(make_settings(url), FixedClock(T0 + timedelta(days=2)))
        for days in (2, 30, 140):  # soon after, when orders near expiry, when reviews fall due
            await run_scan(sessions, ctx, T0 + timedelta(days=days))
    finally:
        await engine.dispose()
    return results


async def test_events_after_a_bulk_first_upsert_behave_as_after_a_plain_one(
    two_stores: list[str], bulk_rows: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_url, bulk_url = two_stores
    batches = followed_batches()
    followed = len(FOLLOWED) + len(FOLLOWED_IN_SAME_BATCH)

    monkeypatch.setattr(Batch, "bulk_first_upserts", False)
    plain_results = await _run_and_scan(plain_url, batches)
    assert set(bulk_rows) == {0}
    bulk_rows.clear()
    monkeypatch.setattr(Batch, "bulk_first_upserts", True)
    bulk_results = await _run_and_scan(bulk_url, batches)
    # Every new nominal of the first batch went through Core: none of the follow-ups in its own
    # batch touches the nominal row (nothing promotes it); the later batches make no nominal.
    assert bulk_rows[0] == followed
    assert set(bulk_rows[1:]) <= {0}

    for plain, bulk in zip(plain_results, bulk_results, strict=True):
        assert (plain.accepted, plain.duplicates, plain.stored, len(plain.alerts)) == (
            bulk.accepted, bulk.duplicates, bulk.stored, len(bulk.alerts)
        )
    assert sum(r.accepted for r in plain_results) == sum(len(b) for b in batches)

    plain_rows, bulk_rows_dumped = await dump(plain_url), await dump(bulk_url)
    assert plain_rows.keys() == bulk_rows_dumped.keys()
    for table in plain_rows:
        assert plain_rows[table] == bulk_rows_dumped[table], table
    # The follow-ups were stored and acted on, so the comparison covered them.
    expected_min = {
        "nominals": followed, "orders": followed, "meetings": followed, "rmp_reviews": followed,
        "detentions": 2 * followed, "recalls": followed, "travel_notifications": followed,
        "travel_cancellations": followed // 3, "alerts": followed, "deliveries": followed,
        "audit_log": followed, "audit_nominals": followed,
    }
    short = {t: len(plain_rows[t]) for t, least in expected_min.items() if len(plain_rows[t]) < least}
    assert short == {}, {t: len(r) for t, r in plain_rows.items()}
    returned = [line for line in plain_rows["recalls"] if '"returned_at": null' not in line]
    assert len(returned) == followed // 2
