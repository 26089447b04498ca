"""The job_runs table: one row per run key, so that no scan slot, digest day or purge day runs
twice, whichever process (or how many) tries.

A run key is claimed with one atomic statement: insert it, or take over its row if that run
failed (retry) or has been "running" for longer than the job timeout (its process died).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.store.models import JobRun


async def claim_run(
    sessions: async_sessionmaker[AsyncSession], job: str, run_key: str, now: datetime, stale_after: timedelta
) -> int | None:
    """The id of the claimed run, or None if the key has run (or is running) already."""
    async with sessions.begin() as session:
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        stmt = insert(JobRun).values(job=job, run_key=run_key, started_at=now, outcome="running")
        upsert = stmt.on_conflict_do_update(
            index_elements=[JobRun.run_key],
            set_={"started_at": now, "finished_at": None, "outcome": "running", "error": None},
            where=(JobRun.outcome == "failed")
            | ((JobRun.outcome == "running") & (JobRun.started_at < now - stale_after)),
        ).returning(JobRun.id)
        return (await session.execute(upsert)).scalar_one_or_none()


async def finish_run(
    sessions: async_sessionmaker[AsyncSession],
    run_id: int,
    outcome: str,
    now: datetime,
    error: str | None = None,
) -> None:
    async with sessions.begin() as session:
        await session.execute(
            update(JobRun)
            .where(JobRun.id == run_id)
            .values(outcome=outcome, finished_at=now, error=error)
            .execution_options(synchronize_session=False)
        )


async def run_outcome(sessions: async_sessionmaker[AsyncSession], run_key: str) -> str | None:
    async with sessions() as session:
        return (await session.execute(select(JobRun.outcome).where(JobRun.run_key == run_key))).scalar()


async def last_successes(sessions: async_sessionmaker[AsyncSession]) -> dict[str, datetime]:
    """Job name -> when its latest successful run finished."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(JobRun.job, func.max(JobRun.finished_at))
                .where(JobRun.outcome == "ok")
                .group_by(JobRun.job)
            )
        ).all()
    return {job: at for job, at in rows if at is not None}
