"""Reminders: a live alert that is still wanted is sent again, at a repeat interval per kind
(issue 15: an acknowledgement means "owned", not "done"; a recall is not silenced while the
nominal is unlawfully at large).

`triggers.repeat_reminder_hours` names the kinds that repeat and their interval. A live alert
(open or acknowledged) of such a kind whose last reminder, or else its opening, is at least that
long ago gets a "reminder" change (routing.outbox: to the kind's receivers) and an audit entry
`alert.reminded`. The audit log is the record of the last reminder (no column of its own): an
entry's `at`, or the scan instant it was sent as of (`details.as_of`), whichever is later, so a
re-run as of the same instant sends nothing, even when `casewatch scan --at` names an instant
other than now. Run by the scan, after its other passes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.audit import Entry, record_many
from casewatch.context import Context
from casewatch.model.alerts import LIVE_STATES
from casewatch.routing.outbox import enqueue
from casewatch.store.lists import chunked, one_of
from casewatch.store.models import Alert, AuditEntry

REMINDED = "alert.reminded"
# Reminders written in one transaction (their deliveries go in one multi-row INSERT).
BATCH = 500



def reminder_due(
    opened_at: datetime, last_reminded: datetime | None, now: datetime, every: timedelta
) -> bool:
    """Is a live alert due a reminder at `now`: its last reminder (else its opening) at least
    `every` ago?"""
    return now - (last_reminded or opened_at) >= every


def _later(at: datetime, details: Mapping[str, Any] | None) -> datetime:
    """When a reminder counts as sent: its audit time, or the scan instant it was for if later."""
    as_of = (details or {}).get("as_of")
    if isinstance(as_of, str):
        try:
            sent_for = datetime.fromisoformat(as_of)
        except ValueError:
            return at
        if sent_for.tzinfo is not None and sent_for > at:
            return sent_for
    return at


async def _last_reminders(
    session: AsyncSession, since: datetime, alert_ids: Sequence[str] | None = None
) -> dict[str, datetime]:
    """Alert id -> its last reminder audited at or after `since` (the `at` index bounds the read)."""
    stmt = select(AuditEntry.subject, AuditEntry.at, AuditEntry.details).where(
        AuditEntry.action == REMINDED, AuditEntry.at >= since
    )
    parts: list[Sequence[str] | None] = list(chunked(session, alert_ids)) if alert_ids is not None else [None]
    found: dict[str, datetime] = {}
    for part in parts:
        rows = await session.execute(
            stmt if part is None else stmt.where(one_of(session, AuditEntry.subject, part))
        )
        for subject, at, details in rows:
            sent = _later(at, details)
            if subject not in found or sent > found[subject]:
                found[subject] = sent
    return found


async def send_reminders(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    at: datetime,
    *,
    skip: Collection[str] = frozenset(),
    batch_size: int = BATCH,
) -> Counter[str]:
    """Remind every live alert that is due one as of `at`; return how many, by kind. `skip`:
    alert ids not to remind (those the same scan just opened)."""
    every = {kind: timedelta(hours=h) for kind, h in ctx.settings.triggers.repeat_reminder_hours.items()}
    if not every:
        return Counter()
    # A reminder older than the longest interval cannot make anything not due.
    since = min(at, ctx.clock.now()) - max(every.values())
    due: list[str] = []
    async with sessions() as session:
        last = await _last_reminders(session, since)
        for kind, gap in sorted(every.items()):
            rows = await session.execute(
                select(Alert.id, Alert.opened_at).where(
                    Alert.kind == kind, Alert.state.in_(LIVE_STATES), Alert.opened_at <= at - gap
                ).order_by(Alert.id)
            )
            due += [
                alert_id for alert_id, opened_at in rows
                if alert_id not in skip and reminder_due(opened_at, last.get(alert_id), at, gap)
            ]
    sent: Counter[str] = Counter()
    for start in range(0, len(due), batch_size):
        async with sessions() as session, session.begin():
            sent.update(await _remind(session, ctx, at, due[start : start + batch_size], every, since))
    return sent


async def _remind(
    session: AsyncSession,
    ctx: Context,
    at: datetime,
    alert_ids: Sequence[str],
    every: Mapping[str, timedelta],
    since: datetime,
) -> Counter[str]:
    """In one transaction: lock the alerts (still live?), read their last reminders again (a
    concurrent scan may have sent one since the first read: its lock made this wait), and remind
    those still due."""
    rows = await session.execute(
        select(Alert)
        .where(one_of(session, Alert.id, alert_ids), Alert.state.in_(LIVE_STATES))
        .order_by(Alert.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    alerts = list(rows.scalars())
    last = await _last_reminders(session, since, [a.id for a in alerts])
    due = [
        a for a in alerts
        if a.kind in every and reminder_due(a.opened_at, last.get(a.id), at, every[a.kind])
    ]
    if not due:
        return Counter()
    extra = {a.id: {"open_hours": _hours(at - a.opened_at)} for a in due}
    await enqueue(session, due, "reminder", ctx, extra=extra)
    await record_many(session, ctx, [
        Entry(
            actor="system", action=REMINDED, subject=a.id,
            purpose=(
                f"reminder to the alert's receivers, still {a.state} after {extra[a.id]['open_hours']} "
                f"hours, so it is acted on: {a.kind}"
            ),
            details={
                "visor_ref": a.visor_ref, "severity": a.severity, "state": a.state,
                "open_hours": extra[a.id]["open_hours"], "as_of": at.isoformat(),
            },
            nominals=[a.visor_ref],
        )
        for a in due
    ])
    return Counter(a.kind for a in due)


def _hours(span: timedelta) -> int:
    return max(0, int(span.total_seconds() // 3600))


__all__ = ["REMINDED", "reminder_due", "send_reminders"]
