"""The append-only audit log: what was shared or looked up, with whom, when and why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.context import Context
from casewatch.store.models import AuditEntry


async def record(
    session: AsyncSession,
    ctx: Context,
    *,
    actor: str,
    action: str,
    subject: str = "",
    purpose: str = "",
    details: Mapping[str, Any] | None = None,
) -> None:
    """Add an audit entry to the caller's transaction. Never put personal data in `details`
    beyond what the action itself shared (a ViSOR reference, an alert id, an officer id)."""
    session.add(
        AuditEntry(
            at=ctx.clock.now(), actor=actor[:100], action=action[:64], subject=subject[:200],
            purpose=purpose[:200], details=dict(details or {}),
        )
    )
