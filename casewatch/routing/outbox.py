"""Turning an alert change into outbox rows, in the caller's transaction.

"opened" (and "reminder") go to the kind's route; "acknowledged", "resolved" and "escalated" go to
every address that already heard of the alert (so each message is updated), and "escalated" also
to the receivers of the escalation step just reached. Each row carries its payload, rendered for
what its receiver may see, and a hash of it for the audit trail.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.audit import record
from casewatch.config import Settings
from casewatch.context import Context
from casewatch.routing.routing import (
    AlertFacts,
    Channel,
    Directory,
    Target,
    allowed_emails,
    log_fallbacks,
    needs_nominal,
    resolve_receivers,
    targets_for,
)
from casewatch.store.engine import mark_outbox_queued
from casewatch.store.lists import chunked, one_of
from casewatch.store.models import Alert, Delivery, Marker, Nominal

log = logging.getLogger(__name__)

Change = Literal["opened", "acknowledged", "escalated", "resolved", "reminder"]
UPDATES = ("acknowledged", "escalated", "resolved")


async def enqueue(session: AsyncSession, alert: Alert, change: Change, ctx: Context) -> list[Delivery]:
    """Write the deliveries this change of `alert` needs; return them (not yet flushed)."""
    settings = ctx.settings
    targets: list[Target] = []
    if change in UPDATES:
        targets += await _previous_targets(session, alert, settings)
    if change in ("opened", "reminder"):
        route = settings.routing.receivers_for(alert.kind)
        targets += await resolve_receivers(session, alert, route, settings)
    escalated_to: list[str] = []
    if change == "escalated":
        escalated_to = _step_receivers(alert)
        targets += await resolve_receivers(session, alert, escalated_to, settings)
    targets = _unique(targets)
    if not targets:
        log.error("alert %s (%s, team %s): no receiver for %s", alert.id, alert.kind, alert.team, change)
        await record(
            session, ctx, actor="system", action="delivery.unroutable", subject=alert.id,
            purpose=alert.kind, details={"change": change, "team": alert.team},
        )
        return []
    extra: dict[str, Any] = {"escalated_to": escalated_to} if change == "escalated" else {}
    return await _write(session, alert, change, targets, ctx, extra)


async def enqueue_opened(session: AsyncSession, alerts: Sequence[AlertFacts], ctx: Context) -> int:
    """enqueue(alert, "opened") for many alerts at once; returns how many deliveries it wrote.
    The nominals and markers routing and payloads need are read with one query per table for the
    whole batch, and the rows go in as one multi-row INSERT, not as ORM objects one by one."""
    settings = ctx.settings
    directory = Directory.of(settings)
    routes = {kind: settings.routing.receivers_for(kind) for kind in {a.kind for a in alerts}}
    refs = sorted({a.visor_ref for a in alerts if needs_nominal(routes[a.kind])})
    nominals = await _nominals(session, refs)
    planned: list[tuple[AlertFacts, list[Target]]] = []
    fallbacks: dict[tuple[str, ...], list[AlertFacts]] = {}
    for alert in alerts:
        route = routes[alert.kind]
        targets, fell_back = targets_for(alert, route, nominals.get(alert.visor_ref), settings, directory)
        if fell_back:
            fallbacks.setdefault(tuple(route), []).append(alert)
        planned.append((alert, _unique(targets)))
    for receivers, routed in fallbacks.items():
        log_fallbacks(routed, receivers)
    cleared_refs = sorted({a.visor_ref for a, targets in planned if any(t.personal_data for t in targets)})
    personal = await _personal_many(session, cleared_refs, nominals)
    now = ctx.clock.now()
    rows: list[dict[str, Any]] = []
    unroutable: list[AlertFacts] = []
    for alert, targets in planned:
        if not targets:
            unroutable.append(alert)
            continue
        mine = personal.get(alert.visor_ref)
        for target in targets:
            payload = build_payload(alert, "opened", target, settings, mine, directory)
            rows.append(dict(
                alert_id=alert.id, purpose="opened", receiver=target.receiver[:100], channel=target.channel,
                target=target.address, payload=payload, content_hash=content_hash(target, payload),
                state="pending", attempts=0, next_attempt_at=now, created_at=now, claimed_by=None,
                claimed_until=None, last_error=None, external_ref=None, sent_at=None,
            ))
    if rows:
        await session.execute(insert(Delivery.metadata.tables[Delivery.__tablename__]), rows)
        mark_outbox_queued(session)
    for alert in unroutable:
        log.error("alert %s (%s, team %s): no receiver for opened", alert.id, alert.kind, alert.team)
        await record(
            session, ctx, actor="system", action="delivery.unroutable", subject=alert.id,
            purpose=alert.kind, details={"change": "opened", "team": alert.team},
        )
    return len(rows)


async def enqueue_fallback(
    session: AsyncSession, alert: Alert, failed: Delivery, error: str, ctx: Context
) -> Delivery | None:
    """Email the team's SPOC inbox about an alert whose Slack delivery failed. None if the team
    is unknown."""
    team = ctx.settings.team(alert.team)
    if team is None:
        return None
    target = Target(f"spoc:{team.id}", "email", team.spoc_email, inbox=True,
                    personal_data=team.spoc_email.lower() in _cleared(ctx.settings))
    extra = {"fallback": {"channel": failed.channel, "target": failed.target, "error": error[:200]}}
    rows = await _write(session, alert, "fallback", [target], ctx, extra)
    return rows[0]


async def enqueue_message(
    session: AsyncSession,
    ctx: Context,
    *,
    purpose: str,
    receiver: str,
    channel: Channel,
    target: str,
    subject: str,
    text: str,
    html: str | None = None,
) -> Delivery:
    """Queue a message that is not about one alert (a daily digest, say) through the same outbox,
    worker, retries and audit. Email goes only to configured addresses (ValueError otherwise)."""
    if channel == "email" and target.lower() not in allowed_emails(ctx.settings):
        raise ValueError(f"{target!r} is not a configured email address")
    now = ctx.clock.now()
    payload: dict[str, Any] = {"subject": subject, "text": text, **({"html": html} if html else {})}
    row = Delivery(
        alert_id=None, purpose=purpose[:32], receiver=receiver[:100], channel=channel, target=target,
        payload=payload, content_hash=content_hash(Target(receiver, channel, target), payload),
        state="pending", attempts=0, next_attempt_at=now, created_at=now,
    )
    session.add(row)
    mark_outbox_queued(session)
    return row


async def _write(
    session: AsyncSession,
    alert: Alert,
    change: str,
    targets: Sequence[Target],
    ctx: Context,
    extra: dict[str, Any],
    *,
    personal: dict[str, Any] | None | Literal["load"] = "load",
    directory: Directory | None = None,
) -> list[Delivery]:
    now = ctx.clock.now()
    if personal == "load":
        personal = await _personal(session, alert) if any(t.personal_data for t in targets) else None
    rows = []
    for target in targets:
        payload = build_payload(alert, change, target, ctx.settings, personal, directory)
        payload.update(extra)
        row = Delivery(
            alert_id=alert.id, purpose=change, receiver=target.receiver[:100], channel=target.channel,
            target=target.address, payload=payload, content_hash=content_hash(target, payload),
            state="pending", attempts=0, next_attempt_at=now, created_at=now,
        )
        session.add(row)
        rows.append(row)
    if rows:
        mark_outbox_queued(session)
    return rows


def build_payload(
    alert: AlertFacts,
    change: str,
    target: Target,
    settings: Settings,
    personal: dict[str, Any] | None,
    directory: Directory | None = None,
) -> dict[str, Any]:
    """What the receiver is told: reference, kind, severity, due, owner and alert id; the name
    and non-restricted markers only to cleared receivers; a little more to team inboxes."""
    payload: dict[str, Any] = {
        "alert_id": alert.id, "kind": alert.kind, "severity": alert.severity,
        "visor_ref": alert.visor_ref, "team": alert.team, "state": alert.state, "change": change,
        "summary": alert.summary, "due": due_text(alert.due_at, settings), "owner": alert.owner,
        "acknowledged_by": alert.acknowledged_by, "resolved_reason": alert.resolved_reason,
        "escalation_step": alert.escalation_step,
    }
    if alert.acknowledged_outcome:  # only when there is one: other payloads stay as they were
        payload["acknowledged_outcome"] = alert.acknowledged_outcome
    if not target.may_acknowledge:  # only then: other payloads stay as they were
        payload["for_information"] = True
    if target.personal_data and personal:
        payload["personal"] = personal
    if target.inbox:
        if directory is not None:
            team = directory.teams.get(alert.team)
            officer = directory.officers.get(alert.owner) if alert.owner else None
        else:
            team = settings.team(alert.team)
            officer = settings.officer(alert.owner) if alert.owner else None
        payload["more"] = {
            "team_name": team.name if team else alert.team,
            "opened": _local(alert.opened_at, settings),
            **({"owner_name": officer.name} if officer else {}),
        }
    return payload


def content_hash(target: Target, payload: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"channel": target.channel, "target": target.address, "payload": payload},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _previous_targets(session: AsyncSession, alert: Alert, settings: Settings) -> list[Target]:
    rows = await session.execute(
        select(Delivery.receiver, Delivery.channel, Delivery.target)
        .where(Delivery.alert_id == alert.id)
        .order_by(Delivery.id)
    )
    cleared = _cleared(settings)
    return [
        Target(receiver, "slack" if channel == "slack" else "email", address,
               address.lower() in cleared, receiver.startswith("spoc:"))
        for receiver, channel, address in rows
    ]


def _step_receivers(alert: Alert) -> list[str]:
    step = alert.escalation_step - 1  # the step just reached
    chain = alert.escalation_chain or []
    if 0 <= step < len(chain):
        return [str(r) for r in chain[step].get("receivers", [])]
    return []


def _unique(targets: Sequence[Target]) -> list[Target]:
    seen: dict[tuple[str, str], Target] = {}
    for target in targets:
        seen.setdefault((target.channel, target.address.lower()), target)
    return list(seen.values())


def _cleared(settings: Settings) -> set[str]:
    return {t.lower() for t in settings.routing.personal_data_targets}


async def _personal(session: AsyncSession, alert: Alert) -> dict[str, Any] | None:
    nominal = await session.get(Nominal, alert.visor_ref)
    if nominal is None:
        return None
    markers = (
        await session.execute(
            select(Marker.label).where(Marker.visor_ref == alert.visor_ref, Marker.restricted.is_(False))
        )
    ).scalars().all()
    return {"name": f"{nominal.forenames} {nominal.surname}", "markers": sorted(markers)}


class _NominalRow(NamedTuple):
    """The columns of a nominal that routing and payloads read."""

    visor_ref: str
    area: str
    offender_manager: str
    forenames: str
    surname: str


_NOMINAL_ROW = (Nominal.visor_ref, Nominal.area, Nominal.offender_manager, Nominal.forenames, Nominal.surname)


async def _nominals(session: AsyncSession, visor_refs: Sequence[str]) -> dict[str, _NominalRow]:
    found: dict[str, _NominalRow] = {}
    for part in chunked(session, visor_refs):
        rows = await session.execute(select(*_NOMINAL_ROW).where(one_of(session, Nominal.visor_ref, part)))
        found.update((row[0], _NominalRow(*row)) for row in rows)
    return found


async def _personal_many(
    session: AsyncSession, visor_refs: Sequence[str], nominals: dict[str, _NominalRow]
) -> dict[str, dict[str, Any]]:
    """_personal for many nominals: one query for the missing nominals, one for the markers."""
    missing = [ref for ref in visor_refs if ref not in nominals]
    known = {**nominals, **await _nominals(session, missing)} if missing else nominals
    labels: dict[str, list[str]] = {}
    for part in chunked(session, visor_refs):
        rows = await session.execute(
            select(Marker.visor_ref, Marker.label).where(
                one_of(session, Marker.visor_ref, part), Marker.restricted.is_(False)
            )
        )
        for ref, label in rows:
            labels.setdefault(ref, []).append(label)
    return {
        ref: {"name": f"{n.forenames} {n.surname}", "markers": sorted(labels.get(ref, []))}
        for ref in visor_refs
        if (n := known.get(ref)) is not None
    }


def _local(at: datetime | None, settings: Settings) -> str | None:
    if at is None:
        return None
    return at.astimezone(ZoneInfo(settings.service.timezone)).strftime("%Y-%m-%d %H:%M %Z")


def due_text(at: datetime | None, settings: Settings) -> str | None:
    """A due instant as people read it: the rules make most things due at the end of a local day
    (local midnight), which reads as "end of 2026-11-25", not as the next day's 00:00."""
    if at is None:
        return None
    local = at.astimezone(ZoneInfo(settings.service.timezone))
    if (local.hour, local.minute, local.second) == (0, 0, 0):
        return f"end of {(local - timedelta(seconds=1)).date().isoformat()}"
    return _local(at, settings)
