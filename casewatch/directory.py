"""The officer and team directory: kept in configuration, mirrored into the store at start-up
so that queries (routing, /tasks, digests) can join against it."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.config import Settings
from casewatch.store.models import Officer, Team


async def sync_directory(session: AsyncSession, settings: Settings) -> None:
    """Make the teams and officers tables match the configuration exactly."""
    team_ids = {t.id for t in settings.teams}
    officer_ids = {o.id for o in settings.officers}
    await session.execute(delete(Officer).where(Officer.id.not_in(officer_ids)))
    await session.execute(delete(Team).where(Team.id.not_in(team_ids)))
    # Clear Slack ids first: an id moving from one officer to another must not collide mid-sync.
    for officer in (await session.execute(select(Officer))).scalars():
        officer.slack_user_id = None
    await session.flush()
    for t in settings.teams:
        await session.merge(
            Team(
                id=t.id, name=t.name, channel=t.channel, spoc_email=t.spoc_email,
                supervisor_emails=list(t.supervisor_emails), digest_time=t.digest_time,
            )
        )
    for o in settings.officers:
        await session.merge(
            Officer(
                id=o.id, name=o.name, email=o.email, slack_user_id=o.slack_user_id or None,
                team=o.team, roles=list(o.roles),
            )
        )
