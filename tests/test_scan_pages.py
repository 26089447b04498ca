"""However the scan's passes are cut into pages (a short page ends a pass without asking for
the next; the notification pass pages its candidates' references), every page size reads the
same nominals, actions and meetings and wants the same alerts, in the same order, on both
databases: a page of 1, sizes around the counts themselves, and one page for all."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import date, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bench.dataset import NOW, Sizes, generate, make_settings
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.store.models import Meeting
from casewatch.triggers import scan
from casewatch.triggers.reconcile import Tally

SIZES = Sizes(nominals=300, actions=1_500, officers=20, teams=3)


async def _wanted(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, size: int, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The live keys the passes' pages want opened, in page order (nothing is written)."""
    seen: list[str] = []

    async def record(
        sessions: async_sessionmaker[AsyncSession], ctx: Context, tally: Tally,
        pages: AsyncGenerator[scan.Page, None],
    ) -> None:
        async for page in pages:
            assert len(page) <= size
            seen.extend(spec.live_key for result, _ in page for spec in result.opens)

    monkeypatch.setattr(scan, "_write_pages", record)
    await scan.run_scan(sessions, ctx, NOW, batch_size=size)
    return seen


async def test_every_page_size_wants_the_same_alerts(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await generate(engine, SIZES, make_settings(db_url, SIZES))
    async with sessions.begin() as s:  # the minutes pass pages by id
        for i in range(5):
            s.add(Meeting(
                meeting_id=f"M-{i}", visor_ref=f"VS-B{i + 1:07d}", level=2, minutes_on_visor_on=None,
                held_on=date(2026, 10, 1) + timedelta(days=i), state_as_of=NOW, event_id=f"bench-meeting-{i}",
            ))
    ctx = Context(make_settings(db_url, SIZES), FixedClock(NOW))
    everything = await _wanted(sessions, ctx, 10_000, monkeypatch)
    kinds = {key.split("|", 1)[0] for key in everything}
    assert {"notification.missed", "action.overdue", "action.due_soon", "mappa.minutes_overdue"} <= kinds
    notifications = sum(key.startswith("notification.") for key in everything)
    actions = sum(key.startswith("action.") for key in everything)
    for size in (1, 2, 5, notifications, notifications + 1, actions, actions + 1):
        assert await _wanted(sessions, ctx, size, monkeypatch) == everything, size
