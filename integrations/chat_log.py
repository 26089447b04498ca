"""Chat messages to a local file instead of Slack (the demo, or slack.mode = "off").

Each message is one readable line, escaped exactly as the Slack text would be (a value cannot
start a line of its own or ping anyone); updates name the message they update, as Slack would
edit it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from pathlib import Path

from casewatch.clock import Clock, SystemClock
from casewatch.delivery import render
from casewatch.delivery.notifier import Outbound, Outcome, Retryable, Sent, unbuildable


class ChatLogNotifier:
    channel = "slack"

    def __init__(self, path: str | Path, clock: Clock | None = None) -> None:
        self.path = Path(path)
        self._clock = clock or SystemClock()
        self._lock = asyncio.Lock()

    async def send(self, message: Outbound) -> Outcome:
        at = self._clock.now().astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        try:
            # Escaped as Slack would get it; a plain message's lines joined: one line a message.
            text = render.chat_text(message.payload).replace("\n", " / ")
        except Exception as exc:  # noqa: BLE001 - whatever the payload holds, it cannot be shown
            return unbuildable(exc)
        where = f"@{message.target} (DM)" if message.target.startswith(("U", "W")) else f"#{message.target}"
        if message.thread_ref:
            line = f"{at} {where} update to {message.thread_ref}: {text}"
            ref = message.thread_ref
        else:
            ref = f"chatlog:{message.delivery_id}"
            button = "  [Acknowledge]" if message.payload.get("state") == "open" else ""
            line = f"{at} {where} {ref}: {text}{button}"
        try:
            async with self._lock:
                await asyncio.to_thread(self._append, line)
        except OSError as exc:
            return Retryable(f"cannot write {self.path}: {exc.strerror}")
        return Sent(ref)

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    async def close(self) -> None:
        return None
