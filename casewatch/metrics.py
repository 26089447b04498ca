"""Prometheus metrics. Each service has its own registry, so several services in one process
(tests) never share or clash; other parts may register their own collectors on `registry`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter(
            "casewatch_events",
            "Events received, by outcome: accepted (new), duplicate (id seen before), "
            "rejected (in a batch refused as invalid)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("accepted", "duplicate", "rejected"):
            self.events.labels(outcome)
        self.requests = Counter(
            "casewatch_http_requests",
            "HTTP requests served, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.ingest_seconds = Histogram(
            "casewatch_ingest_seconds",
            "Time to store, apply and run the rules for one accepted request or import batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )

    def count_events(self, *, accepted: int = 0, duplicates: int = 0, rejected: int = 0) -> None:
        for outcome, number in (("accepted", accepted), ("duplicate", duplicates), ("rejected", rejected)):
            if number:
                self.events.labels(outcome).inc(number)

    def render(self) -> bytes:
        return generate_latest(self.registry)
