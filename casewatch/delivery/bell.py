"""The outbox bell: rung after a commit that queued deliveries, so this process's idle workers
start at once instead of at their next poll. Other processes still find the rows by polling
(delivery.poll_seconds): the bell only makes the common case fast, never correct."""

from __future__ import annotations

import asyncio
import contextlib


class OutboxBell:
    def __init__(self) -> None:
        self._rung = asyncio.Event()

    def ring(self) -> None:
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
