"""One nominal's timeline for a review (issue 16): who knew what, and when.

Built from the events received and the audit log only (both outlive the alerts, which retention
may already have purged); an alert still on record adds its kind and state now. Never an event's
payload: for events only their type, times and source. Audit entries show what the audit
recorded and no more (a lookup's query as typed is left out: it may be a name).

`timeline()` reads; `render_text()` and `render_json()` are pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.audit.export import about_nominal, iso_utc, matching
from casewatch.safe_text import printable
from casewatch.store.models import Alert, AuditEntry, Event, Nominal

__all__ = ["TimelineItem", "known", "render_json", "render_text", "timeline"]

EVENT_RECEIVED = "event.received"


@dataclass(frozen=True)
class TimelineItem:
    at: datetime
    kind: str  # event.received, or the audit action
    what: str
    who: str = ""  # the actor; for a delivery, who was told
    how: str = ""  # source, channel and address, via
    why: str = ""  # purpose, reason given
    ref: str = ""  # the alert id, the event id, or "audit <id>"


async def known(session: AsyncSession, ref: str) -> bool:
    """Whether casewatch has anything on `ref`: the nominal, an event or an audit entry."""
    for clause in (
        exists().where(Nominal.visor_ref == ref),
        exists().where(Event.visor_ref == ref),
        exists().where(matching(ref)),
    ):
        if (await session.execute(select(clause))).scalar():
            return True
    return False


async def timeline(session: AsyncSession, ref: str, since: datetime | None = None) -> list[TimelineItem]:
    """Every item about `ref` (from `since`, inclusive), in time order; ties in the order written."""
    events = await _events(session, ref, since)
    alerts = await _live_alerts(session, ref)
    entries = await _entries(session, ref, since, alerts)
    items = [(item.at, 0, n, item) for n, item in enumerate(events)]
    items += [(row.at, 1, row.id, _entry_item(row, alerts)) for row in entries]
    return [item for *_, item in sorted(items, key=lambda t: t[:3])]


async def _events(session: AsyncSession, ref: str, since: datetime | None) -> list[TimelineItem]:
    stmt = select(Event.id, Event.type, Event.occurred_at, Event.received_at, Event.source).where(
        Event.visor_ref == ref
    )
    if since is not None:
        stmt = stmt.where(Event.received_at >= since)
    rows = (await session.execute(stmt.order_by(Event.received_at, Event.id))).all()
    return [
        TimelineItem(
            at=row.received_at, kind=EVENT_RECEIVED, what=f"{row.type} (occurred {iso_utc(row.occurred_at)})",
            how=row.source, ref=row.id,
        )
        for row in rows
    ]


async def _live_alerts(session: AsyncSession, ref: str) -> dict[str, Alert]:
    rows = await session.scalars(select(Alert).where(Alert.visor_ref == ref))
    return {alert.id: alert for alert in rows}


async def _entries(
    session: AsyncSession, ref: str, since: datetime | None, alerts: Mapping[str, Alert]
) -> list[Any]:
    stmt = select(AuditEntry).where(await about_nominal(session, ref))
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    return list((await session.scalars(stmt.order_by(AuditEntry.at, AuditEntry.id))).all())


# --- one audit entry as an item ------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _delivery(verb: str) -> Callable[[AuditEntry, Mapping[str, Any]], tuple[str, str, str]]:
    def describe(_row: AuditEntry, d: Mapping[str, Any]) -> tuple[str, str, str]:
        attempt = f", attempt {_text(d['attempt'])}" if d.get("attempt") is not None else ""
        what = f"{verb} ({_text(d.get('change')) or 'message'}{attempt})"
        how = " ".join(p for p in (_text(d.get("channel")), _text(d.get("target"))) if p)
        return what, _text(d.get("receiver")), how

    return describe


def _opened(row: AuditEntry, d: Mapping[str, Any]) -> tuple[str, str, str]:
    return f"alert opened ({_text(d.get('severity')) or '?'})", row.actor, ""


def _acknowledged(row: AuditEntry, d: Mapping[str, Any]) -> tuple[str, str, str]:
    outcome = _text(d.get("outcome"))
    return (f"acknowledged: {outcome}" if outcome else "acknowledged (no outcome given)"), row.actor, _text(
        d.get("via")
    )


def _lookup(row: AuditEntry, d: Mapping[str, Any]) -> tuple[str, str, str]:
    return f"/flags lookup: {_text(d.get('outcome')) or '?'}", row.actor, ""


def _fixed(what: str, how_key: str = "") -> Callable[[AuditEntry, Mapping[str, Any]], tuple[str, str, str]]:
    return lambda row, d: (what, row.actor, _text(d.get(how_key)) if how_key else "")


_DESCRIBE: dict[str, Callable[[AuditEntry, Mapping[str, Any]], tuple[str, str, str]]] = {
    "alert.opened": _opened,
    "alert.escalated": lambda row, d: (f"escalated to step {_text(d.get('step'))}", row.actor,
                                       _text(d.get("receivers"))),
    "alert.severity_raised": lambda row, d: (
        f"severity raised from {_text(d.get('from'))} to {_text(d.get('to'))}", row.actor, ""),
    "alert.reminded": lambda row, d: (
        f"reminder: still {_text(d.get('state'))} after {_text(d.get('open_hours'))} hours", row.actor, ""),
    "alert.acknowledged": _acknowledged,
    "alert.ack_refused": _fixed("acknowledgement refused", "via"),
    "alert.resolved": _fixed("resolved"),
    "delivery.sent": _delivery("delivered"),
    "delivery.retry": _delivery("delivery failed, will retry"),
    "delivery.dead": _delivery("delivery failed for good"),
    "delivery.fallback": lambda row, d: (
        f"Slack failing: emailed {_text(d.get('fallback_to'))} instead", "",
        " ".join(p for p in (_text(d.get("channel")), _text(d.get("target"))) if p)),
    "flags.lookup": _lookup,
    "flags.reason_required": _fixed("/flags lookup refused: a reason is required"),
    "tasks.list": _fixed("shown in /tasks"),
    "home.viewed": _fixed("shown in the App Home"),
    "audit.exported": lambda row, d: (
        "audit export", row.actor, json.dumps(dict(d), sort_keys=True, ensure_ascii=False)),
    "chronology.viewed": _fixed("chronology viewed"),
}


def _entry_item(row: AuditEntry, alerts: Mapping[str, Alert]) -> TimelineItem:
    details = row.details if isinstance(row.details, dict) else {}
    describe = _DESCRIBE.get(row.action)
    what, who, how = describe(row, details) if describe else (row.action, row.actor, "")
    about_alert = row.action.startswith(("alert.", "delivery."))
    if row.action == "alert.opened" and (alert := alerts.get(row.subject)) is not None:
        how = f"{alert.kind}, now {alert.state}"
    why = _text(details.get("reason")) or row.purpose
    return TimelineItem(
        at=row.at, kind=row.action, what=what, who=who, how=how, why=why,
        ref=row.subject if about_alert else f"audit {row.id}",
    )


# --- rendering -----------------------------------------------------------------------------------

WHO_WIDTH = 24


def _local(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def render_text(ref: str, items: list[TimelineItem], tz: ZoneInfo, generated_at: datetime) -> str:
    """One line an item, the columns aligned; times in `tz`, named on each line."""
    lines = [
        f"Chronology of {printable(ref)}, times in {tz.key}, generated {_local(generated_at, tz)}",
        f"{len(items)} items" if items else "nothing on record",
    ]
    kind_width = max((len(i.kind) for i in items), default=0)
    who_width = min(WHO_WIDTH, max((len(printable(i.who)) for i in items), default=0))
    for item in items:
        line = f"{_local(item.at, tz)}  {item.kind:<{kind_width}}  {printable(item.who):<{who_width}}  "
        line += printable(item.what)
        if item.how:
            line += f"  via {printable(item.how)}"
        if item.why:
            line += f"  why: {printable(item.why)}"
        if item.ref:
            line += f"  [{printable(item.ref)}]"
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def render_json(ref: str, items: list[TimelineItem], generated_at: datetime) -> str:
    body = {
        "ref": ref,
        "generated_at": iso_utc(generated_at),
        "items": [{**asdict(item), "at": iso_utc(item.at)} for item in items],
    }
    return json.dumps(body, ensure_ascii=True, indent=2) + "\n"
