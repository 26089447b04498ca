"""Single events' CPU on the event loop (issue 17, tenth session): on SQLite `Batch.finish` hands the
records, new actions and notification dates to the driver's connection, to run with the
transaction's next trip (`Batch.hold_writes`, casewatch.store.held), rather than each through
`session.execute`; on PostgreSQL the batch's events are stored as one array a column
(`Batch.array_events`, ingest.arrays.returning_insert_statement) rather than SQLAlchemy's multi-row
insert. The same traffic both ways stores the same text in every column of every record table, the
actions, the nominals' dates and the events (JSON as stored), opens the same alerts, writes the same
audit entries and gives the same answers, alone and through the group committer, on both
databases; the short ways must have run; a held write that fails fails its transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import pytest
from sqlalchemy import Text, cast, insert, select, text
from sqlalchemy.dialects.sqlite import aiosqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.ingest.apply import Batch
from casewatch.ingest.group import GroupCommit
from casewatch.ingest.pipeline import ingest
from casewatch.store import held
from casewatch.store.models import Action, Event, Nominal, Team, Visit
from casewatch.wiring import Service
from tests.support import envelope, nominal_data
from tests.test_ingest9_writes import _statements
from tests.test_ingest_arrays7 import RECORDS, ROLES, _plain, _ref, _state, _traffic
from tests.test_ingest_single_fast import _parsed, service_fixture  # noqa: F401 (fixture)

AT = "2026-11-20T08:00:00Z"


@contextmanager
def _short(on: bool) -> Iterator[None]:
    before = Batch.hold_writes, Batch.array_events
    Batch.hold_writes = Batch.array_events = on
    try:
        yield
    finally:
        Batch.hold_writes, Batch.array_events = before


async def _stored(
    session: AsyncSession, table: Any, where: Any, base: int, tag: str
) -> list[tuple[Any, ...]]:
    """Every column but the generated id, as the database's text of it, references and tag neutral."""
    columns = [cast(c, Text) for c in table.columns if c.key != "id" or table.name == "events"]
    rows = await session.execute(select(*columns).where(where))
    return sorted((tuple(_plain(v, base, tag) for v in row) for row in rows), key=repr)


async def _text_state(service: Service, base: int, tag: str) -> dict[str, Any]:
    refs = [_ref(base, role) for role in ROLES]
    async with service.sessions() as session:
        state = {
            m.__tablename__: await _stored(session, m.__table__, m.__table__.c.visor_ref.in_(refs), base, tag)
            for m in (*RECORDS, Action, Event)
        }
        nominals = Nominal.__table__
        state["nominals"] = await _stored(session, nominals, nominals.c.visor_ref.in_(refs), base, tag)
    return {**state, **await _state(service, base, tag)}


async def _run(
    service: Service, base: int, tag: str, *, short: bool, first_upsert: bool = False
) -> tuple[list[str], tuple[int, int, int]]:
    setup, batch = _traffic(base, tag)
    await ingest(service.sessions, _parsed(setup), service.ctx, source="test")
    if first_upsert:  # a first upsert buffered beside the records: written between them
        batch.append(envelope("nominal.upsert", nominal_data(), id=f"{tag}-first",
                              visor_ref=_ref(base, "new"), occurred_at=AT))
    batch.append(batch[0])  # a duplicate in the batch
    with _short(short), _statements(service) as seen:
        result = await ingest(service.sessions, _parsed(batch), service.ctx, source="test")
    return seen, (result.accepted, result.duplicates, len(result.alerts))


def _writes(statements: list[str]) -> list[str]:
    ours = {f"INSERT INTO {m.__tablename__} " for m in (*RECORDS, Action)} | {"UPDATE nominals SET "}
    return [s for s in statements if any(s.startswith(o) or f"AS ({o}" in s for o in ours)]


@pytest.mark.parametrize("first_upsert", [False, True])
async def test_the_short_ways_store_what_the_plain_ways_store(service: Service, first_upsert: bool) -> None:
    plain_seen, plain_answer = await _run(service, 1000, "plain", short=False, first_upsert=first_upsert)
    short_seen, short_answer = await _run(service, 2000, "short", short=True, first_upsert=first_upsert)
    assert short_answer == plain_answer
    assert plain_answer[:2] == (16 + first_upsert, 1)
    plain, short = await _text_state(service, 1000, "plain"), await _text_state(service, 2000, "short")
    assert short == plain
    assert all(plain[m.__tablename__] for m in RECORDS) and len(plain["actions"]) == 2
    assert len(plain["events"]) == 16 + first_upsert + 4  # and the setup's four upserts
    assert plain["alerts"] and plain["audit"]
    events = [s for s in short_seen if s.startswith("INSERT INTO events ")]
    assert len(events) == 1 and len([s for s in plain_seen if s.startswith("INSERT INTO events ")]) == 1
    if service.engine.dialect.name == "postgresql":
        assert "unnest(" in events[0] and "ON CONFLICT (id) DO NOTHING RETURNING id" in events[0]
        assert len(short_seen) == len(plain_seen)
        return
    assert "unnest(" not in events[0]
    # Every record table, the actions and the dates went with a later trip, not through SQLAlchemy.
    assert len(_writes(plain_seen)) == len(RECORDS) + 2
    assert _writes(short_seen) == []
    assert len(short_seen) == len(plain_seen) - len(RECORDS) - 2


