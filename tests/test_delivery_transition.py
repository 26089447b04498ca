"""delivery.transition.next_step: one row per case of what an attempt's outcome does to its row."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from casewatch.config.delivery import DeliverySection
from casewatch.delivery.notifier import Outcome, Permanent, Retryable, Sent, unbuildable
from casewatch.delivery.transition import AlertBrief, DeliveryFacts, Policy, RowUpdate, Step, next_step

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
POLICY = Policy(
    max_attempts=5, give_up_after_seconds=3600, fallback_after_seconds=300,
    fallback_severities=frozenset({"critical", "high"}),
    retry_delay=lambda attempts, retry_after: retry_after if retry_after is not None else 10.0 * attempts,
)
HIGH = AlertBrief("border.no_travel", "high", "open")
SLACK = DeliveryFacts("sending", True, 1, NOW - timedelta(seconds=60), "slack", "opened", HIGH)
EMAIL = replace(SLACK, channel="email")
NOT_MINE = replace(SLACK, state="sending", mine=False)  # another worker claimed it after our lease
BUILD = unbuildable(ValueError("x"))


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def dead(error: str, attempts: int = 2, **flags: bool) -> Step:
    return Step("dead", error, RowUpdate("dead", attempts, error), dead_lettered=True, **flags)


def retry(error: str, in_seconds: float, **flags: bool) -> Step:
    return Step("retry", error, RowUpdate("pending", 2, error, at(in_seconds)), **flags)


GAVE_UP = "gave up after {} attempts: 451 busy"
CASES: list[tuple[str, DeliveryFacts, Outcome, Step]] = [
    ("sent", SLACK, Sent("C1:1.2"), Step("sent", None, RowUpdate("sent", 2, None))),
    ("retryable: backoff from the attempts made", EMAIL, Retryable("451 busy"), retry("451 busy", 20)),
    ("rate limited: Retry-After", EMAIL, Retryable("429", retry_after=30), retry("429", 30)),
    ("retryable at the last attempt: dead", replace(EMAIL, attempts=4), Retryable("451 busy"),
     dead(GAVE_UP.format(5), 5, report_dead=True)),
    ("retryable past the give-up window: dead", replace(EMAIL, created_at=at(-3600)), Retryable("451 busy"),
     dead(GAVE_UP.format(2), report_dead=True)),
    ("permanent", EMAIL, Permanent("550 no such user"), dead("550 no such user", report_dead=True)),
    ("unbuildable permanent", EMAIL, BUILD, dead(BUILD.error, report_dead=True, unbuildable=True)),
    ("slack permanent, high alert: dead and fall back", SLACK, Permanent("channel_not_found"),
     dead("channel_not_found", fall_back=True, report_dead=True)),
    ("slack retry, not yet overdue: no fallback", SLACK, Retryable("5xx"), retry("5xx", 20)),
    ("slack retry past fallback_after_seconds: fall back", replace(SLACK, created_at=at(-300)),
     Retryable("5xx"), retry("5xx", 20, fall_back=True)),
    ("slack dead, low alert: no fallback", replace(SLACK, alert=replace(HIGH, severity="low")),
     Permanent("x"), dead("x", report_dead=True)),
    ("slack dead, alert resolved: no fallback", replace(SLACK, alert=replace(HIGH, state="resolved")),
     Permanent("x"), dead("x", report_dead=True)),
    ("a fallback's own failure falls back no further", replace(SLACK, purpose="fallback"), Permanent("x"),
     dead("x", report_dead=True)),
    ("a system alert's dead letter reports nothing (no loop)",
     replace(EMAIL, alert=replace(HIGH, kind="system.delivery_failed")), Permanent("x"), dead("x")),
    ("a message about no alert (digest): dead, nothing to report",
     replace(SLACK, alert=None, purpose="digest"), Permanent("x"), dead("x")),
    ("lease expired, another worker owns it: its result decides", NOT_MINE, Retryable("5xx"),
     Step("retry", "(claim lost) 5xx", None)),
    ("lease expired, permanent: still the other worker's to decide", NOT_MINE, Permanent("x"),
     Step("retry", "(claim lost) x", None)),
    ("lease expired, maybe sent, then sent by us: recorded sent", NOT_MINE, Sent("C1:1.3"),
     Step("sent", None, RowUpdate("sent", 2, None))),
    ("sent by us after another worker had sent it: the row stays", replace(NOT_MINE, state="sent"),
     Sent("C1:1.3"), Step("sent", None, None)),
    ("a long error is cut to 2000 characters", EMAIL, Permanent("e" * 3000),
     dead("e" * 2000, report_dead=True)),
]


@pytest.mark.parametrize(("delivery", "outcome", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_next_step(delivery: DeliveryFacts, outcome: Outcome, expected: Step) -> None:
    assert next_step(delivery, outcome, POLICY, NOW) == expected


def test_policy_of_the_configuration_uses_its_backoff_and_limits() -> None:
    config = DeliverySection(max_attempts=3, backoff_base_seconds=4, jitter=0)
    policy = Policy.of(config, random.Random(1))
    assert (policy.max_attempts, policy.give_up_after_seconds) == (3, config.give_up_after_seconds)
    assert policy.fallback_severities == {"critical", "high"}
    assert policy.retry_delay(1, None) == 4 and policy.retry_delay(3, None) == 16
    assert policy.retry_delay(3, 7.0) >= 7.0
