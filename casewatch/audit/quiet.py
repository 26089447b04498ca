"""Whether this process is between pieces of work, so the audit sealer can keep out of their way.

The sealer's round is a write transaction (on SQLite it holds the process's one connection and
the database's write lock) and ~1 ms of the event loop; started beside an event's ingest it
delays that event's answer and its alerts. So the sealer waits for a quiet moment: nothing in
flight (no writer or reader session's transaction, no HTTP request being answered) and nothing
begun or ended for a short gap (long enough to cover a new alert's sends between its commit and
the transaction that records them, which no transaction marks). It never waits past a bound:
under steady work sealing still happens (audit.seal.start_sealer).

What counts as in flight is what `watch` and `middleware` see: every top-level transaction of
the sessions watched, from its begin (a session waiting for SQLite's one connection included)
to its end, and every request of the app, from its handler's call to its return.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from casewatch.bell import first_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Quiet:
    def __init__(self) -> None:
        self.in_flight = 0
        self.last_change = float("-inf")  # time.monotonic() of the last begin or end
        self._idle = asyncio.Event()  # set while nothing is in flight
        self._idle.set()

    def begin(self) -> None:
        self.in_flight += 1
        self.last_change = time.monotonic()
        self._idle.clear()

    def end(self) -> None:
        # Never below 0: an end without its begin (a listener added mid-transaction) is ignored.
        self.in_flight = max(0, self.in_flight - 1)
        self.last_change = time.monotonic()
        if self.in_flight == 0:
            self._idle.set()

    def quiet_for(self) -> float:
        """How long nothing has been in flight, begun or ended (0 while something is in flight)."""
        if self.in_flight:
            return 0.0
        return time.monotonic() - self.last_change

    async def settled(self, stop: asyncio.Event, *, gap: float, soft: float, hard: float) -> None:
        """Until nothing has been in flight for `gap` seconds; after `soft` seconds, until nothing
        is in flight at all; at `hard` seconds in any case (or once `stop` is set)."""
        started = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            waited = now - started
            if waited >= hard:
                return
            if self.in_flight == 0:
                quiet_for = now - self.last_change
                if quiet_for >= gap or waited >= soft:
                    return
                # Nothing in flight: look again when the gap would be complete (or at the soft
                # bound, when nothing in flight is enough); a begin meanwhile is seen then.
                await first_of(stop.wait(), within=min(gap - quiet_for, soft - waited))
                continue
            await first_of(self._idle.wait(), stop.wait(), within=hard - waited)

    def watch(self, sessions: async_sessionmaker[AsyncSession]) -> Callable[[], None]:
        """Count the top-level transactions of `sessions` (a make_sessionmaker's, whose session
        class is its own) as in flight; returns the function that stops counting them."""
        session_class = sessions.kw.get("sync_session_class")
        if not isinstance(session_class, type) or session_class is Session:
            raise ValueError("Quiet.watch needs sessions with a class of their own (make_sessionmaker)")

        def begun(_session: Session, transaction: SessionTransaction) -> None:
            if transaction.parent is None and not transaction.nested:
                self.begin()

        def ended(_session: Session, transaction: SessionTransaction) -> None:
            if transaction.parent is None and not transaction.nested:
                self.end()

        event.listen(session_class, "after_transaction_create", begun)
        event.listen(session_class, "after_transaction_end", ended)

        def unwatch() -> None:
            event.remove(session_class, "after_transaction_create", begun)
            event.remove(session_class, "after_transaction_end", ended)

        return unwatch

    def middleware(self) -> Middleware:
        """An aiohttp middleware counting each request as in flight while its handler runs
        (before its first statement: reading the body, checking the signature, parsing)."""

        @web.middleware
        async def answering(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.begin()
            try:
                return await handler(request)
            finally:
                self.end()

        return answering
