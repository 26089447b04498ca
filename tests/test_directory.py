"""The directory mirror: the teams and officers tables follow the configuration exactly."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.config import Settings, load_config
from casewatch.directory import sync_directory
from casewatch.store.models import Officer, Team


def settings(teams: list[dict[str, Any]], officers: list[dict[str, Any]]) -> Settings:
    return load_config(overrides={"teams": teams, "officers": officers}, environ={})


def team(id: str, **kw: Any) -> dict[str, Any]:
    return {"id": id, "name": f"{id.title()} MOSOVO", "spoc_email": f"{id}.spoc@force.example", **kw}


def officer(id: str, team: str, slack: str = "", **kw: Any) -> dict[str, Any]:
    return {"id": id, "name": f"PC {id}", "team": team, "slack_user_id": slack, **kw}


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> tuple[set[Any], set[Any]]:
    async with sessions() as s:
        teams = {(t.id, t.name, t.channel) for t in (await s.execute(select(Team))).scalars()}
        rows = (await s.execute(select(Officer))).scalars()
        officers = {(o.id, o.team, o.slack_user_id, tuple(o.roles)) for o in rows}
    return teams, officers


async def test_the_tables_follow_the_configuration(sessions: async_sessionmaker[AsyncSession]) -> None:
    first = settings(
        [team("north", channel="C0N"), team("south")],
        [officer("PC1", "north", "U1"), officer("PC2", "north", "U2"), officer("PC3", "south", "U3")],
    )
    async with sessions.begin() as s:
        await sync_directory(s, first)
    assert await snapshot(sessions) == (
        {("north", "North MOSOVO", "C0N"), ("south", "South MOSOVO", "")},
        {("PC1", "north", "U1", ("officer",)), ("PC2", "north", "U2", ("officer",)),
         ("PC3", "south", "U3", ("officer",))},
    )
    # South disbanded, PC3 gone, PC1 and PC2 swap Slack ids, PC2 promoted, a new officer.
    second = settings(
        [team("north", channel="C0NEW")],
        [officer("PC1", "north", "U2"), officer("PC2", "north", "U1", roles=["supervisor"]),
         officer("PC4", "north")],
    )
    async with sessions.begin() as s:
        await sync_directory(s, second)
    assert await snapshot(sessions) == (
        {("north", "North MOSOVO", "C0NEW")},
        {("PC1", "north", "U2", ("officer",)), ("PC2", "north", "U1", ("supervisor",)),
         ("PC4", "north", None, ("officer",))},
    )
    async with sessions.begin() as s:  # a second sync of the same configuration changes nothing
        await sync_directory(s, second)
    assert (await snapshot(sessions))[1] == {
        ("PC1", "north", "U2", ("officer",)), ("PC2", "north", "U1", ("supervisor",)),
        ("PC4", "north", None, ("officer",)),
    }
