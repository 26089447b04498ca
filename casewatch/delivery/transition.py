"""What one delivery attempt's outcome does to its outbox row, without I/O.

`next_step(delivery, outcome, policy, now)` decides the attempt's recorded outcome (sent, retry,
dead) and error, the row's next state (sent, pending until a time, dead; or untouched when another
worker owns it now), and whether the worker must fall back to the SPOC inbox and report a dead
letter. DeliveryWorker._record reads the row, applies the step and writes the audit trail.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from casewatch.config.delivery import DeliverySection
from casewatch.delivery.backoff import retry_delay
from casewatch.delivery.notifier import Outcome, Permanent, Retryable, Sent

AttemptOutcome = Literal["sent", "retry", "dead"]


@dataclass(frozen=True)
class AlertBrief:
    """What the transition reads of the alert a delivery is about."""

    kind: str
    severity: str
    state: str


@dataclass(frozen=True)
class DeliveryFacts:
    """What the transition reads of an outbox row, as it is after the send."""

    state: str
    mine: bool  # still "sending" under this worker's claim
    attempts: int
    created_at: datetime
    channel: str
    purpose: str
    alert: AlertBrief | None = None


@dataclass(frozen=True)
class Policy:
    max_attempts: int
    give_up_after_seconds: float
    fallback_after_seconds: float
    fallback_severities: Collection[str]
    # Seconds before the next attempt, given the attempts made and the receiver's Retry-After.
    retry_delay: Callable[[int, float | None], float]

    @classmethod
    def of(cls, config: DeliverySection, rng: random.Random) -> Policy:
        return cls(
            config.max_attempts, config.give_up_after_seconds, config.fallback_after_seconds,
            frozenset(config.fallback_severities),
            lambda attempts, retry_after: retry_delay(attempts, config, rng, retry_after),
        )


@dataclass(frozen=True)
class RowUpdate:
    """The row's new values; the claim is cleared. `next_attempt_at` only for "pending"."""

    state: Literal["sent", "pending", "dead"]
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class Step:
    outcome: AttemptOutcome  # the attempt row, the audit action delivery.<outcome>, the metric
    error: str | None
    update: RowUpdate | None  # None: the row stays as it is (another worker decides, or it was sent)
    dead_lettered: bool = False  # this attempt killed the row: log it, count it
    fall_back: bool = False  # email the SPOC inbox, unless a fallback to this target exists
    report_dead: bool = False  # raise system.delivery_failed
    unbuildable: bool = False  # the message could not be built (the address is not at fault)


def next_step(delivery: DeliveryFacts, outcome: Outcome, policy: Policy, now: datetime) -> Step:
    error = None if isinstance(outcome, Sent) else outcome.error[:2000]
    if not delivery.mine and not isinstance(outcome, Sent):
        # Our lease lapsed and another worker owns the row now: its result decides.
        return Step("retry", f"(claim lost) {error}", None)
    if isinstance(outcome, Sent):
        if not delivery.mine and delivery.state == "sent":
            return Step("sent", None, None)  # another worker sent it too: it stays as recorded
        return Step("sent", None, RowUpdate("sent", delivery.attempts + 1, None))
    attempts = delivery.attempts + 1
    assert error is not None
    age = (now - delivery.created_at).total_seconds()
    exhausted = attempts >= policy.max_attempts or age >= policy.give_up_after_seconds
    if isinstance(outcome, Retryable) and not exhausted:
        at = now + timedelta(seconds=policy.retry_delay(attempts, outcome.retry_after))
        return Step("retry", error, RowUpdate("pending", attempts, error, at),
                    fall_back=_falls_back(delivery, policy, age, dead=False))
    if isinstance(outcome, Retryable):
        error = f"gave up after {attempts} attempts: {error}"
    alert = delivery.alert
    return Step(
        "dead", error, RowUpdate("dead", attempts, error), dead_lettered=True,
        fall_back=_falls_back(delivery, policy, age, dead=True),
        report_dead=alert is not None and not alert.kind.startswith("system."),  # no report loop
        unbuildable=isinstance(outcome, Permanent) and outcome.unbuildable,
    )


def _falls_back(delivery: DeliveryFacts, policy: Policy, age: float, *, dead: bool) -> bool:
    """A failing Slack message about a live alert of a severe enough kind, dead or overdue."""
    alert = delivery.alert
    return (
        alert is not None and delivery.channel == "slack" and delivery.purpose != "fallback"
        and alert.state != "resolved" and alert.severity in policy.fallback_severities
        and (dead or age >= policy.fallback_after_seconds)
    )
