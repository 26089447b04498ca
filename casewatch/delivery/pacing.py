"""Per-destination pacing (about one message a second to a Slack channel), shared by the worker
tasks of one process. Several processes each keep their own pace."""

from __future__ import annotations

from datetime import datetime, timedelta


class Pacer:
    def __init__(self) -> None:
        self._next: dict[tuple[str, str], datetime] = {}

    def wait(self, key: tuple[str, str], now: datetime) -> float:
        """Seconds until the destination may take another message."""
        ready = self._next.get(key)
        return max(0.0, (ready - now).total_seconds()) if ready else 0.0

    def reserve(self, key: tuple[str, str], now: datetime, interval: float) -> float:
        """Take the next slot; return how long to wait for it. No await between check and take,
        so concurrent tasks get distinct slots."""
        ready = max(now, self._next.get(key, now))
        self._next[key] = ready + timedelta(seconds=interval)
        return (ready - now).total_seconds()

    def block(self, key: tuple[str, str], until: datetime) -> None:
        """The destination asked us to hold off (HTTP 429 with Retry-After)."""
        current = self._next.get(key)
        if current is None or until > current:
            self._next[key] = until
