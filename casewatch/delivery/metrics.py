"""Delivery counters for /metrics: attempts by channel and outcome, dead letters, fallbacks.

Registered on the service's registry (casewatch.metrics.Metrics.registry) by the runner, or on a
private one (tests, one-off commands), so several services in one process never clash.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.attempts = Counter(
            "casewatch_delivery_attempts",
            "Delivery attempts, by channel and outcome (sent, retry, dead)",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.dead = Counter(
            "casewatch_deliveries_dead",
            "Deliveries dead-lettered (kept, audited, reported), by channel",
            ["channel"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "casewatch_delivery_fallbacks",
            "Failing Slack deliveries of critical or high alerts also emailed to the SPOC inbox",
            registry=self.registry,
        )
        self.outbox = Gauge(
            "casewatch_outbox_deliveries",
            "Deliveries in the outbox by state (pending, sending, sent, dead), as last counted; "
            "survives restarts, unlike the counters",
            ["state"],
            registry=self.registry,
        )
        for channel in ("slack", "email"):
            self.dead.labels(channel)
            for outcome in ("sent", "retry", "dead"):
                self.attempts.labels(channel, outcome)

    def set_outbox(self, counts: dict[str, int]) -> None:
        for state, number in counts.items():
            self.outbox.labels(state).set(number)

    def value(self, name: str, **labels: str) -> float:
        """A current sample, e.g. value("casewatch_deliveries_dead_total", channel="slack")."""
        return self.registry.get_sample_value(name, labels) or 0.0
