"""The audit entries a disclosure log or a review asks for, streamed (issue 16).

`entries()` is an async generator over the entries matching the filter, in (at, id) order. It
reads through a server-side cursor (`session.stream` with `yield_per`), so a year of entries
never sits in memory: only one batch of rows at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.store.models import AuditEntry, AuditNominal

__all__ = ["COLUMNS", "YIELD_PER", "ExportFilter", "day_end", "day_start", "entries", "iso_utc", "matching"]

COLUMNS = (
    "id", "seq", "at", "actor", "action", "subject", "purpose", "nominals", "details", "content_hash",
    "chain_hash",
)
YIELD_PER = 1000


@dataclass(frozen=True)
class ExportFilter:
    """Every part optional. `since` inclusive, `until` exclusive (aware instants)."""

    subject: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_details(self) -> dict[str, str]:
        """The filter as the audit entry of the export records it."""
        out: dict[str, str] = {}
        for name in ("subject", "actor"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        for name in ("since", "until"):
            if (instant := getattr(self, name)) is not None:
                out[name] = iso_utc(instant)
        return out


def iso_utc(at: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z: one fixed width, sorts as text."""
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def matching(ref: str) -> Any:
    """Entries about nominal `ref`: through the nominal index, or (entries written before the
    index existed) with `ref` as their subject."""
    indexed = select(AuditNominal.audit_id).where(AuditNominal.visor_ref == ref)
    return or_(AuditEntry.id.in_(indexed), AuditEntry.subject == ref)


def _query(f: ExportFilter) -> Select[Any]:
    stmt = select(*(getattr(AuditEntry, name) for name in COLUMNS))
    if f.subject is not None:
        stmt = stmt.where(matching(f.subject))
    if f.actor is not None:
        stmt = stmt.where(AuditEntry.actor == f.actor)
    if f.since is not None:
        stmt = stmt.where(AuditEntry.at >= f.since)
    if f.until is not None:
        stmt = stmt.where(AuditEntry.at < f.until)
    return stmt.order_by(AuditEntry.at, AuditEntry.id)


async def entries(
    session: AsyncSession, f: ExportFilter, *, yield_per: int = YIELD_PER
) -> AsyncIterator[dict[str, Any]]:
    """Each matching entry as a dict keyed by COLUMNS (`at` as iso_utc text), in (at, id) order."""
    result = await session.stream(_query(f).execution_options(yield_per=yield_per))
    async for row in result:
        entry = dict(zip(COLUMNS, row, strict=True))
        entry["at"] = iso_utc(entry["at"])
        entry["nominals"] = list(entry["nominals"] or [])
        entry["details"] = dict(entry["details"] or {})
        yield entry


def day_start(value: date | datetime, tz: ZoneInfo) -> datetime:
    """A --since bound: an instant as given, a date as the start of that day in `tz`."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.combine(value, time(0), tzinfo=tz).astimezone(UTC)


def day_end(value: date | datetime, tz: ZoneInfo) -> datetime:
    """An --until bound (exclusive): an instant as given, a date as the start of the next day in
    `tz` (so the whole day is in, 23 or 25 hours on the days the clocks change)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return day_start(value + timedelta(days=1), tz)
