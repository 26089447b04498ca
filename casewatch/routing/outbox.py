"""Turning an alert change into outbox rows, in the caller's transaction. (Issue 4 fills this in.)"""

from __future__ import annotations

from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.context import Context
from casewatch.store.models import Alert, Delivery

Change = Literal["opened", "acknowledged", "escalated", "resolved", "reminder"]


async def enqueue(session: AsyncSession, alert: Alert, change: Change, ctx: Context) -> list[Delivery]:
    """Write the deliveries this change of `alert` needs; return them (not yet flushed)."""
    return []
