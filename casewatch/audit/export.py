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

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.store.models import Alert, AuditEntry, AuditNominal

__all__ = ["COLUMNS", "YIELD_PER", "ExportFilter", "day_end", "day_start", "entries", "iso_utc", "matching"]

_STORED = (
    "id", "seq", "at", "actor", "action", "subject", "purpose", "nominals", "details", "content_hash",
    "chain_hash",
)
# `redacted`: what an export about one nominal withheld from this entry (see redact()).
COLUMNS = (*_STORED, "redacted")
WITHHELD = "(withheld)"
# Actions whose subject is the query as typed: it may be a name.
_TYPED_QUERY = ("flags.lookup", "flags.reason_required")
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


# Audit actions whose subject is an alert id.
ABOUT_AN_ALERT = ("alert.%", "delivery.%")


async def about_nominal(session: AsyncSession, ref: str) -> Any:
    """matching(ref), and the entries about its alerts (alert.*, delivery.*) that name their nominal
    only through the alert id (written before the nominal index): the alerts its indexed
    alert.opened entries name, and its alerts still on record."""
    opened = select(AuditEntry.subject).where(AuditEntry.action == "alert.opened", matching(ref))
    alert_ids = set((await session.scalars(opened)).all())
    alert_ids |= set((await session.scalars(select(Alert.id).where(Alert.visor_ref == ref))).all())
    if not alert_ids:
        return matching(ref)
    by_alert = and_(
        AuditEntry.subject.in_(sorted(alert_ids)),
        or_(*(AuditEntry.action.like(pattern) for pattern in ABOUT_AN_ALERT)),
    )
    return or_(matching(ref), by_alert)


def redact(entry: dict[str, Any], ref: str) -> dict[str, Any]:
    """The entry as an export about `ref` may show it (a subject-access request, a disclosure):
    other nominals' references and a query as typed (which may be a name) withheld, `redacted`
    saying what was. A redacted entry no longer matches its content_hash: export without
    --subject for the entries as chained."""
    others = {n for n in entry["nominals"] if n != ref}
    withheld: list[str] = []
    if others:
        entry["nominals"] = [n for n in entry["nominals"] if n == ref]
        entry["details"] = _without(entry["details"], others)
        withheld.append("other nominals' references")
    if entry["subject"] in others or (entry["action"] in _TYPED_QUERY and entry["subject"] != ref):
        entry["subject"] = WITHHELD
        withheld.append("the query as typed")
    entry["redacted"] = "; ".join(withheld)
    return entry


def _without(value: Any, others: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, others) for k, v in value.items()}
    if isinstance(value, list):
        return [_without(v, others) for v in value if not (isinstance(v, str) and v in others)]
    if isinstance(value, str) and value in others:
        return WITHHELD
    return value


def _query(f: ExportFilter, about: Any = None) -> Select[Any]:
    stmt = select(*(getattr(AuditEntry, name) for name in _STORED))
    if about is not None:
        stmt = stmt.where(about)
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
    """Each matching entry as a dict keyed by COLUMNS (`at` as iso_utc text), in (at, id) order;
    redacted for the subject when there is one (redact())."""
    about = await about_nominal(session, f.subject) if f.subject is not None else None
    result = await session.stream(_query(f, about).execution_options(yield_per=yield_per))
    async for row in result:
        entry = dict(zip(_STORED, row, strict=True))
        entry["at"] = iso_utc(entry["at"])
        entry["nominals"] = list(entry["nominals"] or [])
        entry["details"] = dict(entry["details"] or {})
        entry["redacted"] = ""
        yield redact(entry, f.subject) if f.subject is not None else entry


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
