"""The scheduler's counters on the service's /metrics registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class JobMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.registry = registry
        self.runs = Counter(
            "casewatch_job_runs",
            "Scheduled job runs by job and outcome: ok, failed, skipped (its run key ran elsewhere)",
            ["job", "outcome"],
            registry=registry,
        )
        self.last_success = Gauge(
            "casewatch_job_last_success_timestamp_seconds",
            "Unix time of each job's latest successful run in this process",
            ["job"],
            registry=registry,
        )
        self.leader = Gauge(
            "casewatch_scheduler_leader", "1 while this process holds the scheduler lease", registry=registry
        )
        self.stale = Gauge(
            "casewatch_jobs_stale",
            "Jobs with no success for longer than allowed (alerted to the admins)",
            registry=registry,
        )

    def count(self, job: str, outcome: str) -> None:
        self.runs.labels(_family(job), outcome).inc()


def _family(job: str) -> str:
    """Label by job family ("digest", not "digest:north"): bounded label values."""
    return job.split(":", 1)[0]
