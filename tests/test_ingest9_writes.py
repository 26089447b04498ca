"""Fewer statements in an ingest transaction on PostgreSQL (issue 17, ninth session): `Batch.finish`
sends the records, new actions and notification dates as one statement (`Batch.combine_writes`,
ingest.arrays.combined_statement), and the batch's locking reads of nominals and actions take their
keys as one parameter (`Batch.keys_as_array`: an array on PostgreSQL, a JSON array on SQLite).
The same traffic with both and with neither stores the same rows in every record table, the same
actions, notification dates, alerts and audit entries, and gives the same answers, on both
databases; on PostgreSQL the one statement and the array reads ran, on SQLite the JSON array reads
and as many statements as before."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from casewatch.ingest import arrays
from casewatch.ingest.apply import Batch
from casewatch.ingest.group import GroupCommit
from casewatch.ingest.pipeline import ingest
from casewatch.store.models import Action, Nominal, Visit
from casewatch.wiring import Service
from tests.support import envelope, nominal_data
from tests.test_ingest_arrays7 import RECORDS, _ref, _state, _traffic
from tests.test_ingest_single_fast import _parsed, service_fixture  # noqa: F401 (fixture)


@contextmanager
def _fewer(on: bool) -> Iterator[None]:
    before = Batch.combine_writes, Batch.keys_as_array
    Batch.combine_writes = Batch.keys_as_array = on
    try:
        yield
    finally:
        Batch.combine_writes, Batch.keys_as_array = before


@contextmanager
def _statements(service: Service) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(service.engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(service.engine.sync_engine, "before_cursor_execute", note)


async def _run(
    service: Service, base: int, tag: str, *, fewer: bool, first_upsert: bool = False
) -> tuple[list[str], tuple[int, int]]:
    setup, batch = _traffic(base, tag)
    await ingest(service.sessions, _parsed(setup), service.ctx, source="test")
    if first_upsert:  # a first upsert buffered beside the records: finish writes them one by one
        batch.append(envelope("nominal.upsert", nominal_data(), id=f"{tag}-first",
                              visor_ref=_ref(base, "new"), occurred_at="2026-11-20T08:00:00Z"))
    with _fewer(fewer), _statements(service) as seen:
        result = await ingest(service.sessions, _parsed(batch), service.ctx, source="test")
    return seen, (result.accepted, result.duplicates)


def _keyed_reads(statements: list[str], condition: str) -> int:
    """The batch's reads of nominals and actions by key (locking: FOR UPDATE on PostgreSQL) that
    take their keys so."""
    ordered = (" ORDER BY nominals.visor_ref", " ORDER BY actions.action_id")
    reads = [s for s in statements if s.removesuffix(" FOR UPDATE").endswith(ordered)]
    return sum(f".visor_ref{condition}" in s or f".action_id{condition}" in s for s in reads)


def _combined(statements: list[str]) -> list[str]:
    return [s for s in statements if s.startswith("WITH w0 AS (INSERT INTO ")]


@pytest.mark.parametrize("first_upsert", [False, True])
async def test_one_statement_stores_what_one_a_table_stores(service: Service, first_upsert: bool) -> None:
    first = first_upsert
    plain_statements, plain_answer = await _run(service, 1000, "plain", fewer=False, first_upsert=first)
    fewer_statements, fewer_answer = await _run(service, 2000, "fewer", fewer=True, first_upsert=first)
    assert fewer_answer == plain_answer == (16 + first_upsert, 0)
    plain, fewer = await _state(service, 1000, "plain"), await _state(service, 2000, "fewer")
    assert fewer == plain
    assert all(plain[m.__tablename__] for m in RECORDS) and len(plain["actions"]) == 2
    assert plain["alerts"] and plain["audit"]
    assert _combined(plain_statements) == []
    assert _keyed_reads(plain_statements, " IN (") == 2  # the nominals and the actions
    if service.engine.dialect.name != "postgresql":
        assert _keyed_reads(fewer_statements, " IN (SELECT anon_1.value \nFROM json_each(") == 2
    if service.engine.dialect.name != "postgresql" or first_upsert:
        assert len(fewer_statements) == len(plain_statements)
        assert _combined(fewer_statements) == []
        return
    # Every record table, the actions and the dates in one statement: ten fewer.
    (combined,) = _combined(fewer_statements)
    assert all(f"INSERT INTO {m.__tablename__} " in combined for m in (*RECORDS, Action))
    assert "UPDATE nominals SET last_notification_on" in combined
    assert len(fewer_statements) == len(plain_statements) - len(RECORDS) - 1
    assert _keyed_reads(fewer_statements, " = ANY (") == 2


async def test_a_group_of_singles_is_answered_and_stored_alike(service: Service) -> None:
    """Mixed singles (visits, notifications, new actions: the bench's traffic) through the events
    API's group committer, both ways: the same answers and state."""
    committer = GroupCommit(service.sessions, service.ctx, source="test")
    answers = {}
    for base, tag, fewer in ((3000, "plain", False), (4000, "fewer", True)):
        setup, _ = _traffic(base, tag)
        await ingest(service.sessions, _parsed(setup), service.ctx, source="test")
        at = "2026-11-20T08:00:00Z"
        singles = [
            envelope("visit.recorded", id=f"{tag}-v", visor_ref=_ref(base, "known"), occurred_at=at),
            envelope("notification.received", id=f"{tag}-n", visor_ref=_ref(base, "twice"), occurred_at=at,
                     kind="weekly", notified_on="2026-11-19"),
            envelope("action.upsert", id=f"{tag}-a", visor_ref=_ref(base, "new"), occurred_at=at,
                     action_id=f"A-{tag}", summary="Fictional action: bench"),
            envelope("visit.recorded", id=f"{tag}-f", visor_ref=_ref(base, "fresh"), occurred_at=at),
        ]
        before = committer.groups
        with _fewer(fewer), _statements(service) as seen:
            results = await asyncio.gather(*(committer.ingest(_parsed([s])) for s in singles))
        assert committer.groups == before + 1  # the four in one transaction
        answers[tag] = [(r.accepted, r.duplicates, len(r.alerts)) for r in results]
        if fewer and service.engine.dialect.name == "postgresql":
            assert len(_combined(seen)) == 1
    assert answers["fewer"] == answers["plain"] == [(1, 0, 0)] * 4
    assert await _state(service, 4000, "fewer") == await _state(service, 3000, "plain")


def test_the_parts_keep_their_own_parameters() -> None:
    """Two tables with a column of the same name: each part's arrays are its own."""
    visits = Visit.metadata.tables[Visit.__tablename__]
    nominals = Nominal.metadata.tables[Nominal.__tablename__]
    statement = arrays.combined_statement(
        ((visits, ("visor_ref", "event_id")), (visits, ("visor_ref",))),
        (nominals, "visor_ref", "last_notification_on"),
    )
    assert sorted(statement._bindparams) == [
        "p0_event_id", "p0_visor_ref", "p1_visor_ref", "p2_keys", "p2_values"
    ]
    assert arrays.combined_params([{"visor_ref": [1]}, {"visor_ref": [2]}]) == {
        "p0_visor_ref": [1], "p1_visor_ref": [2]
    }
