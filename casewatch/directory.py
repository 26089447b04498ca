"""The officer and team directory: kept in configuration, mirrored into the store at start-up
so that queries (routing, /tasks, digests) can join against it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.config import Settings
from casewatch.store.models import Officer, Team


async def sync_directory(session: AsyncSession, settings: Settings) -> None:
    """Make the teams and officers tables match the configuration exactly, in a handful of
    statements however many officers there are (rows are read once and updated in place)."""
    team_ids = {t.id for t in settings.teams}
    officer_ids = {o.id for o in settings.officers}
    await session.execute(delete(Officer).where(Officer.id.not_in(officer_ids)))
    await session.execute(delete(Team).where(Team.id.not_in(team_ids)))
    # Held in dicts: the session keeps only weak references, and a re-read per row is what
    # made a 2,000-officer sync slow.
    teams = {t.id: t for t in (await session.execute(select(Team))).scalars()}
    officers = {o.id: o for o in (await session.execute(select(Officer))).scalars()}
    # Clear Slack ids first: an id moving from one officer to another must not collide mid-sync.
    wanted_slack = {o.id: o.slack_user_id or None for o in settings.officers}
    for officer in officers.values():
        if officer.slack_user_id is not None and officer.slack_user_id != wanted_slack.get(officer.id):
            officer.slack_user_id = None
    await session.flush()
    for t in settings.teams:
        _upsert(session, teams, Team, t.id, dict(
            name=t.name, channel=t.channel, spoc_email=t.spoc_email,
            supervisor_emails=list(t.supervisor_emails), digest_time=t.digest_time,
        ))
    for o in settings.officers:
        _upsert(session, officers, Officer, o.id, dict(
            name=o.name, email=o.email, slack_user_id=o.slack_user_id or None, team=o.team,
            roles=list(o.roles),
        ))


def _upsert(
    session: AsyncSession, rows: dict[str, Any], model: type[Any], key: str, values: dict[str, Any]
) -> None:
    row = rows.get(key)
    if row is None:
        session.add(model(id=key, **values))
        return
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
