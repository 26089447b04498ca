"""The batched alert opening the benchmarks pushed for (alerts.lifecycle.open_alerts): one live
alert per key within a batch and against the store, id collisions redrawn without aborting the
transaction, and the outbox and audit rows written for each alert opened. Both databases."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts import lifecycle
from casewatch.alerts.lifecycle import open_alerts
from casewatch.model.alerts import AlertSpec
from casewatch.store.models import Alert, AuditEntry, Delivery
from tests.test_delivery_support import make_ctx, make_settings, setup_directory

Sessions = async_sessionmaker[AsyncSession]


def spec(ref: str, subject: str = "") -> AlertSpec:
    return AlertSpec("recall.issued", "critical", ref, "north", subject=subject, summary=f"Recall: {ref}")


async def _count(sessions: Sessions, model: type[object], **where: str) -> int:
    async with sessions() as session:
        stmt = select(func.count()).select_from(model)  # type: ignore[arg-type]
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return int((await session.execute(stmt)).scalar_one())


async def test_one_live_alert_per_key_in_a_batch_and_across_batches(sessions: Sessions) -> None:
    ctx = make_ctx(make_settings())
    await setup_directory(sessions, ctx.settings)
    async with sessions.begin() as session:
        specs = [spec("VS-O1"), spec("VS-O2"), spec("VS-O1")]
        first = await open_alerts(session, specs, ctx, ["e1", "e2", "e3"])
    assert first[0] is not None and first[1] is not None and first[2] is None
    assert first[0].opened_by_event == "e1" and first[0].state == "open"
    async with sessions.begin() as session:
        again = await open_alerts(session, [spec("VS-O1"), spec("VS-O3")], ctx)
    assert again[0] is None and again[1] is not None
    assert await _count(sessions, Alert) == 3
    assert await _count(sessions, AuditEntry, action="alert.opened") == 3
    for alert in (first[0], first[1], again[1]):
        assert await _count(sessions, Delivery, alert_id=alert.id) == 3  # control room, team, SPOC


async def test_an_id_collision_is_redrawn_without_aborting_the_transaction(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(make_settings())
    await setup_directory(sessions, ctx.settings)
    async with sessions.begin() as session:
        [taken] = await open_alerts(session, [spec("VS-C0")], ctx)
    assert taken is not None
    fresh = (f"A-ZZZZ{n:02d}" for n in itertools.count())
    draws = iter([taken.id, taken.id])  # both new alerts first draw the id already in use
    monkeypatch.setattr(
        lifecycle, "new_alert_ids", lambda n: [next(draws, None) or next(fresh) for _ in range(n)]
    )
    async with sessions.begin() as session:
        opened = await open_alerts(session, [spec("VS-C1"), spec("VS-C2")], ctx)
    assert all(a is not None and a.id != taken.id for a in opened)
    assert await _count(sessions, Alert) == 3
    assert await _count(sessions, Alert, id=taken.id, visor_ref="VS-C0") == 1


async def test_the_stored_row_is_the_opened_record_on_both_databases(sessions: Sessions) -> None:
    """PostgreSQL inserts a batch as one array a column (issue 17); the row read back through
    the ORM is what open_alerts returned, JSON columns and instants included."""
    ctx = make_ctx(make_settings())
    await setup_directory(sessions, ctx.settings)
    due = datetime(2026, 11, 25, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    specs = [
        AlertSpec("action.overdue", "high", "VS-R1", "north", subject="ACT-1", summary="Overdue: ACT-1",
                  details={"action_id": "ACT-1", "nested": {"n": [1, "two", None]}, "ü": "é"},
                  owner="PC001", due_at=due),
        spec("VS-R2"),
    ]
    async with sessions.begin() as session:
        opened = await open_alerts(session, specs, ctx, ["ev-1", None])
    assert all(o is not None for o in opened)
    async with sessions() as session:
        for record in opened:
            assert record is not None
            row = await session.get(Alert, record.id)
            assert row is not None
            for name in (f.name for f in dataclasses.fields(record)):
                assert getattr(row, name) == getattr(record, name), name
    assert opened[0] is not None and opened[0].details["nested"] == {"n": [1, "two", None]}
    assert opened[0].due_at == due


async def test_a_naive_due_time_is_refused_on_both_databases(sessions: Sessions) -> None:
    ctx = make_ctx(make_settings())
    await setup_directory(sessions, ctx.settings)
    naive = AlertSpec(
        "recall.issued", "critical", "VS-N1", "north", summary="x", due_at=datetime(2026, 11, 25)
    )
    with pytest.raises(Exception, match="naive datetime"):
        async with sessions.begin() as session:
            await open_alerts(session, [naive], ctx)
