"""Retention purges only what it should: old resolved alerts with their deliveries, attempts,
threads and acknowledgements; not open or acknowledged alerts however old; not recently resolved
ones; old digests; the audit log only by its own (long) rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.retention import purge
from casewatch.store.models import (
    Acknowledgement,
    Alert,
    AlertThread,
    AuditEntry,
    Delivery,
    DeliveryAttempt,
    InboundItem,
    JobRun,
)
from tests.digest_data import alert
from tests.support import make_settings

NOW = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _delivery(alert_id: str | None, created: datetime, state: str = "sent") -> Delivery:
    return Delivery(
        alert_id=alert_id,
        purpose="opened" if alert_id else "digest",
        receiver="team:north",
        channel="email",
        target="north.spoc@force.example",
        payload={},
        content_hash="",
        state=state,
        attempts=1,
        next_attempt_at=created,
        created_at=created,
        sent_at=created if state == "sent" else None,
    )


async def _with_trail(session: AsyncSession, a: Alert) -> None:
    session.add(a)
    await session.flush()
    d = _delivery(a.id, a.opened_at)
    session.add(d)
    await session.flush()
    session.add(
        DeliveryAttempt(delivery_id=d.id, attempted_at=a.opened_at, outcome="sent", error=None, duration_ms=5)
    )
    session.add(
        AlertThread(
            alert_id=a.id,
            channel="email",
            target=d.target,
            external_ref=f"<{a.id}@x>",
            created_at=a.opened_at,
        )
    )
    session.add(Acknowledgement(alert_id=a.id, officer_id="PC1234", via="api", acknowledged_at=a.opened_at))


async def _count(sessions: async_sessionmaker[AsyncSession], model: type, *where: object) -> int:
    async with sessions() as session:
        return int(
            (await session.execute(select(func.count()).select_from(model).where(*where))).scalar_one()
        )  # type: ignore[arg-type]


async def test_retention_purges_only_what_it_should(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = make_settings(
        db_url,
        schedules={"alert_retention_days": 730, "audit_retention_days": 2557, "message_retention_days": 90},
    )
    old = NOW - 800 * DAY
    async with sessions.begin() as session:
        await _with_trail(
            session,
            alert("A-OLDRES", "travel.confirmed", "VS-0000001", old, state="resolved", resolved=old + DAY),
        )
        await _with_trail(
            session,
            alert("A-OLDRE2", "action.overdue", "VS-0000002", old, state="resolved", resolved=old + DAY),
        )
        # Resolved recently (opened long ago): kept.
        await _with_trail(
            session,
            alert("A-RECENT", "action.overdue", "VS-0000003", old, state="resolved", resolved=NOW - 10 * DAY),
        )
        # Open and acknowledged for years: never purged.
        await _with_trail(session, alert("A-OPEN01", "recall.issued", "VS-0000004", old))
        await _with_trail(
            session, alert("A-ACKED1", "notification.missed", "VS-0000005", old, state="acknowledged")
        )
        session.add_all(
            [
                _delivery(None, NOW - 100 * DAY),  # an old digest: purged
                _delivery(None, NOW - 100 * DAY, state="pending"),  # not sent yet: kept
                _delivery(None, NOW - 10 * DAY),  # a recent digest: kept
                AuditEntry(at=NOW - 2600 * DAY, actor="system", action="delivery.sent", subject="A-ANCIENT"),
                AuditEntry(at=old, actor="system", action="delivery.sent", subject="A-OLDRES"),
                JobRun(
                    job="scan",
                    run_key="scan:old",
                    started_at=NOW - 40 * DAY,
                    finished_at=NOW - 40 * DAY,
                    outcome="ok",
                ),
                JobRun(
                    job="scan", run_key="scan:new", started_at=NOW - DAY, finished_at=NOW - DAY, outcome="ok"
                ),
            ]
        )

    summary = await purge(sessions, Context(settings, FixedClock(NOW)), batch=1)  # batch 1: loops work

    assert (
        summary.alerts,
        summary.deliveries,
        summary.attempts,
        summary.threads,
        summary.acknowledgements,
    ) == (
        2,
        2,
        2,
        2,
        2,
    )
    assert (summary.messages, summary.audit_entries, summary.job_runs) == (1, 1, 1)
    async with sessions() as session:
        left = sorted((await session.execute(select(Alert.id))).scalars())
    assert left == ["A-ACKED1", "A-OPEN01", "A-RECENT"]
    assert await _count(sessions, Delivery, Delivery.alert_id.is_not(None)) == 3
    assert await _count(sessions, DeliveryAttempt) == 3
    assert await _count(sessions, AlertThread) == 3
    assert await _count(sessions, Acknowledgement) == 3
    assert await _count(sessions, Delivery, Delivery.alert_id.is_(None)) == 2
    # The audit log keeps what it said about the purged alert (its own 7-year rule), and records the purge.
    assert await _count(sessions, AuditEntry, AuditEntry.subject == "A-OLDRES") == 1
    assert await _count(sessions, AuditEntry, AuditEntry.subject == "A-ANCIENT") == 0
    assert await _count(sessions, AuditEntry, AuditEntry.action == "retention.purged") == 1
    assert await _count(sessions, JobRun) == 1

    again = await purge(sessions, Context(settings, FixedClock(NOW)))
    assert (again.alerts, again.messages, again.audit_entries) == (0, 0, 0)


async def test_zero_means_keep_for_ever(sqlite_url: str, sessions: async_sessionmaker[AsyncSession]) -> None:
    settings = make_settings(
        sqlite_url,
        schedules={"alert_retention_days": 0, "audit_retention_days": 0, "message_retention_days": 0},
    )
    old = NOW - 5000 * DAY
    async with sessions.begin() as session:
        await _with_trail(
            session, alert("A-OLDRES", "travel.confirmed", "VS-0000001", old, state="resolved", resolved=old)
        )
        session.add(AuditEntry(at=old, actor="system", action="delivery.sent", subject="A-OLDRES"))
        session.add(_delivery(None, old))
    summary = await purge(sessions, Context(settings, FixedClock(NOW)))
    assert (summary.alerts, summary.messages, summary.audit_entries) == (0, 0, 0)
    assert await _count(sessions, Alert) == 1


def _item(n: int, state: str, reviewed_at: datetime | None) -> InboundItem:
    return InboundItem(
        source="mail", external_id=f"mid:{n}", received_at=NOW - 400 * DAY, reason="unreadable",
        media_type="message/rfc822", content=b"x", content_sha256="0" * 64, size=1, team="north",
        state=state, reviewed_at=reviewed_at, reviewed_by="cli:spoc" if reviewed_at else None,
    )


async def test_kept_feed_items_go_only_after_a_person_dealt_with_them(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Issue 18: an item nobody has dealt with is never purged, however old; one dealt with goes
    `inbound_retention_days` later."""
    settings = make_settings(db_url, schedules={"inbound_retention_days": 90})
    async with sessions.begin() as session:
        session.add_all([
            _item(1, "kept", None),  # 400 days old, never dealt with: kept
            _item(2, "reviewed", NOW - 91 * DAY),  # dealt with 91 days ago: purged
            _item(3, "reviewed", NOW - 89 * DAY),  # dealt with 89 days ago: kept
        ])
    summary = await purge(sessions, Context(settings, FixedClock(NOW)))
    assert summary.inbound_items == 1
    async with sessions() as session:
        left = sorted((await session.execute(select(InboundItem.external_id))).scalars())
    assert left == ["mid:1", "mid:3"]
    never = make_settings(db_url, schedules={"inbound_retention_days": 0})
    assert (await purge(sessions, Context(never, FixedClock(NOW + 1000 * DAY)))).inbound_items == 0
