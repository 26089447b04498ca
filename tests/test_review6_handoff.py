"""Review (sixth session, issue 17): what the delivery handoff hands over, around transactions
that do not simply commit (bell.Handoff, routing.outbox._write_claimed, store.engine's after_commit
and after_rollback listeners). Every row handed to the worker must be a committed row of this
transaction, handed once.

Holds: a rolled-back transaction hands nothing; a session's second transaction hands only its own
rows; a commit that fails hands nothing; a rolled-back savepoint's rows are not handed.
Fixed (was a strict xfail): a rolled-back savepoint dropped every row the transaction wrote
claimed so far, and the outbox and audit marks, not only its own (store.engine's after_rollback
listener fires for a savepoint too): those rows were committed claimed by the worker and never
handed (sent only after their lease, as "lease expired"). store.engine now snapshots the pending
rows and marks when a savepoint begins and goes back to it when that savepoint rolls back
(after_soft_rollback with previous_transaction.nested); released savepoints keep theirs; the
outer rollback or end drops all. Tests below: the rows before the savepoint are handed, the
marks still ring, a released savepoint's rows are handed, an outer rollback hands nothing.
Real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from casewatch.alerts.lifecycle import open_alert
from casewatch.bell import Claimer, Handoff
from casewatch.context import Context
from casewatch.model.alerts import AlertSpec
from casewatch.store.engine import make_sessionmaker
from casewatch.store.models import Alert
from tests.test_delivery_support import T0, deliveries, make_ctx, make_settings, setup_directory

DELIVERY = {"send_timeout_seconds": 5, "lease_seconds": 60}


def _spec(visor_ref: str) -> AlertSpec:
    return AlertSpec(
        kind="travel.unnotified", severity="high", visor_ref=visor_ref, team="north",
        subject="", summary=f"travel.unnotified for {visor_ref}", owner="PC1234",
        due_at=T0 + timedelta(days=1),
    )


async def _open(session: AsyncSession, ctx: Context, visor_ref: str) -> Alert:
    alert = await open_alert(session, _spec(visor_ref), ctx)
    assert alert is not None
    return alert


async def test_a_rolled_back_transaction_hands_nothing_and_the_next_hands_only_its_own(
    engine: AsyncEngine,
) -> None:
    ctx = make_ctx(make_settings(delivery=DELIVERY))
    handoff = Handoff(limit=20)
    sessions = make_sessionmaker(engine, handoff=handoff)
    await setup_directory(sessions, ctx.settings)
    handoff.attach(Claimer("w0", 60))
    async with sessions() as session:
        with pytest.raises(LookupError):
            async with session.begin():
                await _open(session, ctx, "VS-0000001")
                raise LookupError("the rest of the batch failed")
        assert handoff.take(100) == [] and await deliveries(sessions) == []
        async with session.begin():
            first = await _open(session, ctx, "VS-0000002")
        async with session.begin():
            second = await _open(session, ctx, "VS-0000003")
        handed = handoff.take(100)
    rows = await deliveries(sessions)
    assert len(rows) == 4 and all(r.state == "sending" and r.claimed_by == "w0" for r in rows)
    assert sorted(r.id for r in handed) == sorted(r.id for r in rows)  # each once, none twice
    assert {r.alert_id for r in handed} == {first.id, second.id}


async def test_a_commit_that_fails_hands_nothing(engine: AsyncEngine) -> None:
    ctx = make_ctx(make_settings(delivery=DELIVERY))
    handoff = Handoff(limit=20)
    sessions = make_sessionmaker(engine, handoff=handoff)
    await setup_directory(sessions, ctx.settings)
    handoff.attach(Claimer("w0", 60))

    def refuse(session: object) -> None:
        raise RuntimeError("the commit failed")

    async with sessions() as session:
        event.listen(session.sync_session, "before_commit", refuse)
        with pytest.raises(RuntimeError):
            async with session.begin():
                await _open(session, ctx, "VS-0000001")
        event.remove(session.sync_session, "before_commit", refuse)
        assert handoff.take(100) == []
        async with session.begin():
            kept = await _open(session, ctx, "VS-0000002")
    handed = handoff.take(100)
    assert {r.alert_id for r in handed} == {kept.id} and len(handed) == 2
    assert sorted(r.id for r in handed) == sorted(r.id for r in await deliveries(sessions))


async def test_rows_of_a_rolled_back_savepoint_are_not_handed(engine: AsyncEngine) -> None:
    ctx = make_ctx(make_settings(delivery=DELIVERY))
    handoff = Handoff(limit=20)
    sessions = make_sessionmaker(engine, handoff=handoff)
    await setup_directory(sessions, ctx.settings)
    handoff.attach(Claimer("w0", 60))
    async with sessions() as session:
        async with session.begin():
            nested = await session.begin_nested()
            await _open(session, ctx, "VS-0000001")
            await nested.rollback()
            kept = await _open(session, ctx, "VS-0000002")
    handed = handoff.take(100)
    rows = await deliveries(sessions)
    assert len(rows) == 2 and {r.alert_id for r in rows} == {kept.id}
    assert sorted(r.id for r in handed) == sorted(r.id for r in rows)
    assert {r.alert_id for r in handed} == {kept.id}


async def test_rows_written_before_a_rolled_back_savepoint_are_still_handed(engine: AsyncEngine) -> None:
    ctx = make_ctx(make_settings(delivery=DELIVERY))
    handoff = Handoff(limit=20)
    sessions = make_sessionmaker(engine, handoff=handoff)
    await setup_directory(sessions, ctx.settings)
    handoff.attach(Claimer("w0", 60))
    async with sessions() as session:
        async with session.begin():
            kept = await _open(session, ctx, "VS-0000001")
            nested = await session.begin_nested()
            await _open(session, ctx, "VS-0000002")
            await nested.rollback()
    handed = handoff.take(100)
    rows = await deliveries(sessions)
    assert len(rows) == 2 and {r.alert_id for r in rows} == {kept.id}
    assert sorted(r.id for r in handed) == sorted(r.id for r in rows)


async def test_a_commit_after_a_rolled_back_savepoint_still_rings_both_bells(engine: AsyncEngine) -> None:
    """The outbox and audit marks of work written before a savepoint survive its rollback."""
    ctx = make_ctx(make_settings(delivery=DELIVERY))
    rings = {"outbox": 0, "audit": 0}
    sessions = make_sessionmaker(
        engine,
        after_outbox_commit=lambda: rings.__setitem__("outbox", rings["outbox"] + 1),
        after_audit_commit=lambda: rings.__setitem__("audit", rings["audit"] + 1),
    )
    await setup_directory(sessions, ctx.settings)
    rings.update(outbox=0, audit=0)
    async with sessions() as session:
        async with session.begin():
            await _open(session, ctx, "VS-0000001")
            nested = await session.begin_nested()
            await _open(session, ctx, "VS-0000002")
            await nested.rollback()
    assert rings == {"outbox": 1, "audit": 1}


async def test_a_savepoint_released_keeps_its_rows_and_the_outer_rollback_drops_all(
    engine: AsyncEngine,
) -> None:
    ctx = make_ctx(make_settings(delivery=DELIVERY))
    handoff = Handoff(limit=20)
    rings = {"audit": 0}
    sessions = make_sessionmaker(
        engine, handoff=handoff,
        after_audit_commit=lambda: rings.__setitem__("audit", rings["audit"] + 1),
    )
    await setup_directory(sessions, ctx.settings)
    rings.update(audit=0)
    handoff.attach(Claimer("w0", 60))
    async with sessions() as session:
        async with session.begin():
            nested = await session.begin_nested()
            released = await _open(session, ctx, "VS-0000003")
            await nested.commit()
    handed = handoff.take(100)
    assert handed and {r.alert_id for r in handed} == {released.id}
    assert rings == {"audit": 1}  # handed rows ring no outbox bell; the audit mark stayed
    async with sessions() as session:
        transaction = await session.begin()
        await session.begin_nested()
        await _open(session, ctx, "VS-0000004")
        await transaction.rollback()
    async with sessions() as session:
        async with session.begin():
            pass
    assert handoff.take(100) == [] and rings == {"audit": 1}
