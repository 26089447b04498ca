"""The demo's snapshot extract, through the real import path on the demo's own data."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.clock import SystemClock
from casewatch.config import load_config
from casewatch.context import Context
from casewatch.demo.data import build_demo, demo_officers, demo_teams
from casewatch.demo.runner import load_events
from casewatch.store.models import Alert, InboundItem, LevelChange, Nominal
from integrations.snapshot.demo import NEW_REF, RATIONALE, run_demo_snapshot


async def test_the_demo_extract_shows_each_kind_of_difference_once(
    db_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    settings = load_config("/dev/null", environ={}, overrides={
        "database": {"url": db_url}, "slack": {"mode": "off"}, "teams": demo_teams(),
        "officers": demo_officers(),
    })
    ctx = Context(settings, SystemClock())
    data = build_demo(date.today(), nominals=60)
    await load_events(sessions, data.events, ctx)
    async with sessions() as session:
        before = set((await session.execute(select(Alert.id))).scalars())
    at = datetime.now(UTC)
    result = await run_demo_snapshot(sessions, ctx, tmp_path, data, extracted_at=at)
    raised, riskier, missing, bad, new = (s.visor_ref for s in result.scenarios)
    assert new == NEW_REF
    summary = result.summary
    assert (summary.new, summary.changed, len(summary.bad_lines)) == (1, 2, 1)
    assert summary.missing == [missing] and summary.missing_alerts == 1
    assert any("not a date in format %d/%m/%Y" in p for p in result.problems)
    async with sessions() as session:
        kinds = (await session.execute(
            select(Alert.kind, Alert.visor_ref, Alert.details).where(Alert.id.not_in(before))
        )).all()
        assert [r for k, r, _ in kinds if k == "mappa.level_changed"] == [raised]
        assert [d["rationale_given"] for k, _, d in kinds if k == "mappa.level_changed"] == [True]
        assert [r for k, r, _ in kinds if k == "risk.changed"] == [riskier]
        assert [r for k, r, _ in kinds if k == "feed.nominal_missing"] == [missing]
        assert len([k for k, _, _ in kinds if k == "feed.unreadable"]) == 1
        rationale = (await session.execute(
            select(LevelChange.rationale).where(LevelChange.visor_ref == raised)
        )).scalars().all()
        assert rationale == [RATIONALE]
        assert await session.get(Nominal, NEW_REF) is not None
        assert await session.get(Nominal, missing) is not None
        assert len((await session.execute(select(InboundItem.id))).all()) == 1

    again = await run_demo_snapshot(sessions, ctx, tmp_path, data, extracted_at=at)
    assert (again.summary.accepted, again.summary.missing_alerts) == (0, 0)
    assert again.summary.kept is not None and again.summary.kept.duplicate
