"""load.notification_candidates (one UNION, a select a clock) reads exactly the nominals the
filter of the OR of load.notification_clocks reads, in the same order, on both
databases: over random case data (tests.test_scan_candidates' seed) and for each clock alone."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.store.models import Nominal
from casewatch.triggers import load
from casewatch.triggers.rules import notifications
from tests.test_scan_candidates import _branches, _seed
from tests.test_triggers_case_data import context, nominal

Sessions = async_sessionmaker[AsyncSession]


async def _both(sessions: Sessions, quiet_after: date) -> tuple[list[str], list[str]]:
    async with sessions() as s:
        by_filter = list((await s.execute(
            select(Nominal.visor_ref)
            .where(Nominal.registered.is_(True), or_(*load.notification_clocks(quiet_after)))
            .order_by(Nominal.visor_ref)
        )).scalars())
        by_union = await load.notification_candidates(s, quiet_after)
    return by_filter, by_union


@pytest.mark.parametrize("today", [date(2026, 11, 23), date(2028, 2, 29), date(2026, 12, 31)])
async def test_the_union_reads_what_the_filter_reads(sessions: Sessions, today: date) -> None:
    await _seed(sessions, random.Random(f"union-{today}"), today, 400)
    settings = context(f"{today.isoformat()}T12:00:00Z").settings.triggers
    for quiet_after in (notifications.quiet_after(today, settings), today - timedelta(days=30)):
        by_filter, by_union = await _both(sessions, quiet_after)
        assert by_filter, "the data must hold candidates"
        assert by_union == by_filter


async def test_each_clock_alone(sessions: Sessions) -> None:
    today = date(2026, 11, 23)
    branches = _branches()
    async with sessions.begin() as s:
        for i, (_, rows, _) in enumerate(branches):
            ref = f"VS-BR{i:05d}"
            s.add(nominal(ref, last_notification_on=today - timedelta(days=7)))
            for j, row in enumerate(rows):
                row.visor_ref, row.event_id = ref, f"br-{i}-{j}"
                s.add(row)
        s.add(nominal("VS-BR99998", no_fixed_abode=True, last_notification_on=today))
        s.add(nominal("VS-BR99999", registered=False, no_fixed_abode=True))
    settings = context(f"{today.isoformat()}T12:00:00Z").settings.triggers
    by_filter, by_union = await _both(sessions, notifications.quiet_after(today, settings))
    assert by_union == by_filter
    assert set(by_union) == {
        f"VS-BR{i:05d}" for i, (_, _, wanted) in enumerate(branches) if wanted
    } | {"VS-BR99998"}