async def test_a_group_of_singles_is_answered_and_stored_alike(service: Service) -> None:
    """Mixed singles (visits, notifications, new actions: the bench's traffic) through the events
    API's group committer, both ways: the same answers and state."""
    committer = GroupCommit(service.sessions, service.ctx, source="test")
    answers = {}
    for base, tag, short in ((3000, "plain", False), (4000, "short", True)):
        setup, _ = _traffic(base, tag)
        await ingest(service.sessions, _parsed(setup), service.ctx, source="test")
        singles = [
            envelope("visit.recorded", id=f"{tag}-v", visor_ref=_ref(base, "known"), occurred_at=AT),
            envelope("notification.received", id=f"{tag}-n", visor_ref=_ref(base, "twice"), occurred_at=AT,
                     kind="weekly", notified_on="2026-11-19"),
            envelope("action.upsert", id=f"{tag}-a", visor_ref=_ref(base, "new"), occurred_at=AT,
                     action_id=f"A-{tag}", summary="Fictional action: café 😀, \"quoted\" \\ back"),
            envelope("visit.recorded", id=f"{tag}-f", visor_ref=_ref(base, "fresh"), occurred_at=AT),
        ]
        before = committer.groups
        with _short(short):
            results = await asyncio.gather(*(committer.ingest(_parsed([s])) for s in singles))
            again = await committer.ingest(_parsed([singles[0]]))  # a duplicate alone
        assert committer.groups == before + 1  # the four in one transaction
        answers[tag] = [(r.accepted, r.duplicates, len(r.alerts)) for r in (*results, again)]
    assert answers["short"] == answers["plain"] == [(1, 0, 0)] * 4 + [(0, 1, 0)]
    assert await _text_state(service, 4000, "short") == await _text_state(service, 3000, "plain")


async def test_a_held_write_runs_with_the_next_trip_or_not_at_all(service: Service) -> None:
    """SQLite's driver: a held insert is seen by the transaction's next statement, dropped by a
    rollback, and one that fails fails the statement whose trip ran it (an IntegrityError, as
    SQLAlchemy raises it for its own statements), its transaction then rolled back."""
    if service.engine.dialect.name == "postgresql":
        pytest.skip("SQLite's one-trip driver only")
    visits = Visit.metadata.tables[Visit.__tablename__]
    dialect = service.engine.dialect
    row = {"visor_ref": "VS-0900001", "visited_on": date(2026, 11, 19), "event_id": "held-1"}
    count = select(text("count(*)")).select_from(visits).where(visits.c.visor_ref == "VS-0900001")

    async with service.sessions() as session, session.begin():
        await session.execute(select(Nominal.visor_ref).limit(1))  # the transaction begun
        connection = await held.holder(session)
        assert connection is not None
        assert held.hold_insert(connection, dialect, visits, [row])
        assert (await session.execute(count)).scalar_one() == 1
        await session.rollback()
    async with service.sessions() as session:
        assert (await session.execute(count)).scalar_one() == 0

    async with service.sessions() as session, session.begin():
        await session.execute(select(Nominal.visor_ref).limit(1))
        connection = await held.holder(session)
        assert connection is not None
        assert held.hold_insert(connection, dialect, visits, [row])
        await session.rollback()  # never run
    async with service.sessions() as session:
        assert (await session.execute(count)).scalar_one() == 0

    with pytest.raises(IntegrityError):
        async with service.sessions() as session, session.begin():
            await session.execute(insert(visits), [{**row, "event_id": "held-2"}])
            connection = await held.holder(session)
            assert connection is not None
            assert held.hold_insert(connection, dialect, visits, [{**row, "visor_ref": None}])  # NOT NULL
            await session.execute(count)
    async with service.sessions() as session:
        assert (await session.execute(count)).scalar_one() == 0  # the first insert rolled back too


def test_an_insert_with_a_default_is_not_held() -> None:
    """A table whose insert SQLAlchemy gives a parameter the rows do not carry (a column default)
    is left to SQLAlchemy: hold_insert says so and holds nothing."""
    class Spy:
        def __init__(self) -> None:
            self.held: list[Any] = []

        def hold(self, *args: Any, **kwargs: Any) -> None:
            self.held.append(args)

    spy = Spy()
    teams = Team.metadata.tables[Team.__tablename__]
    rows = [{"id": "t", "name": "T", "spoc_email": "spoc@example.invalid"}]
    assert not held.hold_insert(spy, aiosqlite.dialect(), teams, rows)  # type: ignore[arg-type]
    assert spy.held == []
