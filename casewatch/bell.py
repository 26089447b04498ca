"""A bell: rung after a commit that left work for this process (deliveries queued, audit entries
to seal), so the idle worker starts at once instead of at its next poll. Other processes still
find the rows by polling: a bell only makes the common case fast, never correct."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
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

    async def wait(self, seconds: float, stop: asyncio.Event) -> None:
        """Until the bell rings, `stop` is set, or `seconds` pass."""
        await first_of(self._rung.wait(), stop.wait(), within=seconds)


# The outbox's bell: rung after a commit that queued deliveries (delivery.poll_seconds is the poll).
OutboxBell = Bell
