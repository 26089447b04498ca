"""On PostgreSQL a batch's records (visits, notifications, travel, border checks, detentions,
detected changes, RMP reviews), new actions and the notification dates of known nominals are
written as arrays, one statement a table (casewatch.ingest.arrays, Batch.array_writes), where an
executemany was one execution a row. The same traffic with the arrays and with the executemany
stores the same rows, opens the same alerts and gives the same answers, on SQLite (where nothing
changes) and PostgreSQL (where the array statements must have run)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.ingest.apply import Batch
from casewatch.ingest.pipeline import ingest
from casewatch.store.models import (
    Action,
    Alert,
    AuditEntry,
    BorderCheck,
    ChangeDetection,
    Detention,
    Nominal,
    NotificationReceived,
    RmpReview,
    TravelCancellation,
    TravelNotification,
    Visit,
)
from casewatch.wiring import Service
from tests.support import envelope, nominal_data
from tests.test_ingest_single_fast import _parsed, service_fixture  # noqa: F401 (fixture)
from tests.test_triggers_case_data import utc

AT = "2026-11-20T08:00:00Z"
ROLES = ("known", "twice", "traveller", "custody", "new", "fresh")
RECORDS = (Visit, NotificationReceived, TravelNotification, TravelCancellation, BorderCheck, Detention,
           ChangeDetection, RmpReview)


def _ref(base: int, role: str) -> str:
    return f"VS-{base + ROLES.index(role):07d}"


def _traffic(base: int, tag: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def on(type_: str, role: str, n: int = 0, **data: Any) -> dict[str, Any]:
        return envelope(type_, id=f"{tag}-{role}-{type_}-{n}", visor_ref=_ref(base, role), occurred_at=AT,
                        **data)

    setup = [
        envelope("nominal.upsert", nominal_data(last_notification_on="2026-01-01"), id=f"{tag}-setup-{role}",
                 visor_ref=_ref(base, role), occurred_at="2026-07-01T00:00:00Z")
        for role in ("known", "twice", "traveller", "custody")
    ]
    batch = [
        on("visit.recorded", "known"),
        on("notification.received", "known", kind="periodic", notified_on="2026-11-18"),
        on("notification.received", "twice", 1, kind="weekly", notified_on="2026-11-19"),
        on("notification.received", "twice", 2, kind="periodic", notified_on="2026-11-10"),  # older
        on("notification.received", "twice", 3, kind="change", what="home_address", changed_on="2026-11-17",
           notified_on="2026-11-18"),
        on("travel.notified", "traveller", trip_id=f"T-{tag}"),
        on("travel.notified", "traveller", 1, departure_on="2026-12-20", return_on="2026-12-27",
           destination="ES", departure_at="2026-12-20T06:00:00Z", notified_at="2026-11-19T10:00:00Z"),
        on("travel.cancelled", "traveller", trip_id=f"T-{tag}"),
        on("travel.border_alert", "traveller", checked_at="2026-11-20T07:00:00Z"),
        on("detention.started", "custody"),
        on("detention.ended", "custody"),
        on("change.detected", "custody"),
        on("rmp.reviewed", "custody"),
        on("action.upsert", "new", action_id=f"A-{tag}", summary="Fictional action: café visit, 2nd"),
        on("action.upsert", "new", 1, action_id=f"B-{tag}", status="done"),
        on("visit.recorded", "fresh"),  # no nominal
    ]
    return setup, batch


@contextmanager
def _arrays(on: bool) -> Iterator[None]:
    # One statement a table: the ninth session's one statement for them all is
    # tests/test_ingest9_writes.py's.
    before = Batch.array_writes, Batch.combine_writes
    Batch.array_writes, Batch.combine_writes = on, False
    try:
        yield
    finally:
        Batch.array_writes, Batch.combine_writes = before


async def _run(service: Service, base: int, tag: str, *, arrays: bool) -> tuple[list[str], tuple[int, int]]:
    setup, batch = _traffic(base, tag)
    await ingest(service.sessions, _parsed(setup), service.ctx, source="test")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(service.engine.sync_engine, "before_cursor_execute", seen)
    try:
        with _arrays(arrays):
            result = await ingest(service.sessions, _parsed(batch), service.ctx, source="test")
    finally:
        event.remove(service.engine.sync_engine, "before_cursor_execute", seen)
    return statements, (result.accepted, result.duplicates)


def _plain(value: Any, base: int, tag: str) -> Any:
    """A stored value with the run's references and tag replaced by role names."""
    if isinstance(value, str):
        for role in ROLES:
            value = value.replace(_ref(base, role), role)
        return value.replace(tag, "TAG")
    return value


async def _rows(
    session: AsyncSession, model: Any, refs: list[str], base: int, tag: str
) -> list[tuple[Any, ...]]:
    table = model.__table__
    keys = [c.key for c in table.columns if c.key != "id"]
    found = await session.execute(select(*(table.c[k] for k in keys)).where(table.c.visor_ref.in_(refs)))
    return sorted((tuple(_plain(v, base, tag) for v in row) for row in found), key=repr)


async def _state(service: Service, base: int, tag: str) -> dict[str, Any]:
    refs = [_ref(base, role) for role in ROLES]
    async with service.sessions() as session:
        state: dict[str, Any] = {
            m.__tablename__: await _rows(session, m, refs, base, tag) for m in (*RECORDS, Action)
        }
        dates = await session.execute(
            select(Nominal.visor_ref, Nominal.last_notification_on).where(Nominal.visor_ref.in_(refs))
        )
        state["dates"] = sorted((_plain(r, base, tag), d) for r, d in dates)
        alerts = (await session.execute(
            select(Alert.id, Alert.visor_ref, Alert.kind, Alert.state, Alert.severity)
            .where(Alert.visor_ref.in_(refs))
        )).all()
        state["alerts"] = Counter(tuple(_plain(v, base, tag) for v in row[1:]) for row in alerts)
        about = {row[0]: (_plain(row[1], base, tag), row[2]) for row in alerts}
        audit = await session.execute(
            select(AuditEntry.action, AuditEntry.subject).where(AuditEntry.subject.in_(list(about)))
        )
        state["audit"] = Counter((action, *about[subject]) for action, subject in audit)
    return state


async def test_arrays_store_what_the_executemany_stores(service: Service) -> None:
    plain_statements, plain_answer = await _run(service, 1000, "plain", arrays=False)
    array_statements, array_answer = await _run(service, 2000, "array", arrays=True)
    assert array_answer == plain_answer == (16, 0)
    plain, arrays = await _state(service, 1000, "plain"), await _state(service, 2000, "array")
    assert arrays == plain
    # The traffic reached every table, and moved known nominals' dates (the newest kept).
    assert all(plain[m.__tablename__] for m in RECORDS) and len(plain["actions"]) == 2
    assert ("twice", utc("2026-11-19T00:00:00Z").date()) in plain["dates"]
    assert ("known", utc("2026-11-18T00:00:00Z").date()) in plain["dates"]
    ours = {f"INSERT INTO {m.__tablename__} " for m in (*RECORDS, Action)} | {"UPDATE nominals SET "}

    def unnested(statements: list[str]) -> list[str]:
        return [s for s in statements if "unnest" in s and any(s.startswith(o) for o in ours)]

    assert unnested(plain_statements) == []
    if service.engine.dialect.name == "postgresql":
        # One statement a table written (8 record tables and actions) and one for the dates.
        assert len(unnested(array_statements)) == len(RECORDS) + 2
    else:
        assert unnested(array_statements) == []
