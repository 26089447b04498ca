"""PostgreSQL lookups on a pooled connection of their own, without an ORM session around them.

A /flags answer on PostgreSQL reads, then writes its audit entry last, each statement committed on
its own (make_reader_engine: the readers' pool in autocommit; bot.commands). Its statements already
go to asyncpg directly (store.direct_read, audit.record_on), so an ORM session around them did no
work for them, but its making, its transaction's bookkeeping and its closing (a task of its own)
were about a quarter of an answer's CPU (bench/README.md, "/flags without an ORM session",
fourteenth session). Here the answer holds a pooled connection instead, and what the session's
events did is done here: it counts as work in flight while it holds the connection (audit.quiet,
for the sealer) and, once its audit entries are written, rings the sealer's bell.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from casewatch.store.engine import commits_each_statement

# What a lookup reads through: a session's transaction, or a connection of AutocommitReaders.
Reads = AsyncSession | AsyncConnection


async def connection_of(reads: Reads) -> AsyncConnection:
    """The connection `reads` runs its statements on."""
    return reads if isinstance(reads, AsyncConnection) else await reads.connection()


class InFlight(Protocol):
    """What counts work in flight (audit.quiet.Quiet)."""

    def begin(self) -> None: ...

    def end(self) -> None: ...


@dataclass(frozen=True)
class AutocommitReaders:
    """Connections of `engine`, whose every statement commits on its own (make_reader_engine on
    PostgreSQL), for work whose only write is its last statement. `after_audit` is called once
    work has written audit entries (audited()); `in_flight` counts each connection held."""

    engine: AsyncEngine
    after_audit: Callable[[], None] | None = None
    in_flight: InFlight | None = None

    def __post_init__(self) -> None:
        if not commits_each_statement(self.engine):
            raise ValueError("AutocommitReaders needs an engine whose statements commit on their own")

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        if self.in_flight is not None:
            self.in_flight.begin()
        try:
            async with self.engine.connect() as connection:
                yield connection
        finally:
            if self.in_flight is not None:
                self.in_flight.end()

    def audited(self) -> None:
        """Audit entries were written (each committed by its own statement)."""
        if self.after_audit is not None:
            self.after_audit()
