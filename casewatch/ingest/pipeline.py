"""Ingest: store validated events, apply them to the case store and run the event-driven rules,
all in one transaction. (Issue 2 fills this in.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.context import Context
from casewatch.ingest.schema import Envelope


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    alerts: list[str] = field(default_factory=list)  # ids of alerts these events opened


async def ingest(
    sessions: async_sessionmaker[AsyncSession],
    envelopes: Sequence[Envelope],
    ctx: Context,
    *,
    source: str,
) -> IngestResult:
    """Store the events (a duplicate id changes nothing, also under concurrent posts), apply each
    new one to the case state, run triggers.dispatch.on_applied, and commit before returning."""
    raise NotImplementedError
