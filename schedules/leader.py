"""Leader election: a lease row in the `leases` table.

Why a lease row rather than pg_try_advisory_lock: an advisory lock lives as long as one database
session, so the leader would have to pin a dedicated connection outside the pool and notice when
that connection silently dies; a lease is a plain row with an expiry, works the same on SQLite and
PostgreSQL, is visible (`SELECT * FROM leases`), and its timing is testable with a fixed clock.

Acquiring and renewing are one atomic statement on both databases:
    INSERT ... ON CONFLICT (name) DO UPDATE SET holder, expires_at
        WHERE leases.holder = me OR leases.expires_at < now  RETURNING holder
so of several processes racing for an expired lease exactly one gets it. The leader renews every
`renew_seconds`; a follower tries as often, so a dead leader is replaced within
`lease_seconds + renew_seconds`. A leader that cannot renew (the database is away) steps down at
once, well before its lease could be taken. Clocks of the hosts must agree (NTP) to within a
small part of the lease; should two processes ever both lead for a moment, the job run keys still
keep every scan, digest and purge to one run.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.clock import Clock
from casewatch.store.models import Lease

log = logging.getLogger(__name__)

SCHEDULER_LEASE = "scheduler"


def new_holder_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderLease:
    """One process's view of a named lease. `tick()` acquires or renews it and says whether this
    process holds it now; `release()` gives it up (on shutdown, for a prompt takeover)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        lease_seconds: float,
        name: str = SCHEDULER_LEASE,
        holder: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.name = name
        self.holder = holder or new_holder_id()
        self.is_leader = False
        self.expires_at: datetime | None = None

    async def tick(self) -> bool:
        now = self.clock.now()
        try:
            async with self.sessions.begin() as session:
                held = await _acquire(session, self.name, self.holder, now, now + self.lease)
        except Exception as exc:  # the database is away: no lease we can vouch for
            if self.is_leader:
                log.warning(
                    "leader: cannot renew the %s lease (%s); stepping down", self.name, type(exc).__name__
                )
            held = False
        if held and not self.is_leader:
            log.info("leader: %s now holds the %s lease", self.holder, self.name)
        elif not held and self.is_leader:
            log.warning("leader: %s lost the %s lease", self.holder, self.name)
        self.is_leader = held
        self.expires_at = now + self.lease if held else None
        return held

    async def release(self) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        now = self.clock.now()
        async with self.sessions.begin() as session:
            await session.execute(
                update(Lease)
                .where(Lease.name == self.name, Lease.holder == self.holder)
                .values(expires_at=now - timedelta(seconds=1))
                .execution_options(synchronize_session=False)
            )
        log.info("leader: %s released the %s lease", self.holder, self.name)


async def _acquire(session: AsyncSession, name: str, holder: str, now: datetime, until: datetime) -> bool:
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(Lease).values(name=name, holder=holder, expires_at=until)
    upsert = stmt.on_conflict_do_update(
        index_elements=[Lease.name],
        set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
        where=(Lease.holder == holder) | (Lease.expires_at < now),
    ).returning(Lease.holder)
    return (await session.execute(upsert)).scalar_one_or_none() == holder


async def current_holder(
    sessions: async_sessionmaker[AsyncSession], clock: Clock, name: str = SCHEDULER_LEASE
) -> str | None:
    """Who holds the lease now (None if nobody holds an unexpired one)."""
    async with sessions() as session:
        lease = await session.get(Lease, name)
    if lease is None or lease.expires_at < clock.now():
        return None
    return lease.holder
