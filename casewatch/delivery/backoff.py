"""Retry timing: exponential backoff with jitter, or the receiver's own Retry-After."""

from __future__ import annotations

import random

from casewatch.config.delivery import DeliverySection


def retry_delay(
    attempt: int, config: DeliverySection, rng: random.Random, retry_after: float | None = None
) -> float:
    """Seconds to wait before attempt number `attempt + 1`. A Retry-After is a floor, never cut."""
    if retry_after is not None:
        return max(0.0, retry_after) + rng.uniform(0.0, min(1.0, config.jitter))
    delay = min(config.backoff_max_seconds, config.backoff_base_seconds * 2.0 ** max(0, attempt - 1))
    return delay * (1 - config.jitter) + rng.uniform(0.0, delay * config.jitter)
