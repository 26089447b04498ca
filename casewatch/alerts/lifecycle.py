"""Opening, acknowledging and resolving alerts. (Issue 3 fills this in; signatures are agreed.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.context import Context
from casewatch.store.models import Alert

AckStatus = Literal["acknowledged", "already_acknowledged", "resolved", "unknown"]


@dataclass(frozen=True)
class AckOutcome:
    status: AckStatus
    alert: Alert | None


async def acknowledge(
    session: AsyncSession, alert_id: str, officer_id: str, via: str, ctx: Context
) -> AckOutcome:
    """Acknowledge as `officer_id` (via "slack_command", "slack_button" or "api"): record who and
    when, stop escalation, and enqueue the "acknowledged" updates. Idempotent; the alert id is
    matched case-insensitively."""
    raise NotImplementedError
