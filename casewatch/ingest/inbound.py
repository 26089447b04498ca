"""What a feed could not read: kept as received, with an alert for a person, never lost.

A feed (a border-alert mail, a snapshot extract's bad rows, a probation domain event) that cannot
turn something into events calls keep(): the raw item goes into `inbound_items` once per
(source, external_id), in the caller's transaction, with an audit entry and a `feed.unreadable`
alert to the SPOC of the feed's team. `casewatch inbound show <id>` prints the item for that person;
`casewatch inbound done <id>` records that it was dealt with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts import SYSTEM_REF
from casewatch.alerts.lifecycle import open_alerts
from casewatch.audit import record
from casewatch.context import Context
from casewatch.model.alerts import LIVE_STATES, AlertSpec
from casewatch.routing.purposes import nominals_of
from casewatch.safe_text import printable
from casewatch.store.models import Alert, InboundItem

UNREADABLE = "feed.unreadable"
NOMINAL_MISSING = "feed.nominal_missing"  # opened by the snapshot import
SOURCES = ("snapshot", "mail", "probation")
MAX_REASON = 300
# Live feed.unreadable alerts one source may have at once. A sender gone wrong (a bridge posting
# garbage, a mailbox filling with bounces) keeps every item, but tells people this many times,
# not once an item: the last alert says more may be waiting in `casewatch inbound list`.
MAX_LIVE_ALERTS = 20
_ITEMS = InboundItem.metadata.tables[InboundItem.__tablename__]


@dataclass(frozen=True)
class Kept:
    item_id: int  # inbound_items.id: `casewatch inbound show <id>` prints it
    alert_id: str | None  # the feed.unreadable alert opened; None if a live one already covers it
    duplicate: bool  # (source, external_id) was kept before: nothing new written


def review_team(ctx: Context, team: str | None) -> str:
    """Whose SPOC hears of a kept item: `team` if configured, else triggers.unmatched_team, else
    the first team ("" when no team is configured at all: the alert still opens and is routed by
    the fallback rules)."""
    settings = ctx.settings
    if team and settings.team(team) is not None:
        return team
    fallback = settings.fallback_team()
    return fallback.id if fallback is not None else ""


async def keep(
    session: AsyncSession,
    ctx: Context,
    *,
    source: str,
    external_id: str,
    reason: str,
    content: bytes,
    media_type: str,
    team: str | None = None,
    visor_ref: str | None = None,
) -> Kept:
    """Keep `content` (as received) in the caller's transaction and tell a person. `reason` goes
    to chat and email: say what is wrong, never what the item says (no personal data)."""
    if source not in SOURCES:
        raise ValueError(f"unknown feed source {source!r}")
    if not external_id or len(external_id) > 200:
        raise ValueError("external_id must be 1 to 200 characters")
    reason = printable(reason).strip()[:MAX_REASON] or "could not be read"
    now = ctx.clock.now()
    team_id = review_team(ctx, team)
    values = dict(
        source=source, external_id=external_id, received_at=now, reason=reason,
        media_type=printable(media_type).strip()[:100] or "application/octet-stream", content=content,
        content_sha256=hashlib.sha256(content).hexdigest(), size=len(content), team=team_id,
        visor_ref=visor_ref, state="kept",
    )
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(_ITEMS).values(**values).on_conflict_do_nothing(
        index_elements=["source", "external_id"]
    ).returning(_ITEMS.c.id)
    item_id = (await session.execute(stmt)).scalar_one_or_none()
    if item_id is None:  # kept before (a redelivery, a re-run): its alert was opened then
        existing = (
            await session.execute(
                select(InboundItem.id, InboundItem.alert_id).where(
                    InboundItem.source == source, InboundItem.external_id == external_id
                )
            )
        ).one()
        return Kept(existing.id, existing.alert_id, duplicate=True)
    live = await _live_alerts(session, source)
    if live >= MAX_LIVE_ALERTS:
        await _audit_kept(session, ctx, source, item_id, len(content), None, visor_ref)
        return Kept(item_id, None, duplicate=False)
    more = (
        f" {MAX_LIVE_ALERTS} such alerts are now live: later items are kept without an alert of their "
        "own, see `casewatch inbound list`" if live == MAX_LIVE_ALERTS - 1 else ""
    )
    [opened] = await open_alerts(session, [AlertSpec(
        kind=UNREADABLE,
        severity="high",
        visor_ref=visor_ref or SYSTEM_REF,
        team=team_id,
        subject=f"{source}:{item_id}",
        summary=(
            f"A {source} item could not be read ({reason}). Kept as inbound item {item_id}: "
            f"`casewatch inbound show {item_id}`, then `casewatch inbound done {item_id}`.{more}"
        ),
        details={"item": item_id, "source": source},
    )], ctx)
    alert_id = opened.id if opened is not None else None
    await session.execute(_ITEMS.update().where(_ITEMS.c.id == item_id).values(alert_id=alert_id))
    await _audit_kept(session, ctx, source, item_id, len(content), alert_id, visor_ref)
    return Kept(item_id, alert_id, duplicate=False)


async def _live_alerts(session: AsyncSession, source: str) -> int:
    stmt = select(func.count()).select_from(Alert).where(
        Alert.kind == UNREADABLE, Alert.state.in_(LIVE_STATES), Alert.subject.startswith(f"{source}:")
    )
    return int((await session.execute(stmt)).scalar_one())


async def _audit_kept(
    session: AsyncSession, ctx: Context, source: str, item_id: int, size: int, alert_id: str | None,
    visor_ref: str | None,
) -> None:
    await record(
        session, ctx, actor="system", action="inbound.kept", subject=f"{source}:{item_id}",
        purpose=f"kept what the {source} feed could not read, for a person to deal with",
        details={"item": item_id, "source": source, "size": size, "alert": alert_id},
        nominals=nominals_of(visor_ref),
    )


async def keep_now(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    *,
    source: str,
    external_id: str,
    reason: str,
    content: bytes,
    media_type: str,
    team: str | None = None,
    visor_ref: str | None = None,
) -> Kept:
    """keep() in a transaction of its own, committed before it returns."""
    async with sessions() as session, session.begin():
        return await keep(
            session, ctx, source=source, external_id=external_id, reason=reason, content=content,
            media_type=media_type, team=team, visor_ref=visor_ref,
        )
