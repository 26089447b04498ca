"""The one small interface every notifier implements.

A notifier sends one message and says only what happened: sent (with the external reference that
later updates thread onto), a failure worth retrying (optionally not before `retry_after`
seconds), or a permanent failure. Retries, backoff, pacing and dead letters live in the worker.
A notifier builds its whole message before it sends anything; a message that cannot be built is
a permanent failure (`unbuildable`), never an exception and never a retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Sent:
    external_ref: str  # Slack "channel:ts", email Message-ID, chat-log line reference


@dataclass(frozen=True)
class Retryable:
    error: str
    retry_after: float | None = None  # seconds, when the receiver said how long to wait
    # The request went out and no answer came (a timeout, a dropped connection): the message may
    # be there. The worker keeps saying so on the row until it is sent, so that each later attempt
    # looks for it first where the notifier can (Slack: Outbound.maybe_sent).
    maybe_sent: bool = False


@dataclass(frozen=True)
class Permanent:
    error: str
    # The message itself could not be built from its payload: no address is at fault, and no
    # retry can help (the worker dead-letters it at once, like any permanent failure).
    unbuildable: bool = False


Outcome = Sent | Retryable | Permanent


def unbuildable(exc: BaseException) -> Permanent:
    """The outcome of a message that cannot be built. The reason names the exception's type and
    nothing of its text: that may quote the payload (names, free text)."""
    return Permanent(
        f"message could not be built ({type(exc).__name__}); it can never be sent as it is",
        unbuildable=True,
    )


@dataclass(frozen=True)
class Outbound:
    """One delivery as a notifier sees it."""

    delivery_id: int
    alert_id: str
    change: str  # opened, acknowledged, escalated, resolved, reminder, fallback
    target: str  # Slack channel or user id; email address
    payload: dict[str, Any]  # rendered by casewatch.delivery.render; see render.message_fields
    content_hash: str
    # The first message about this alert to this target, when there is one: update or reply to it.
    thread_ref: str | None = None
    # A worker holding this delivery died mid-send: it may have gone out. A notifier that can
    # look (Slack) should find that message rather than post a second one.
    maybe_sent: bool = False


class Notifier(Protocol):
    channel: str  # "slack" or "email": the Delivery.channel values it serves

    async def send(self, message: Outbound) -> Outcome:
        """Send once. Must not raise for delivery failures; return Retryable or Permanent."""
        ...

    async def close(self) -> None:
        ...
