"""The time-driven scan on SQLite and PostgreSQL: what it opens, resolves, and never repeats."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.store.models import Action, Alert, AuditEntry, Nominal, Officer, Recall
from casewatch.triggers import scan
from casewatch.triggers.scan import run_scan
from tests.test_triggers_case_data import action, alerts, context, live, nominal, notification, utc

Sessions = async_sessionmaker[AsyncSession]


async def _seed(sessions: Sessions) -> None:
    async with sessions.begin() as s:
        # periodic notification due 2026-11-20 (a year after the last one)
        s.add(nominal("VS-0000010", last_notification_on=date(2025, 11, 20)))
        # released 2026-11-16, nothing since: initial due 2026-11-18, the last of the 3 days
        # beginning with the release (SOA 2003 s.83(1), s.84(1)(d)); missed from 2026-11-19
        s.add(nominal("VS-0000011", release_date=date(2026, 11, 16), team="south", offender_manager="PC9"))
        # not registered: owes nothing
        s.add(nominal("VS-0000012", registered=False, last_notification_on=date(2020, 1, 1)))
        s.add(action("MAPP-1", "VS-0000010", date(2026, 11, 20)))
        s.add(action("MAPP-2", "VS-0000010", date(2026, 11, 27)))
        s.add(action("MAPP-3", "VS-0000010", date(2026, 12, 30)))  # beyond the reminder horizon
        s.add(action("MAPP-4", "VS-0000010", date(2026, 11, 1), status="done"))
        s.add(action("RMP-9", "VS-0009999", date(2026, 10, 1), owner="PC77"))  # unknown nominal
        s.add(Officer(id="PC77", name="PC Fictional", email="", slack_user_id=None, team="east", roles=[]))


async def test_scan_opens_at_the_exact_instant_and_is_idempotent(sessions: Sessions) -> None:
    await _seed(sessions)
    before = context("2026-11-20T23:59:59Z")
    summary = await run_scan(sessions, before)
    async with sessions() as s:
        assert await live(s) == [
            ("action.due_soon", "VS-0000010", "MAPP-1"),
            ("action.due_soon", "VS-0000010", "MAPP-2"),
            ("action.overdue", "VS-0009999", "RMP-9"),
            ("notification.due_soon", "VS-0000010", "periodic:2026-11-20"),
            ("notification.missed", "VS-0000011", "initial:2026-11-18"),
        ]
        team = (await s.execute(select(Alert.team).where(Alert.subject == "RMP-9"))).scalar_one()
        assert team == "east"  # the owner's team: the nominal is not known
    assert sum(summary.tally.opened.values()) == 5

    again = await run_scan(sessions, before)
    assert not again.tally.opened and not again.tally.resolved

    at = context("2026-11-21T00:00:00Z")
    summary = await run_scan(sessions, at)
    assert dict(summary.tally.opened) == {"action.overdue": 1, "notification.missed": 1}
    assert dict(summary.tally.resolved) == {"action.due_soon": 1, "notification.due_soon": 1}
    async with sessions() as s:
        assert await live(s) == [
            ("action.due_soon", "VS-0000010", "MAPP-2"),
            ("action.overdue", "VS-0000010", "MAPP-1"),
            ("action.overdue", "VS-0009999", "RMP-9"),
            ("notification.missed", "VS-0000010", "periodic:2026-11-20"),
            ("notification.missed", "VS-0000011", "initial:2026-11-18"),
        ]
        # resolved alerts keep their history
        resolved = [a for a in await alerts(s) if a[3] == "resolved"]
        assert len(resolved) == 2
    second = await run_scan(sessions, at)
    assert not second.tally.opened and not second.tally.resolved
    assert "alerts opened: 0" in second.lines()


async def test_weekly_reporters_end_to_end(sessions: Sessions) -> None:
    """SOA 2003 s.85(1), (2), (5)(a) and SI 2012/1876: for no fixed abode, a weekly notification
    is the periodic notification, so a compliant weekly reporter gets no "missed annual"
    notification after 13 months; travel and return notifications (s.86) move no clock."""
    async with sessions.begin() as s:
        s.add(nominal("VS-0000020", no_fixed_abode=True, last_notification_on=date(2025, 10, 1)))
        for week in range(60):  # weekly from 2025-10-01 to 2026-11-18, 13 months and more
            day = date(2025, 10, 1) + timedelta(days=7 * week)
            s.add(notification("VS-0000020", "weekly", day, f"ev-w-{week}"))
        s.add(nominal("VS-0000021", no_fixed_abode=True, last_notification_on=date(2026, 11, 16)))
        s.add(notification("VS-0000021", "weekly", date(2026, 11, 16), "ev-x-1"))
        s.add(notification("VS-0000021", "travel", date(2026, 11, 20), "ev-x-2"))
        s.add(notification("VS-0000021", "return", date(2026, 11, 21), "ev-x-3"))
    await run_scan(sessions, context("2026-11-23T23:59:59Z"))
    async with sessions() as s:
        assert await live(s) == [("notification.due_soon", "VS-0000021", "weekly:2026-11-23")]
    await run_scan(sessions, context("2026-11-24T00:00:00Z"))
    async with sessions() as s:
        assert await live(s) == [
            ("notification.due_soon", "VS-0000020", "weekly:2026-11-25"),
            ("notification.missed", "VS-0000021", "weekly:2026-11-23"),
        ]


async def test_scan_resolves_what_is_no_longer_due(sessions: Sessions) -> None:
    await _seed(sessions)
    at = context("2026-11-22T09:00:00Z")
    await run_scan(sessions, at)
    async with sessions.begin() as s:
        s.add(notification("VS-0000010", "periodic", date(2026, 11, 22), "ev-n-1"))
        s.add(notification("VS-0000011", "initial", date(2026, 11, 22), "ev-n-2"))
        (await s.get(Action, "MAPP-1")).status = "done"  # type: ignore[union-attr]
        (await s.get(Action, "RMP-9")).due_on = date(2027, 3, 1)  # type: ignore[union-attr]
    summary = await run_scan(sessions, at)
    assert dict(summary.tally.resolved) == {"notification.missed": 2, "action.overdue": 2}
    async with sessions() as s:
        assert await live(s) == [("action.due_soon", "VS-0000010", "MAPP-2")]
        reasons = (
            await s.execute(
                select(Alert.subject, Alert.resolved_reason).where(
                    Alert.state == "resolved", Alert.kind == "action.overdue"
                )
            )
        ).all()
        assert dict(reasons) == {"MAPP-1": "action done", "RMP-9": "no longer due"}


async def test_deregistered_or_deleted_nominals_resolve(sessions: Sessions) -> None:
    await _seed(sessions)
    at = context("2026-11-22T09:00:00Z")
    await run_scan(sessions, at)
    async with sessions.begin() as s:
        (await s.get(Nominal, "VS-0000010")).registered = False  # type: ignore[union-attr]
        await s.delete(await s.get(Nominal, "VS-0000011"))
        await s.delete(await s.get(Action, "MAPP-2"))
    summary = await run_scan(sessions, at)
    assert dict(summary.tally.resolved) == {"notification.missed": 2, "action.due_soon": 1}


async def test_scan_pages_through_batches(sessions: Sessions) -> None:
    async with sessions.begin() as s:
        for i in range(7):
            ref = f"VS-10000{i:02d}"
            s.add(nominal(ref, last_notification_on=date(2025, 11, 1)))
            # several actions share a due date, so the keyset must order by (due_on, action_id)
            for j in range(3):
                s.add(action(f"A-{i}-{j}", ref, date(2026, 11, 10 + j)))
    summary = await run_scan(sessions, context("2026-11-23T12:00:00Z"), batch_size=2)
    assert summary.tally.opened == {"notification.missed": 7, "action.overdue": 21}
    # Pages are written side by side on PostgreSQL (scan._write_pages): each alert once, with
    # its audit row, and the tally counts exactly what was committed.
    async with sessions() as s:
        opened = (await s.execute(select(Alert.id))).scalars().all()
        assert len(opened) == len(set(opened)) == 28 == len(summary.tally.opened_ids)
        assert set(opened) == set(summary.tally.opened_ids)
        audited = (
            await s.execute(select(AuditEntry.subject).where(AuditEntry.action == "alert.opened"))
        ).scalars().all()
        assert sorted(audited) == sorted(opened)
    again = await run_scan(sessions, context("2026-11-23T12:00:00Z"), batch_size=2)
    assert not again.tally.opened


async def test_a_failing_page_stops_the_scan_with_its_own_error(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page that cannot be written ends the scan with that error (not a hang, not an
    ExceptionGroup); the pages committed before it stay, and a re-run opens the rest."""
    async with sessions.begin() as s:
        for i in range(6):
            s.add(nominal(f"VS-20000{i:02d}", last_notification_on=date(2025, 11, 1)))
    calls = 0
    real_apply = scan.apply  # type: ignore[attr-defined]

    async def failing_apply(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("page write failed")
        return await real_apply(*args, **kwargs)

    monkeypatch.setattr(scan, "apply", failing_apply)
    with pytest.raises(RuntimeError, match="page write failed"):
        await asyncio.wait_for(run_scan(sessions, context("2026-11-23T12:00:00Z"), batch_size=2), 30)
    async with sessions() as s:
        first = len((await s.execute(select(Alert.id))).scalars().all())
    # Whole pages only: the failed page rolled back (and on PostgreSQL, a page being written
    # beside it when it failed may have been cancelled and rolled back too).
    assert first % 2 == 0 and first < 6
    monkeypatch.setattr(scan, "apply", real_apply)
    rest = await run_scan(sessions, context("2026-11-23T12:00:00Z"), batch_size=2)
    assert sum(rest.tally.opened.values()) == 6 - first


async def test_leap_day_and_dst_on_the_database(sessions: Sessions) -> None:
    async with sessions.begin() as s:
        s.add(nominal("VS-0000020", last_notification_on=date(2024, 2, 29)))  # due 2025-02-28
    await run_scan(sessions, context("2025-02-28T23:59:59Z"))
    async with sessions() as s:
        assert await live(s) == [("notification.due_soon", "VS-0000020", "periodic:2025-02-28")]
    await run_scan(sessions, context("2025-03-01T00:00:00Z"))
    async with sessions() as s:
        assert await live(s) == [("notification.missed", "VS-0000020", "periodic:2025-02-28")]
        missed = (await s.execute(select(Alert).where(Alert.kind == "notification.missed"))).scalar_one()
        assert missed.due_at == utc("2025-03-01T00:00:00Z")
        assert missed.summary == "Missed periodic notification: VS-0000020, due 2025-02-28"
        assert missed.owner == "PC1234"


async def test_recall_safety_net_resolves_a_returned_recall(sessions: Sessions) -> None:
    from casewatch.alerts.lifecycle import open_alert
    from casewatch.model.alerts import AlertSpec

    ctx = context("2026-11-20T10:00:00Z")
    async with sessions.begin() as s:
        s.add(
            Recall(
                visor_ref="VS-0000030",
                recall_type="standard",
                issued_at=utc("2026-11-20T09:00:00Z"),
                returned_at=utc("2026-11-21T09:00:00Z"),
                event_id="ev-recall-30",
            )
        )
        s.add(
            Recall(
                visor_ref="VS-0000031",
                recall_type="standard",
                issued_at=utc("2026-11-20T09:00:00Z"),
                returned_at=None,
                event_id="ev-recall-31",
            )
        )
        # Known to the case store: a recall of an unknown nominal is not at large (rules.recall).
        s.add(nominal("VS-0000031", registered=False, on_licence=True))
        for ref, subject in (("VS-0000030", "ev-recall-30"), ("VS-0000031", "ev-recall-31")):
            await open_alert(s, AlertSpec("recall.issued", "critical", ref, "north", subject), ctx)
    summary = await run_scan(sessions, ctx)
    assert dict(summary.tally.resolved) == {"recall.issued": 1}
    # The recall not returned: its nominal is unlawfully at large (issue 15).
    assert dict(summary.tally.opened) == {"recall.unlawfully_at_large": 1}
    async with sessions() as s:
        assert await live(s) == [
            ("recall.issued", "VS-0000031", "ev-recall-31"),
            ("recall.unlawfully_at_large", "VS-0000031", "ev-recall-31"),
        ]
