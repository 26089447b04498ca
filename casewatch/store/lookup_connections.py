"""Lookups on a pooled connection, without an ORM session around them.

A /flags answer reads, then writes one audit entry. Its statements already go to the driver
directly (store.direct_read, audit.record), so an ORM session around them did no work for them,
but its making, its transaction's bookkeeping and its closing (a task of its own) were a quarter of
an answer's CPU on PostgreSQL and ~0.3 ms of a lone answer's on SQLite (bench/README.md, "/flags
without an ORM session", fourteenth session). Here the answer holds a pooled connection instead,
and what the sessions' events did is done here: it counts as work in flight while it holds the
connection (audit.quiet, which the sealer waits on; an answer by Socket Mode has no HTTP request
to count it) and, once its audit entries are committed, the caller rings the sealer's bell
(audited()).

Two kinds of engine (store.engine):
- one whose every statement commits on its own (make_reader_engine on PostgreSQL): no
  transaction is begun; the audit entry, the last statement, is committed when it returns;
- any other: the connection's statements are one transaction, committed when the work is done
  (SQLite: the readers' DEFERRED read, or the writer's BEGIN IMMEDIATE with the entry written
  with its COMMIT), rolled back if the work fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from casewatch.store.engine import commits_each_statement

# What a lookup reads through: a session's transaction, or a connection of LookupConnections.
Reads = AsyncSession | AsyncConnection


async def connection_of(reads: Reads) -> AsyncConnection:
    """The connection `reads` runs its statements on."""
    return reads if isinstance(reads, AsyncConnection) else await reads.connection()


class InFlight(Protocol):
    """What counts work in flight (audit.quiet.Quiet)."""

    def begin(self) -> None: ...

    def end(self) -> None: ...


@dataclass(frozen=True)
class LookupConnections:
    """Connections of `engine` for lookups. `after_audit` is called once a lookup's audit entries
    are committed (audited()); `in_flight` counts each connection held."""

    engine: AsyncEngine
    after_audit: Callable[[], None] | None = None
    in_flight: InFlight | None = None

    @property
    def each_statement_commits(self) -> bool:
        return commits_each_statement(self.engine)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection: in a transaction committed on the way out (rolled back if the
        work raised), unless each of the engine's statements commits on its own."""
        if self.in_flight is not None:
            self.in_flight.begin()
        try:
            async with self.engine.connect() as connection:
                if self.each_statement_commits:
                    yield connection
                else:
                    async with connection.begin():
                        yield connection
        finally:
            if self.in_flight is not None:
                self.in_flight.end()

    def audited(self) -> None:
        """A lookup's audit entries are committed: tell the sealer."""
        if self.after_audit is not None:
            self.after_audit()
