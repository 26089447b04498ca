"""Event-driven rules, run inside the ingest transaction. (Issue 3 fills this in.)"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.context import Context
from casewatch.ingest.outcome import Applied


async def on_applied(session: AsyncSession, applied: Sequence[Applied], ctx: Context) -> list[str]:
    """Run the event-driven rules for events just applied; return the ids of alerts opened."""
    return []
