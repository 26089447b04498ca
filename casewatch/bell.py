"""A bell: rung after a commit that left work for this process (deliveries queued, audit entries
to seal), so the idle worker starts at once instead of at its next poll. Other processes still
find the rows by polling: a bell only makes the common case fast, never correct."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


async def first_of(*waits: Awaitable[Any], within: float | None = None) -> None:
    """Until the first of `waits` ends (or `within` seconds pass); the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Bell:
    def __init__(self) -> None:
        self._rung = asyncio.Event()
        self.rings = 0

    def ring(self) -> None:
        self.rings += 1
        # Wake every current waiter, then start a fresh round for the next ones.
        rung, self._rung = self._rung, asyncio.Event()
        rung.set()

    async def wait(self, seconds: float, stop: asyncio.Event, *also: Awaitable[Any]) -> None:
        """Until the bell rings, `stop` is set, any of `also` ends, or `seconds` pass."""
        await first_of(self._rung.wait(), stop.wait(), *also, within=seconds)


class OutboxBell(Bell):
    """The outbox's bell: rung after a commit that queued deliveries (delivery.poll_seconds is the
    poll). A ring wakes one waiting worker, the one waiting longest: one claim takes a commit's
    rows, and a second worker woken with it would claim nothing (an empty write transaction).
    A worker whose claim came back full rings again, so a backlog still wakes them all."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: deque[asyncio.Future[None]] = deque()

    def ring(self) -> None:
        self.rings += 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def wait(self, seconds: float, stop: asyncio.Event, *also: Awaitable[Any]) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await first_of(waiter, stop.wait(), *also, within=seconds)
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)


@dataclass(frozen=True)
class Claimer:
    """Who new outbox rows are written claimed by: a delivery worker of this process, and its
    lease."""

    worker_id: str
    lease_seconds: float


class Handoff:
    """New outbox rows written already claimed by this process's delivery worker (`owner`) and,
    once their transaction has committed, handed to it in memory: no claim transaction, no bell.
    Only while that worker runs and has room (`room` is None otherwise: rows are queued
    unclaimed, as by the CLI). A row handed to no one (the process died, the worker stopped) is
    still a claim with a lease: when it lapses, any worker claims it, as after a crash mid-send.
    The rows are whatever the writer hands (delivery.claim.ClaimedRow); this only carries them."""

    def __init__(self, limit: int = 20) -> None:
        self.owner: Claimer | None = None
        self.accepting = False  # the owner has room for more rounds
        self.limit = limit  # at most this many rows waiting to be taken, and a commit's rows
        self._rows: list[Any] = []  # handed to the owner, in commit order
        self.ready = asyncio.Event()  # set while rows wait to be taken
        # The owner's, called (soon after, on the loop: never inside the commit's hook) when
        # rows are handed, so it starts them even while it waits on something else (a claim).
        self.on_hand: Callable[[], None] | None = None

    def attach(self, owner: Claimer) -> None:
        self.owner, self.accepting = owner, True

    def detach(self) -> list[Any]:
        """No more rows for the owner; return those it never took (to be given back)."""
        self.owner, self.accepting, self.on_hand = None, False, None
        rows, self._rows = self._rows, []
        self.ready.clear()
        return rows

    def room(self, rows: int) -> Claimer | None:
        """The claimer for `rows` more rows, or None: no worker, it has no room, or too many wait."""
        if self.owner is None or not self.accepting or len(self._rows) + rows > self.limit:
            return None
        return self.owner

    def hand(self, worker_id: str, rows: list[Any]) -> None:
        """After the commit that wrote `rows` claimed by `worker_id`. Rows whose worker left
        before their commit (it stopped in between) are not kept: they are claims with a lease,
        taken again by any worker when it lapses, and giving them back here would need a write
        in an after-commit hook, which cannot await."""
        if self.owner is None or self.owner.worker_id != worker_id:
            return
        self._rows.extend(rows)
        if self._rows:
            self.ready.set()
            if self.on_hand is not None:
                asyncio.get_running_loop().call_soon(self.on_hand)

    def take(self, limit: int) -> list[Any]:
        """Up to `limit` of the rows handed to the owner, oldest first."""
        taken, self._rows = self._rows[:limit], self._rows[limit:]
        if not self._rows:
            self.ready.clear()
        return taken
