"""Per-destination pacing (about one message a second to a Slack channel), and turns (one group
of messages at a time to a destination, in the order they were claimed), shared by the worker
tasks of one process. Several processes each keep their own pace."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

Destination = tuple[str, str]  # (channel, target)


class Turn:
    """One claimed group's place in its destination's line: `wait` until every group that took
    a turn there before has ended, and `end` (idempotent) when this one is done, whether it ran,
    failed or was cancelled before it started."""

    def __init__(self, turns: Turns, key: Destination, previous: asyncio.Future[None] | None) -> None:
        self._turns = turns
        self._key = key
        self._previous = previous
        self._ended = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def wait(self) -> None:
        if self._previous is not None and not self._previous.done():
            # asyncio.wait, not await: cancelling this waiter must not cancel the earlier turn.
            await asyncio.wait((self._previous,))

    def end(self) -> None:
        if self._ended:
            return
        self._ended = True
        # A turn counts as done only once every earlier one is: one cancelled while still waiting
        # must not let the next group run beside a group that is still sending.
        if self._previous is None or self._previous.done():
            self._finish()
        else:
            self._previous.add_done_callback(lambda _: self._finish())

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        self._turns.forget(self._key, self.done)


class Turns:
    def __init__(self) -> None:
        self._last: dict[Destination, asyncio.Future[None]] = {}

    def take(self, key: Destination) -> Turn:
        """Join the destination's line now (no await: turns follow the order of the calls)."""
        turn = Turn(self, key, self._last.get(key))
        self._last[key] = turn.done
        return turn

    def forget(self, key: Destination, done: asyncio.Future[None]) -> None:
        if self._last.get(key) is done:  # the line is empty
            del self._last[key]

    def __len__(self) -> int:
        return len(self._last)


class Pacer:
    def __init__(self) -> None:
        self._next: dict[Destination, datetime] = {}
        self.turns = Turns()
        # Rows the workers of this process have in flight (claimed, not yet recorded or given
        # back), with their lease: none of them claims such a row again, even after its lease
        # lapsed (it waited its turn, or the clock stepped) while it is still to be sent or being
        # sent here.
        self.in_flight: dict[int, datetime] = {}

    def lapsed_in_flight(self, now: datetime) -> list[int]:
        """The rows in flight whose lease has lapsed: the only ones a claim could take (a live
        lease keeps a row out of every claim already), so the only ones it must be told of."""
        return [delivery_id for delivery_id, until in self.in_flight.items() if until <= now]

    def wait(self, key: Destination, now: datetime) -> float:
        """Seconds until the destination may take another message."""
        ready = self._next.get(key)
        return max(0.0, (ready - now).total_seconds()) if ready else 0.0

    def reserve(self, key: Destination, now: datetime, interval: float) -> float:
        """Take the next slot; return how long to wait for it. No await between check and take,
        so concurrent tasks get distinct slots."""
        ready = max(now, self._next.get(key, now))
        self._next[key] = ready + timedelta(seconds=interval)
        return (ready - now).total_seconds()

    def started(self, key: Destination, at: datetime, interval: float) -> None:
        """A send to the destination starts now: the next one waits its interval from here, not
        from the slot this one was given (a send started late, its task woken late or its lease
        checked, must not let the next one follow it closer than the interval)."""
        after = at + timedelta(seconds=interval)
        current = self._next.get(key)
        if current is None or after > current:
            self._next[key] = after

    def block(self, key: Destination, until: datetime) -> None:
        """The destination asked us to hold off (HTTP 429 with Retry-After)."""
        current = self._next.get(key)
        if current is None or until > current:
            self._next[key] = until
