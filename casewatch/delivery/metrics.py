"""Delivery counters for /metrics (the default prometheus_client registry)."""

from __future__ import annotations

from prometheus_client import Counter

ATTEMPTS = Counter(
    "casewatch_delivery_attempts_total", "Delivery attempts by channel and outcome", ["channel", "outcome"]
)
DEAD = Counter("casewatch_deliveries_dead_total", "Deliveries dead-lettered, by channel", ["channel"])
FALLBACKS = Counter(
    "casewatch_delivery_fallbacks_total", "Failed Slack deliveries also sent to a SPOC inbox"
)
