"""What the outbox holds, for /metrics and for people checking on delivery."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.store.models import Delivery

STATES = ("pending", "sending", "sent", "dead")


async def outbox_counts(session: AsyncSession) -> dict[str, int]:
    """Deliveries by state: {"pending": n, "sending": n, "sent": n, "dead": n}."""
    rows = await session.execute(select(Delivery.state, func.count()).group_by(Delivery.state))
    counts = dict.fromkeys(STATES, 0)
    counts.update({state: int(n) for state, n in rows.all()})
    return counts
