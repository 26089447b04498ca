"""Event-driven rules, run by the real ingest pipeline (ingest -> apply -> dispatch.on_applied
in one transaction), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.ingest.pipeline import IngestResult, ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.models import Alert, AuditEntry, LevelChange
from casewatch.triggers.dispatch import on_applied
from casewatch.triggers.scan import run_scan
from tests.support import SAMPLE_DATA, envelope, make_settings
from tests.test_triggers_case_data import event, live, utc

Sessions = async_sessionmaker[AsyncSession]
NOW = "2026-07-21T10:00:00Z"


def ctx_at(db_url: str, at: str, **overrides: Any) -> Context:
    return Context(make_settings(db_url, **overrides), FixedClock(utc(at)))


async def post(sessions: Sessions, ctx: Context, *raws: dict[str, Any]) -> IngestResult:
    envelopes, errors = parse_envelopes(list(raws))
    assert errors == []
    return await ingest(sessions, envelopes, ctx, source="test")


def nominal(ref: str, at: str = "2026-01-01T00:00:00Z", **data: Any) -> dict[str, Any]:
    return envelope("nominal.upsert", visor_ref=ref, occurred_at=at, **data)


def border(
    ref: str, id: str, checked_at: str = "2026-07-20T09:00:00Z", direction: str = "inbound"
) -> dict[str, Any]:
    data = {"port": "Dover", "direction": direction, "checked_at": checked_at}
    return envelope("travel.border_alert", data, id=id, visor_ref=ref, occurred_at=checked_at)


def trip(ref: str, id: str, notified_at: str, departure: str, ret: str | None) -> dict[str, Any]:
    data = {"departure_on": departure, "return_on": ret, "destination": "ES"}
    return envelope("travel.notified", data, id=id, visor_ref=ref, occurred_at=notified_at)


async def opened(sessions: Sessions, ids: list[str]) -> list[tuple[str, str, str | None]]:
    async with sessions() as s:
        rows = await s.execute(
            select(Alert.kind, Alert.severity, Alert.opened_by_event).where(Alert.id.in_(ids))
        )
        return sorted((k, sv, e) for k, sv, e in rows)


async def test_unnotified_travel_and_its_task(sessions: Sessions, db_url: str) -> None:
    ctx = ctx_at(db_url, NOW)
    await post(sessions, ctx, nominal("VS-0000040"))
    result = await post(sessions, ctx, border("VS-0000040", "ev-b-1"))
    assert await opened(sessions, result.alerts) == [
        ("travel.record_fta", "high", "ev-b-1"),
        ("travel.unnotified", "high", "ev-b-1"),
    ]
    async with sessions() as s:
        fta = (await s.execute(select(Alert).where(Alert.kind == "travel.record_fta"))).scalar_one()
        assert (fta.owner, fta.team, fta.subject) == ("PC1234", "north", "ev-b-1")
        assert "Testperson" not in fta.summary and "VS-0000040" in fta.summary
        audited = (
            await s.execute(select(AuditEntry.subject).where(AuditEntry.action == "alert.opened"))
        ).scalars()
        assert sorted(audited) == sorted(result.alerts)
    again = await post(sessions, ctx, border("VS-0000040", "ev-b-1"))  # a re-sent event
    assert (again.duplicates, again.alerts) == (1, [])


async def test_confirmed_travel_in_one_batch(sessions: Sessions, db_url: str) -> None:
    ctx = ctx_at(db_url, NOW)
    result = await post(
        sessions,
        ctx,
        nominal("VS-0000041"),
        trip("VS-0000041", "ev-t-1", "2026-06-01T09:00:00Z", "2026-07-10", "2026-07-20"),
        border("VS-0000041", "ev-b-2"),
    )
    assert await opened(sessions, result.alerts) == [("travel.confirmed", "low", "ev-b-2")]


async def test_outbound_check_far_from_departure_is_unnotified(sessions: Sessions, db_url: str) -> None:
    ctx = ctx_at(db_url, NOW)
    await post(
        sessions,
        ctx,
        nominal("VS-0000051"),
        trip("VS-0000051", "ev-t-9", "2026-06-01T09:00:00Z", "2026-07-10", "2026-07-20"),
    )
    near = await post(sessions, ctx, border("VS-0000051", "ev-b-9", "2026-07-12T09:00:00Z", "outbound"))
    far = await post(sessions, ctx, border("VS-0000051", "ev-b-10", "2026-07-13T09:00:00Z", "outbound"))
    assert [k for k, _, _ in await opened(sessions, near.alerts)] == ["travel.confirmed"]
    assert [k for k, _, _ in await opened(sessions, far.alerts)] == ["travel.record_fta", "travel.unnotified"]


async def test_unknown_nominal_is_never_dropped(sessions: Sessions, db_url: str) -> None:
    ctx = ctx_at(db_url, NOW, triggers={"unmatched_team": "north"})
    result = await post(sessions, ctx, border("VS-0404040", "ev-b-3"))
    assert await opened(sessions, result.alerts) == [("travel.unmatched_nominal", "high", "ev-b-3")]
    async with sessions() as s:
        assert (await s.execute(select(Alert.team))).scalar_one() == "north"


async def test_notification_arriving_after_the_check_confirms_it(sessions: Sessions, db_url: str) -> None:
    ctx = ctx_at(db_url, NOW)
    await post(sessions, ctx, nominal("VS-0000042"))
    await post(sessions, ctx, border("VS-0000042", "ev-b-4"))
    # made on 1 June (occurred_at) but delivered after the border check: open-ended trip
    late = await post(sessions, ctx, trip("VS-0000042", "ev-t-2", "2026-06-01T09:00:00Z", "2026-07-10", None))
    assert await opened(sessions, late.alerts) == [("travel.confirmed", "low", "ev-t-2")]
    async with sessions() as s:
        assert await live(s) == [("travel.confirmed", "VS-0000042", "ev-b-4")]


async def test_late_travel_notice_is_flagged(sessions: Sessions, db_url: str) -> None:
    ctx = ctx_at(db_url, NOW)
    await post(sessions, ctx, nominal("VS-0000043"))
    result = await post(
        sessions, ctx, trip("VS-0000043", "ev-t-3", "2026-07-21T09:00:00Z", "2026-07-24", "2026-07-30")
    )
    # 3 days' notice (SI 2004/1220 as amended by SI 2012/1876: 7 days, else 12 hours): medium
    assert await opened(sessions, result.alerts) == [("travel.late_notice", "medium", "ev-t-3")]


async def test_stale_events_are_skipped(sessions: Sessions) -> None:
    async with sessions.begin() as s:
        data = {"port": "Dover", "direction": "inbound", "checked_at": utc("2026-07-20T09:00:00Z")}
        applied = await event(
            s, "ev-b-5", "travel.border_alert", "VS-0000044", "2026-07-20T09:05:00Z", data, stale=True
        )
        assert await on_applied(s, [applied], ctx_at("sqlite+aiosqlite:///unused", NOW)) == []
        assert await live(s) == []


async def test_a_notification_received_resolves_the_missed_alert(sessions: Sessions, db_url: str) -> None:
    ctx = ctx_at(db_url, "2026-11-22T09:00:00Z")
    await post(sessions, ctx, nominal("VS-0000045", last_notification_on="2025-11-20"))
    await run_scan(sessions, ctx)
    async with sessions() as s:
        assert await live(s) == [("notification.missed", "VS-0000045", "periodic:2026-11-20")]
    # a travel notification does not satisfy it...
    travel = envelope(
        "notification.received", {"kind": "travel", "notified_on": "2026-11-22"}, visor_ref="VS-0000045"
    )
    await post(sessions, ctx, travel)
    async with sessions() as s:
        assert await live(s) == [("notification.missed", "VS-0000045", "periodic:2026-11-20")]
    # ...a periodic one does
    periodic = envelope(
        "notification.received", {"kind": "periodic", "notified_on": "2026-11-22"}, visor_ref="VS-0000045"
    )
    assert (await post(sessions, ctx, periodic)).alerts == []
    async with sessions() as s:
        assert await live(s) == []
        alert = (await s.execute(select(Alert))).scalar_one()
        assert alert.state == "resolved" and alert.resolved_at == ctx.clock.now()
    assert not (await run_scan(sessions, ctx)).tally.opened  # and the scan agrees


async def test_an_action_done_resolves_its_alert(sessions: Sessions, db_url: str) -> None:
    ctx = ctx_at(db_url, "2026-11-22T09:00:00Z")
    act = {**SAMPLE_DATA["action.upsert"], "action_id": "MAPP-47", "due_on": "2026-11-20"}
    await post(sessions, ctx, nominal("VS-0000047"), envelope("action.upsert", act, visor_ref="VS-0000047"))
    await run_scan(sessions, ctx)
    async with sessions() as s:
        assert await live(s) == [("action.overdue", "VS-0000047", "MAPP-47")]
    done = envelope(
        "action.upsert", act, visor_ref="VS-0000047", occurred_at="2026-11-22T08:00:00Z", status="done"
    )
    await post(sessions, ctx, done)
    async with sessions() as s:
        assert await live(s) == []
        assert (await s.execute(select(Alert.resolved_reason))).scalar_one() == "action done"


async def test_mappa_level_changes(sessions: Sessions, db_url: str) -> None:
    ctx = ctx_at(db_url, "2026-11-20T10:00:00Z")
    await post(sessions, ctx, nominal("VS-0000048", mappa_level=2))
    up = envelope(
        "mappa.level_changed",
        {"from_level": 2, "to_level": 3, "rationale": "fictional"},
        id="ev-m-1",
        visor_ref="VS-0000048",
        occurred_at="2026-11-20T09:30:00Z",
    )
    down = envelope(
        "mappa.level_changed",
        {"from_level": 3, "to_level": 1},
        id="ev-m-2",
        visor_ref="VS-0000048",
        occurred_at="2026-11-20T09:40:00Z",
    )
    result = await post(sessions, ctx, up, down)
    assert await opened(sessions, result.alerts) == [
        ("mappa.decrease_without_rationale", "medium", "ev-m-2"),
        ("mappa.level_changed", "high", "ev-m-1"),
        ("mappa.level_changed", "medium", "ev-m-2"),
        ("mappa.visor_update_due", "medium", "ev-m-1"),
        ("mappa.visor_update_due", "medium", "ev-m-2"),
    ]
    async with sessions() as s:
        task = (
            await s.execute(
                select(Alert).where(Alert.subject == "ev-m-1", Alert.kind == "mappa.visor_update_due")
            )
        ).scalar_one()
        assert (task.owner, task.due_at) == ("PC1234", utc("2026-11-24T00:00:00Z"))


async def test_a_changed_level_in_an_upsert_is_a_level_change(sessions: Sessions, db_url: str) -> None:
    ctx = ctx_at(db_url, "2026-11-20T10:00:00Z")
    await post(sessions, ctx, nominal("VS-0000052", mappa_level=1))
    result = await post(sessions, ctx, nominal("VS-0000052", "2026-11-20T09:00:00Z", mappa_level=3))
    assert sorted(k for k, _, _ in await opened(sessions, result.alerts)) == [
        "mappa.level_changed",
        "mappa.visor_update_due",
    ]
    older = await post(sessions, ctx, nominal("VS-0000052", "2026-11-19T09:00:00Z", mappa_level=2))
    assert older.alerts == []  # stale: an older upsert changes nothing


async def test_the_same_change_from_an_upsert_and_a_level_event_is_one_change(
    sessions: Sessions, db_url: str
) -> None:
    """A ViSOR export sends the new level in the nominal and, later, the mappa.level_changed with
    its rationale: one change in the history, one set of alerts, and the rationale answers the
    decrease flag."""
    ctx = ctx_at(db_url, "2026-11-20T10:00:00Z")
    await post(sessions, ctx, nominal("VS-0000053", mappa_level=2))
    first = await post(sessions, ctx, nominal("VS-0000053", "2026-11-20T09:00:00Z", mappa_level=1))
    assert sorted(k for k, _, _ in await opened(sessions, first.alerts)) == [
        "mappa.decrease_without_rationale", "mappa.level_changed", "mappa.visor_update_due",
    ]
    described = envelope(
        "mappa.level_changed", {"from_level": 2, "to_level": 1, "rationale": "stable for 3 years"},
        id="ev-m-twin", visor_ref="VS-0000053", occurred_at="2026-11-20T09:05:00Z",
    )
    second = await post(sessions, ctx, described)
    assert second.accepted == 1 and second.alerts == []
    async with sessions() as s:
        changes = select(LevelChange).where(LevelChange.visor_ref == "VS-0000053")
        [change] = (await s.execute(changes)).scalars()
        assert (change.from_level, change.to_level, change.rationale) == (2, 1, "stable for 3 years")
        flag = (
            await s.execute(select(Alert).where(Alert.kind == "mappa.decrease_without_rationale"))
        ).scalar_one()
        assert (flag.state, flag.resolved_reason) == ("resolved", "rationale recorded")
        live_kinds = (await s.execute(select(Alert.kind).where(Alert.state != "resolved"))).scalars()
        assert sorted(live_kinds) == ["mappa.level_changed", "mappa.visor_update_due"]


async def test_recall_stays_open_until_returned(sessions: Sessions, db_url: str) -> None:
    ctx = ctx_at(db_url, "2026-11-20T10:00:00Z")
    await post(sessions, ctx, nominal("VS-0000049"))
    issued = envelope(
        "recall.issued",
        {"recall_type": "emergency", "issued_at": "2026-11-20T09:00:00Z"},
        id="ev-r-1",
        visor_ref="VS-0000049",
    )
    result = await post(sessions, ctx, issued)
    assert await opened(sessions, result.alerts) == [("recall.issued", "critical", "ev-r-1")]
    await run_scan(sessions, ctx)
    async with sessions() as s:
        alert = (await s.execute(select(Alert).where(Alert.kind == "recall.issued"))).scalar_one()
        assert alert.state == "open" and alert.summary.startswith("EMERGENCY recall issued: VS-0000049")
        assert alert.details["emergency"] is True
    returned = envelope("recall.returned", {"returned_at": "2026-11-21T09:00:00Z"}, visor_ref="VS-0000049")
    result = await post(sessions, ctx, returned)
    # The return resolves the recall (and, issue 15, the scan's unlawfully-at-large alert) and
    # opens the offender manager's risk review.
    assert await opened(sessions, result.alerts) == [("recall.risk_review_due", "medium", returned["id"])]
    async with sessions() as s:
        assert await live(s) == [("recall.risk_review_due", "VS-0000049", "ev-r-1")]
        reasons = await s.execute(select(Alert.kind, Alert.resolved_reason).where(Alert.state == "resolved"))
        assert sorted(reasons.all()) == [
            ("recall.issued", "returned to custody"), ("recall.unlawfully_at_large", "returned to custody"),
        ]


async def test_a_return_heard_first_opens_no_recall_alert(sessions: Sessions, db_url: str) -> None:
    """Nobody is at large; the return still owes the risk review (issue 15)."""
    ctx = ctx_at(db_url, "2026-11-22T10:00:00Z")
    returned = envelope("recall.returned", {"returned_at": "2026-11-21T09:00:00Z"}, visor_ref="VS-0000050")
    issued = envelope(
        "recall.issued",
        {"recall_type": "standard", "issued_at": "2026-11-20T09:00:00Z"},
        visor_ref="VS-0000050",
    )
    await post(sessions, ctx, returned)
    result = await post(sessions, ctx, issued)
    assert await opened(sessions, result.alerts) == [("recall.risk_review_due", "medium", issued["id"])]
    assert not (await run_scan(sessions, ctx)).tally.opened
