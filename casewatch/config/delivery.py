"""Delivery workers: claiming the outbox, retries, pacing, dead letters and the Slack fallback.

Every delivery is retried with exponential backoff and jitter (a Slack 429 waits its Retry-After
instead) until it is sent, fails permanently, or has used `max_attempts` or `give_up_after_seconds`;
then it is dead-lettered: kept in the outbox with state "dead", audited, logged and counted.
A critical or high alert whose Slack message is not out after `fallback_after_seconds` (or is
dead-lettered) is emailed to the team's SPOC inbox as well.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from casewatch.config.sections import Section
from casewatch.model.alerts import SEVERITIES


class DeliverySection(Section):
    workers: int = Field(2, ge=1, le=64, description="delivery worker tasks in each process")
    batch_size: int = Field(20, ge=1, le=500, description="deliveries one worker claims at a time")
    poll_seconds: float = Field(
        1.0, gt=0, le=60,
        description="pause when the outbox is empty (a poll's claim waits for a quiet moment, up to 0.3 s)",
    )
    lease_seconds: int = Field(
        120, ge=10, le=3600,
        description="a claim lasts this long; a worker that dies mid-send loses it after this",
    )
    send_timeout_seconds: float = Field(15.0, gt=0, le=300, description="one Slack or SMTP call")
    max_attempts: int = Field(12, ge=1, le=1000, description="attempts before a delivery is dead")
    give_up_after_seconds: int = Field(
        24 * 3600, ge=60, le=30 * 86400, description="a delivery still failing after this is dead"
    )
    backoff_base_seconds: float = Field(2.0, gt=0, le=3600, description="first retry delay")
    backoff_max_seconds: float = Field(600.0, gt=0, le=86400, description="longest retry delay")
    jitter: float = Field(
        0.5, ge=0, le=1,
        description="share of each backoff delay that is random (0: none, 1: anywhere from 0 to it)",
    )
    chat_interval_seconds: float = Field(
        1.0, ge=0, le=60, description="least gap between two messages to one Slack channel"
    )
    email_interval_seconds: float = Field(
        0.0, ge=0, le=60, description="least gap between two emails to one address"
    )
    max_inline_wait_seconds: float = Field(
        2.0, ge=0, le=60,
        description="a paced delivery waiting longer than this is put back for later instead",
    )
    update_wait_seconds: float = Field(
        5.0, gt=0, le=3600,
        description="an update waits this long (and again) while the first message is not yet sent",
    )
    slack_thread_replies: bool = Field(
        True, description="besides editing the first message, post each change as a thread reply"
    )
    fallback_after_seconds: int = Field(
        300, ge=0, le=86400,
        description="Slack still failing this long after queueing: email the team's SPOC as well",
    )
    fallback_severities: list[str] = Field(
        default_factory=lambda: ["critical", "high"],
        description="severities whose failed Slack deliveries fall back to the SPOC inbox",
    )
    chat_log_path: str = Field(
        "",
        description="append chat messages to this file instead of Slack when slack.mode is \"off\" "
        "(the demo); empty: chat deliveries are not queued when Slack is off",
    )
    escalation_tick_seconds: float = Field(
        30.0, ge=0, le=3600,
        description="how often the delivery workers run the escalation tick; 0: leave it to the scheduler",
    )

    @field_validator("fallback_severities")
    @classmethod
    def _severities(cls, value: list[str]) -> list[str]:
        for severity in value:
            if severity not in SEVERITIES:
                raise ValueError(f"unknown severity {severity!r} (known: {', '.join(SEVERITIES)})")
        return value

    @model_validator(mode="after")
    def _lease_covers_send(self) -> DeliverySection:
        if self.lease_seconds < 2 * self.send_timeout_seconds:
            raise ValueError("lease_seconds must be at least twice send_timeout_seconds")
        if self.lease_seconds < self.send_timeout_seconds + self.max_inline_wait_seconds:
            # Else a message that must wait its pace could never be sent inside a fresh claim.
            raise ValueError(
                "lease_seconds must be at least send_timeout_seconds + max_inline_wait_seconds"
            )
        return self
