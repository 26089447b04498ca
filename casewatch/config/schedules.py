"""Periodic jobs run inside `casewatch serve`, the leader lease that keeps them to one process, the
daily digest and data retention.

Only the process holding the leader lease (a row in `leases`) runs the jobs. It renews the lease
every `leader_renew_seconds`; the others try to take it over as often. A leader that dies is
replaced within `leader_lease_seconds + leader_renew_seconds`. Every run is recorded in `job_runs`
under a unique run key (one per interval slot, or per local day for daily jobs), so that even two
processes that both believe they lead never run one scan, digest or purge twice.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from casewatch.config.sections import HHMM, Section


class ScheduleSection(Section):
    enabled: bool = Field(True, description="run the scheduled jobs (leader-elected) in `casewatch serve`")
    scan_interval_seconds: int = Field(300, ge=10, le=86400)
    escalation_interval_seconds: int = Field(
        30,
        ge=5,
        le=3600,
        description="escalation tick of the scheduler, used only when delivery.escalation_tick_seconds is 0",
    )
    leader_lease_seconds: float = Field(
        30.0, ge=1, le=600, description="the leader lease lasts this long without renewal"
    )
    leader_renew_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="the leader renews its lease, and the others try to take it, this often",
    )
    daily_catch_up_seconds: int = Field(
        6 * 3600,
        ge=0,
        le=86400,
        description="a daily job (digest, retention) missed at its time (no leader, or it failed) "
        "still runs if this little time has passed since",
    )
    watchdog_seconds: int = Field(
        60,
        ge=1,
        le=3600,
        description="how often the leader retries missed daily jobs and checks for stale jobs",
    )
    stale_after_seconds: int = Field(
        3600,
        ge=60,
        le=7 * 86400,
        description="a job with no success for its period plus this long raises a system.job_stale "
        "alert to the admins",
    )
    job_timeout_seconds: int = Field(
        1800,
        ge=10,
        le=86400,
        description="a run still marked running after this long (its process died) may run again",
    )
    digest_due_days: int = Field(
        7, ge=1, le=60, description="the digest lists what falls due this many days ahead"
    )
    digest_list_limit: int = Field(
        50, ge=1, le=1000, description="the most rows each digest section lists (the count is always exact)"
    )
    caseload_high_risk_percent: float = Field(
        20.0,
        ge=0,
        le=100,
        description="guideline: no officer's caseload more than this share high or very high risk",
    )
    digest_command_wait_seconds: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="`casewatch digest` delivers its messages itself for up to this long",
    )
    retention_time: str = Field("04:00", description="local time of the daily retention purge, HH:MM")
    alert_retention_days: int = Field(
        730,
        ge=0,
        le=36500,
        description="resolved alerts (with their deliveries and acknowledgements) older than this are "
        "purged; 0: never",
    )
    message_retention_days: int = Field(
        90,
        ge=0,
        le=36500,
        description="sent or dead messages not about an alert (digests) older than this are purged; 0: never",
    )
    audit_retention_days: int = Field(
        2557,
        ge=0,
        le=36500,
        description="audit entries older than this (default 7 years) are purged; 0: never",
    )
    job_run_retention_days: int = Field(
        30, ge=1, le=3650, description="job run records older than this are purged"
    )
    inbound_retention_days: int = Field(
        90, ge=0, le=36500,
        description="items a feed kept (casewatch inbound) are purged this long after a person "
        "recorded them as dealt with; never before; 0: never",
    )

    @field_validator("retention_time")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not HHMM.fullmatch(value):
            raise ValueError("must be a 24-hour time HH:MM, for example 04:00")
        return value

    @model_validator(mode="after")
    def _renew_inside_lease(self) -> ScheduleSection:
        if self.leader_renew_seconds * 2 > self.leader_lease_seconds:
            raise ValueError("leader_renew_seconds must be at most half of leader_lease_seconds")
        return self
