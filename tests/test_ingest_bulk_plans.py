"""A large batch's keyed reads are planned for their own keys on PostgreSQL
(casewatch.ingest.plans): the setting holds inside that ingest transaction, and only there."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.ingest.apply import Batch
from casewatch.ingest.pipeline import PLANNED_FOR_THEIR_KEYS_FROM, ingest
from casewatch.ingest.plans import plan_for_these_keys
from casewatch.ingest.schema import parse_envelopes
from casewatch.model.events import Envelope
from casewatch.store.engine import make_engine, make_sessionmaker
from tests.support import T0, envelope, make_settings


async def _mode(session: AsyncSession) -> str:
    return str((await session.execute(text("SHOW plan_cache_mode"))).scalar_one())


@pytest.mark.postgres
async def test_plans_are_made_for_the_keys_in_that_transaction_only(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=1)
    try:
        sessions = make_sessionmaker(engine)
        async with sessions() as session, session.begin():
            assert await _mode(session) == "auto"
            await plan_for_these_keys(session)
            assert await _mode(session) == "force_custom_plan"
        async with sessions() as session:  # the one pooled connection again
            assert await _mode(session) == "auto"
    finally:
        await engine.dispose()


async def test_nothing_is_sent_to_sqlite(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await plan_for_these_keys(session)
        assert statements == []
    finally:
        await engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (1, "auto"),
        (PLANNED_FOR_THEIR_KEYS_FROM - 1, "auto"),
        (PLANNED_FOR_THEIR_KEYS_FROM, "force_custom_plan"),
    ],
)
async def test_a_large_batch_loads_with_plans_for_its_keys_and_a_small_one_with_the_cache(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, events: int, expected: str
) -> None:
    seen: list[str] = []
    real = Batch.load.__func__  # type: ignore[attr-defined]

    async def spy(cls: type[Batch], session: AsyncSession, envelopes: Sequence[Envelope]) -> Batch:
        seen.append(await _mode(session))
        batch: Batch = await real(cls, session, envelopes)
        return batch

    monkeypatch.setattr(Batch, "load", classmethod(spy))
    engine = make_engine(pg_url)
    try:
        ctx = Context(make_settings(pg_url), FixedClock(T0 + timedelta(hours=1)))
        raws = [envelope("nominal.upsert", visor_ref=f"VS-PLAN{n:04d}") for n in range(events)]
        parsed, errors = parse_envelopes(raws)
        assert errors == []
        result = await ingest(make_sessionmaker(engine), parsed, ctx, source="test")
        assert result.accepted == events
        assert seen == [expected]
    finally:
        await engine.dispose()
