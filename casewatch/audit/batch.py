"""Group commit for the audit entries of read-only answers (lookups).

A lookup reads, then must not answer before its audit entry is committed. Committed one by one,
every answer pays a whole durable commit (an fsync on SQLite with synchronous=FULL), and on SQLite
each one holds the single writer while it does. The batcher lets the entries of answers that
arrive together share one commit: the first caller to find no commit under way writes every
entry waiting, in one transaction; callers that arrive meanwhile wait for the next one. Each
caller returns only once the transaction holding its entry has committed, and gets that
transaction's error if it failed (its answer must then not go out).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import casewatch.audit
from casewatch.audit import Entry, record, record_many
from casewatch.context import Context
from casewatch.store.errors import is_unavailable

# An upper bound on one commit's entries, so one transaction never grows without limit.
MAX_BATCH = 500


class AuditBatcher:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], ctx: Context) -> None:
        self._sessions = sessions
        self._ctx = ctx
        self._waiting: list[tuple[Entry, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._alone = 0  # answers holding the writer for a transaction of their own (alone())

    @contextmanager
    def alone(self) -> Iterator[bool]:
        """Whether the caller may have the writer to itself for one transaction (its reads and its
        audit entry, committed together) instead of reading beside it and sharing a commit: yes
        when nothing is being committed, waiting, or already holding it that way, i.e. when a
        shared commit would have nobody to share with. One such answer at a time: those that
        arrive meanwhile read beside it and share commits as before."""
        free = self._writer is None and not self._waiting and not self._alone
        if free:
            self._alone += 1
        try:
            yield free
        finally:
            if free:
                self._alone -= 1

    async def record(
        self,
        *,
        actor: str,
        action: str,
        subject: str = "",
        purpose: str = "",
        details: Mapping[str, Any] | None = None,
        nominals: Iterable[str] = (),
    ) -> None:
        """casewatch.audit.record(), committed in a shared transaction before it returns."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = Entry(actor, action, subject, purpose, dict(details or {}), tuple(nominals))
        self._waiting.append((entry, done))
        if self._writer is None:
            # The writing is a task of its own: a caller that goes away (its client hung up)
            # does not take the others' commit with it.
            self._writer = asyncio.create_task(self._write(), name="audit-batcher")
        await done

    async def _write(self) -> None:
        batch: list[tuple[Entry, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                await self._commit(batch)
        except BaseException:  # cancelled (shutdown): nobody may wait for a commit that won't come
            for _, done in batch + self._waiting:
                if not done.done():
                    done.set_exception(RuntimeError("audit entry not committed: shutting down"))
            self._waiting = []
            raise
        finally:
            self._writer = None

    async def _commit(self, batch: list[tuple[Entry, asyncio.Future[None]]]) -> None:
        """One transaction for the batch. If it fails and the database is there, each entry is
        tried alone, so that one entry the database refuses fails only its own answer."""
        try:
            await self._insert([entry for entry, _ in batch])
        except Exception as exc:  # noqa: BLE001 (handed to the waiting answers)
            if len(batch) > 1 and not is_unavailable(exc):
                for one in batch:
                    await self._commit([one])
                return
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, done in batch:
            if not done.done():
                done.set_result(None)

    async def _insert(self, entries: list[Entry]) -> None:
        async with self._sessions.begin() as session:
            connection = await session.connection()
            if len(entries) == 1 or (casewatch.audit.DIRECT_ENTRIES and connection.dialect.name == "sqlite"):
                # Alone, the one-entry insert is the cheaper statement; on SQLite each entry (about
                # at most one nominal) is handed to the driver with the COMMIT (audit.record), no
                # statement through SQLAlchemy, in the batch's order, as record_many's ids go.
                for e in entries:
                    await record(
                        session, self._ctx, actor=e.actor, action=e.action, subject=e.subject,
                        purpose=e.purpose, details=e.details, nominals=e.nominals, direct=True,
                    )
            else:
                await record_many(session, self._ctx, entries)

    async def close(self) -> None:
        """Wait for the commit under way (at shutdown)."""
        if self._writer is not None:
            await asyncio.shield(self._writer)
