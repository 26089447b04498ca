"""A bell: rung after a commit that left work for this process (deliveries queued, audit entries
to seal), so the idle worker starts at once instead of at its next poll. Other processes still
find the rows by polling: a bell only makes the common case fast, never correct."""

from __future__ import annotations

import asyncio
import contextlib


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
        rung = asyncio.ensure_future(self._rung.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((rung, stopped), timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (rung, stopped):
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter


# The outbox's bell: rung after a commit that queued deliveries (delivery.poll_seconds is the poll).
OutboxBell = Bell
