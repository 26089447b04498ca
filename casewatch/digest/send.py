"""Building one team's digest and queuing it through the durable outbox: an email (plain text and
HTML) to each of the team's supervisor_emails, and the short version to the team channel. The
delivery workers send them, with the usual retries, pacing, dead letters and audit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.audit import record
from casewatch.config.sections import TeamSection
from casewatch.context import Context
from casewatch.digest import render
from casewatch.digest.build import Digest, build_digest
from casewatch.digest.query import SharedReads, load_digest_input, load_shared
from casewatch.routing.outbox import content_hash, enqueue_message
from casewatch.routing.purposes import nominals_of
from casewatch.routing.routing import Target, chat_enabled

log = logging.getLogger(__name__)

PURPOSE = "digest"


@dataclass
class QueuedDigest:
    team_id: str
    digest: Digest
    delivery_ids: list[int] = field(default_factory=list)


async def build_team_digest(
    session: AsyncSession, ctx: Context, team: TeamSection, at: datetime, shared: SharedReads | None = None
) -> Digest:
    config = ctx.settings.schedules
    tz = ZoneInfo(ctx.settings.service.timezone)
    data = await load_digest_input(session, team.id, team.name, at, tz, config.digest_due_days, shared)
    return build_digest(
        data, at, tz, guideline_percent=config.caseload_high_risk_percent, due_days=config.digest_due_days
    )


async def queue_team_digest(
    session: AsyncSession, ctx: Context, team: TeamSection, at: datetime, shared: SharedReads | None = None
) -> QueuedDigest:
    """Build the team's digest as of `at` and add its deliveries to the caller's transaction."""
    digest = await build_team_digest(session, ctx, team, at, shared)
    limit = ctx.settings.schedules.digest_list_limit
    rows = []
    for address in team.supervisor_emails:
        rows.append(
            await enqueue_message(
                session,
                ctx,
                purpose=PURPOSE,
                receiver=f"supervisors:{team.id}",
                channel="email",
                target=address,
                subject=render.subject(digest),
                text=render.email_text(digest, limit),
                html=render.email_html(digest, limit),
            )
        )
    if team.channel and chat_enabled(ctx.settings):
        row = await enqueue_message(
            session,
            ctx,
            purpose=PURPOSE,
            receiver=f"team:{team.id}",
            channel="slack",
            target=team.channel,
            subject=render.subject(digest),
            text=render.channel_text(digest),
        )
        row.payload = {**row.payload, "blocks": render.channel_blocks(digest)}
        row.content_hash = content_hash(Target(row.receiver, "slack", row.target), row.payload)
        rows.append(row)
    if not rows:
        log.warning("digest for team %s: no supervisor_emails and no channel; nothing queued", team.id)
    await session.flush()
    await record(
        session,
        ctx,
        actor="system",
        action="digest.queued",
        subject=team.id,
        purpose="daily digest of the team's alerts, actions and recalls for its supervisors' oversight",
        nominals=_refs_named(digest),
        details={
            "day": digest.local_day.isoformat(),
            "deliveries": [r.id for r in rows],
            "nothing_to_report": digest.nothing_to_report,
        },
    )
    return QueuedDigest(team.id, digest, [r.id for r in rows])


async def send_digests(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    at: datetime | None = None,
    team_ids: list[str] | None = None,
) -> list[QueuedDigest]:
    """Queue the digest of each team (or of `team_ids`), each team in its own transaction. What
    every team reads from the same rows (actions, caseloads, names) is read once, first."""
    at = at if at is not None else ctx.clock.now()
    teams = [t for t in ctx.settings.teams if team_ids is None or t.id in team_ids]
    if not teams:
        return []
    tz = ZoneInfo(ctx.settings.service.timezone)
    async with sessions() as session:
        shared = await load_shared(
            session, [t.id for t in teams], at, tz, ctx.settings.schedules.digest_due_days
        )
    queued = []
    for team in teams:
        async with sessions.begin() as session:
            queued.append(await queue_team_digest(session, ctx, team, at, shared))
    return queued


def _refs_named(digest: Digest) -> list[str]:
    """The ViSOR references the digest names (its audit entry's nominals)."""
    refs = {a.visor_ref for a, _ in digest.unacknowledged}
    refs.update(a.visor_ref for _, rows in digest.overdue_by_owner for a, _ in rows)
    refs.update(a.visor_ref for a in [*digest.missed_notifications, *digest.border_travel])
    refs.update(d.visor_ref for d in digest.due_soon)
    refs.update(r.visor_ref for r, _ in digest.recalls)
    return sorted(ref for ref in refs if nominals_of(ref))
