"""Turning an alert change into outbox rows, in the caller's transaction.

"opened" (and "reminder") go to the kind's route; "acknowledged", "resolved" and "escalated" go to
every address that already heard of the alert (so each message is updated), and "escalated" also
to the receivers of the escalation step just reached. "raised" (the severity went up) goes to
both: the kind's route and every address that already heard, once each. Each row carries its
payload, rendered for what its receiver may see, and a hash of it for the audit trail.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import insert, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.audit import record
from casewatch.bell import Claimer
from casewatch.config import Settings
from casewatch.context import Context
from casewatch.delivery.claim import ClaimedRow
from casewatch.routing.purposes import alert_purpose, nominals_of
from casewatch.routing.routing import (
    AlertFacts,
    Channel,
    Directory,
    Target,
    allowed_emails,
    configured_slack_ids,
    log_fallbacks,
    needs_nominal,
    targets_for,
)
from casewatch.store.engine import mark_handed, mark_outbox_queued, outbox_claimer
from casewatch.store.lists import chunked, one_of
from casewatch.store.models import Alert, Delivery, Marker, Nominal

log = logging.getLogger(__name__)

Change = Literal["opened", "acknowledged", "escalated", "resolved", "reminder", "raised"]
UPDATES = ("acknowledged", "escalated", "resolved")
ROUTED = ("opened", "reminder", "raised")  # to the kind's receivers
TOLD_AGAIN = (*UPDATES, "raised")  # to every address that already heard of the alert


class AlertChange(AlertFacts, Protocol):
    """What enqueueing reads of an alert: an Alert row, or alerts.lifecycle.OpenedAlert."""

    @property
    def escalation_chain(self) -> list[Any]: ...


async def enqueue(
    session: AsyncSession,
    alerts: Sequence[AlertChange],
    change: Change,
    ctx: Context,
    *,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> int:
    """Write the deliveries this change of each alert needs; return how many. One alert is a batch
    of one: the nominals, markers and earlier deliveries the batch needs are read with one query
    per table, and the rows go in as one multi-row INSERT, not as ORM objects one by one.
    `extra`, by alert id: fields added to that alert's payloads (a raise's former severity)."""
    return await write_plan(session, await plan_enqueue(session, alerts, change, ctx, extra=extra), ctx)


@dataclass(frozen=True)
class Plan:
    """An enqueue's deliveries, made but not written (plan_enqueue): for each alert, its targets
    and extra payload fields; the rows in the order they go in; the alerts routed by fallback,
    not logged yet."""

    change: str
    planned: list[tuple[AlertFacts, list[Target], dict[str, Any]]]
    rows: list[dict[str, Any]]
    now: datetime
    fallbacks: dict[tuple[str, ...], list[AlertFacts]]


async def plan_enqueue(
    session: AsyncSession,
    alerts: Sequence[AlertChange],
    change: Change,
    ctx: Context,
    *,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """enqueue's reads and rows, nothing written or logged (write_plan does that)."""
    settings = ctx.settings
    directory = Directory.of(settings)
    heard = await _previous_targets(session, [a.id for a in alerts], settings) if change in TOLD_AGAIN else {}
    routes: dict[str, list[str]] = {}  # by alert id: the receivers this change names
    if change in ROUTED:
        by_kind = {kind: settings.routing.receivers_for(kind) for kind in {a.kind for a in alerts}}
        routes = {a.id: by_kind[a.kind] for a in alerts}
    elif change == "escalated":
        routes = {a.id: _step_receivers(a) for a in alerts}
    refs = sorted({a.visor_ref for a in alerts if needs_nominal(routes.get(a.id, ()))})
    nominals = await _nominals(session, refs)
    planned: list[tuple[AlertFacts, list[Target], dict[str, Any]]] = []
    fallbacks: dict[tuple[str, ...], list[AlertFacts]] = {}
    for alert in alerts:
        targets = list(heard.get(alert.id, []))
        route = routes.get(alert.id)
        if route is not None:
            routed, fell_back = targets_for(alert, route, nominals.get(alert.visor_ref), settings, directory)
            targets += routed
            if fell_back:
                fallbacks.setdefault(tuple(route), []).append(alert)
        added = {"escalated_to": route} if change == "escalated" else {}
        planned.append((alert, _unique(targets), {**added, **(extra or {}).get(alert.id, {})}))
    rows, now = await _rows(session, change, planned, ctx, directory, nominals)
    return Plan(change, planned, rows, now, fallbacks)


async def write_plan(session: AsyncSession, plan: Plan, ctx: Context) -> int:
    """Write a plan's deliveries (and audit its unroutable alerts); return how many."""
    for receivers, fell in plan.fallbacks.items():
        log_fallbacks(fell, receivers)
    return await _write_rows(session, plan.change, plan.planned, plan.rows, plan.now, ctx)


async def enqueue_fallback(
    session: AsyncSession, alert: Alert, failed: Delivery, error: str, ctx: Context
) -> str | None:
    """Email the team's SPOC inbox about an alert whose Slack delivery failed; return the address,
    or None if the team is unknown."""
    team = ctx.settings.team(alert.team)
    if team is None:
        return None
    target = Target(f"spoc:{team.id}", "email", team.spoc_email, inbox=True,
                    personal_data=team.spoc_email.lower() in _cleared(ctx.settings))
    extra = {"fallback": {"channel": failed.channel, "target": failed.target, "error": error[:200]}}
    await _write(session, "fallback", [(alert, [target], extra)], ctx, Directory.of(ctx.settings), {})
    return target.address


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
    change: str,
    planned: Sequence[tuple[AlertFacts, Sequence[Target], dict[str, Any]]],
    ctx: Context,
    directory: Directory,
    nominals: dict[str, _NominalRow],
) -> int:
    """One row per (alert, target), the payload with its extra fields; an alert with no target
    is logged and audited as unroutable."""
    rows, now = await _rows(session, change, planned, ctx, directory, nominals)
    return await _write_rows(session, change, planned, rows, now, ctx)


async def _rows(
    session: AsyncSession,
    change: str,
    planned: Sequence[tuple[AlertFacts, Sequence[Target], dict[str, Any]]],
    ctx: Context,
    directory: Directory,
    nominals: dict[str, _NominalRow],
) -> tuple[list[dict[str, Any]], datetime]:
    """_write's rows, and the instant they are due and made."""
    cleared_refs = sorted({a.visor_ref for a, targets, _ in planned if any(t.personal_data for t in targets)})
    personal = await _personal_many(session, cleared_refs, nominals)
    now = ctx.clock.now()
    rows: list[dict[str, Any]] = []
    for alert, targets, extra in planned:
        for target in targets:
            mine = personal.get(alert.visor_ref)
            payload = build_payload(alert, change, target, ctx.settings, mine, directory)
            payload.update(extra)
            rows.append(dict(
                alert_id=alert.id, purpose=change, receiver=target.receiver[:100], channel=target.channel,
                target=target.address, payload=payload, content_hash=content_hash(target, payload),
                state="pending", attempts=0, next_attempt_at=now, created_at=now, claimed_by=None,
                claimed_until=None, last_error=None, external_ref=None, sent_at=None,
            ))
    return rows, now


async def _write_rows(
    session: AsyncSession,
    change: str,
    planned: Sequence[tuple[AlertFacts, Sequence[Target], dict[str, Any]]],
    rows: list[dict[str, Any]],
    now: datetime,
    ctx: Context,
) -> int:
    if rows:
        # A new alert's rows (no earlier message, no thread: its id was just drawn) may go to this
        # process's delivery worker already claimed, skipping its claim transaction and the bell.
        claimer = outbox_claimer(session, len(rows)) if change == "opened" else None
        if claimer is None:
            await _insert_pending(session, rows, change, now)
            mark_outbox_queued(session)
        else:
            await _write_claimed(session, rows, claimer, now)
    for alert, targets, _ in planned:
        if not targets:
            log.error("alert %s (%s, team %s): no receiver for %s", alert.id, alert.kind, alert.team, change)
            await record(
                session, ctx, actor="system", action="delivery.unroutable", subject=alert.id,
                purpose=alert_purpose("delivery.unroutable", alert.kind),
                details={"change": change, "team": alert.team}, nominals=nominals_of(alert.visor_ref),
            )
    return len(rows)


async def _insert_pending(
    session: AsyncSession, rows: list[dict[str, Any]], change: str, now: datetime
) -> None:
    """Insert `rows` (as _write builds them: this change, pending, no attempt, due and created
    `now`, unclaimed), with ids in their order."""
    if session.get_bind().dialect.name != "postgresql":
        await session.execute(insert(_DELIVERIES), rows)
        return
    if now.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")  # as store.types.UTCDateTime
    params: dict[str, Any] = {column: [row[column] for row in rows] for column in _PG_ROW_TYPES}
    params["payload"] = [json.dumps(payload) for payload in params["payload"]]  # as JSON() sends it
    await session.execute(_PG_INSERT_PENDING, {**params, "purpose": change, "now": now})


_DELIVERIES = Delivery.metadata.tables[Delivery.__tablename__]
# PostgreSQL: the rows as one array a column, unnested: one statement a batch. An executemany
# is one Bind/Execute a row (17.8k in the bench's first scan). WITH ORDINALITY keeps the ids in
# the rows' order (nextval is drawn row by row as the unnest yields them, in ordinality order).
_PG_ROW_TYPES = {
    "alert_id": "varchar", "receiver": "varchar", "channel": "varchar", "target": "varchar",
    "payload": "text", "content_hash": "varchar",
}
_PG_INSERT_PENDING = text(
    f"INSERT INTO {_DELIVERIES.name} (purpose, {', '.join(_PG_ROW_TYPES)}, "  # noqa: S608 (constants only)
    "state, attempts, next_attempt_at, created_at) "
    "SELECT CAST(:purpose AS varchar), r.alert_id, r.receiver, r.channel, r.target, CAST(r.payload AS json), "
    "r.content_hash, 'pending', 0, CAST(:now AS timestamptz), CAST(:now AS timestamptz) "
    f"FROM unnest({', '.join(f'CAST(:{c} AS {t}[])' for c, t in _PG_ROW_TYPES.items())}) "
    f"WITH ORDINALITY AS r ({', '.join(_PG_ROW_TYPES)}, n) ORDER BY r.n"
)


async def _write_claimed(
    session: AsyncSession, rows: list[dict[str, Any]], claimer: Claimer, now: datetime
) -> None:
    """Insert `rows` as claim_rows would leave them ("sending", the worker and its lease) and hand
    the worker, after the commit, what the claim's RETURNING would have read."""
    lease_until = _lease_until(claimer, now)
    for row in rows:
        row.update(state="sending", claimed_by=claimer.worker_id, claimed_until=lease_until)
    table = Delivery.metadata.tables[Delivery.__tablename__]
    # One statement for all rows (RETURNING in parameter order would be one a row on SQLite): each
    # id is matched to its row by alert and destination, one row each in a write (_unique).
    returned = await session.execute(
        insert(table).returning(table.c.id, table.c.alert_id, table.c.channel, table.c.target), rows
    )
    _hand(session, claimer, rows, list(returned), lease_until)


def _lease_until(claimer: Claimer, now: datetime) -> datetime:
    return (now + timedelta(seconds=claimer.lease_seconds)).astimezone(UTC)


def _hand(
    session: AsyncSession,
    claimer: Claimer,
    rows: Sequence[dict[str, Any]],
    returned: Sequence[Sequence[Any]],
    lease_until: datetime,
) -> None:
    """Hand the worker `rows`, written claimed by it; `returned`: (id, alert id, channel, target)
    of each row written, matched to its row by alert and destination (one row each in a write:
    _unique)."""
    id_of = {(alert_id, channel, target): int(row_id) for row_id, alert_id, channel, target in returned}
    ids = [id_of[(row["alert_id"], row["channel"], row["target"])] for row in rows]
    mark_handed(session, claimer.worker_id, [
        ClaimedRow(
            id=delivery_id, channel=row["channel"], target=row["target"], alert_id=row["alert_id"],
            purpose=row["purpose"],
            # As the claim would read it back: through JSON.
            payload=json.loads(json.dumps(row["payload"])),
            content_hash=row["content_hash"], last_error=None, claimed_until=lease_until,
            thread_ref=None, after_earlier=False,
        )
        for delivery_id, row in zip(ids, rows, strict=True)
    ])


@dataclass(frozen=True)
class FoldedDeliveries:
    """A plan's deliveries written as a part of a caller's one statement on PostgreSQL (the
    alerts they are about, these rows and the alerts' audit entries: alerts.lifecycle.open_alerts):
    pg_deliveries_cte's part, its parameters (params), and written() once the statement ran."""

    plan: Plan
    claimer: Claimer | None  # as _write_rows chooses: this process's worker, or None (pending)
    lease_until: datetime | None

    def params(self, prefix: str) -> dict[str, Any]:
        """pg_deliveries_cte's parameters (named with the same prefix)."""
        rows = self.plan.rows
        params: dict[str, Any] = {prefix + c: [row[c] for row in rows] for c in _PG_ROW_TYPES}
        params[prefix + "payload"] = [json.dumps(payload) for payload in params[prefix + "payload"]]
        claimer = self.claimer
        params.update({
            prefix + "purpose": self.plan.change, prefix + "now": self.plan.now,
            prefix + "state": "pending" if claimer is None else "sending",
            prefix + "claimed_by": None if claimer is None else claimer.worker_id,
            prefix + "claimed_until": self.lease_until,
        })
        return params

    def written(self, session: AsyncSession, returned: Sequence[Sequence[Any]]) -> None:
        """After the statement wrote every row (`returned`: the part's RETURNING rows): what
        write_plan does besides the insert (the fallback log, the worker told after the commit)."""
        plan = self.plan
        if len(returned) != len(plan.rows):
            raise RuntimeError("deliveries written as a part: not every row went in")
        for receivers, fell in plan.fallbacks.items():
            log_fallbacks(fell, receivers)
        if self.claimer is None:
            mark_outbox_queued(session)
        else:
            assert self.lease_until is not None
            _hand(session, self.claimer, plan.rows, returned, self.lease_until)


def fold_deliveries(session: AsyncSession, plan: Plan) -> FoldedDeliveries | None:
    """The plan's deliveries as a part of a caller's statement (PostgreSQL), or None where it
    cannot go so: no rows, or an alert with no target (write_plan audits it as unroutable)."""
    if not plan.rows or any(not targets for _, targets, _ in plan.planned):
        return None
    if plan.now.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")  # as store.types.UTCDateTime
    # As _write_rows: a new alert's rows may go to this process's worker already claimed.
    claimer = outbox_claimer(session, len(plan.rows)) if plan.change == "opened" else None
    return FoldedDeliveries(plan, claimer, _lease_until(claimer, plan.now) if claimer is not None else None)


def pg_deliveries_cte(name: str, prefix: str, gate: str) -> str:
    """FoldedDeliveries' part of a WITH: `{name} AS (INSERT INTO deliveries .. WHERE {gate} ..
    RETURNING id, alert_id, channel, target)`, the rows as _insert_pending (pending) or
    _write_claimed (claimed) write them, ids in the rows' order; its parameters named {prefix}..."""
    arrays = ", ".join(f"CAST(:{prefix}{c} AS {t}[])" for c, t in _PG_ROW_TYPES.items())
    return (
        f"{name} AS (INSERT INTO {_DELIVERIES.name} (purpose, {', '.join(_PG_ROW_TYPES)}, "  # noqa: S608 (constants only)
        "state, attempts, next_attempt_at, created_at, claimed_by, claimed_until) "
        f"SELECT CAST(:{prefix}purpose AS varchar), r.alert_id, r.receiver, r.channel, r.target, "
        f"CAST(r.payload AS json), r.content_hash, CAST(:{prefix}state AS varchar), 0, "
        f"CAST(:{prefix}now AS timestamptz), CAST(:{prefix}now AS timestamptz), "
        f"CAST(:{prefix}claimed_by AS varchar), CAST(:{prefix}claimed_until AS timestamptz) "
        f"FROM unnest({arrays}) WITH ORDINALITY AS r ({', '.join(_PG_ROW_TYPES)}, n) "
        f"WHERE {gate} ORDER BY r.n RETURNING id, alert_id, channel, target)"
    )


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
        directory = directory or Directory.of(settings)
        team = directory.teams.get(alert.team)
        officer = directory.officers.get(alert.owner) if alert.owner else None
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


async def _previous_targets(
    session: AsyncSession, alert_ids: Sequence[str], settings: Settings
) -> dict[str, list[Target]]:
    """Every address that already heard of each alert and is still in the configuration, in the
    order they were queued. One the configuration no longer has (a channel replaced, an officer
    gone) hears no more of it: its updates carried the acknowledgement's outcome and the nominal's
    name to whoever keeps that channel now."""
    cleared = _cleared(settings)
    configured = {"slack": configured_slack_ids(settings), "email": allowed_emails(settings)}
    heard: dict[str, list[Target]] = {}
    for part in chunked(session, alert_ids):
        rows = await session.execute(
            select(Delivery.alert_id, Delivery.receiver, Delivery.channel, Delivery.target)
            .where(one_of(session, Delivery.alert_id, part))
            .order_by(Delivery.id)
        )
        for alert_id, receiver, channel, address in rows:
            known = configured["slack" if channel == "slack" else "email"]
            if (address if channel == "slack" else address.lower()) not in known:
                continue
            heard.setdefault(str(alert_id), []).append(Target(
                receiver, "slack" if channel == "slack" else "email", address,
                address.lower() in cleared, receiver.startswith("spoc:"),
            ))
    return heard


def _step_receivers(alert: AlertChange) -> list[str]:
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


def cleared_now(settings: Settings, address: str) -> bool:
    """Whether `address` may be sent the nominal's name and markers under this configuration."""
    return address.lower() in _cleared(settings)


class _NominalRow(NamedTuple):
    """The columns of a nominal that routing and payloads read."""

    visor_ref: str
    area: str
    offender_manager: str
    forenames: str
    surname: str


_NOMINAL_ROW = (Nominal.visor_ref, Nominal.area, Nominal.offender_manager, Nominal.forenames, Nominal.surname)
_NOMINAL_KEYS = tuple(column.key for column in _NOMINAL_ROW)  # in _NominalRow's order
_NOMINAL_KEY_SET = frozenset(_NOMINAL_KEYS)


# Whether enqueue takes the nominals a caller holds (hold_nominals) instead of reading them.
TAKE_HELD_NOMINALS = True
_HELD = "casewatch.outbox.held_nominals"


def hold_nominals(session: AsyncSession, nominals: Mapping[str, Nominal | None]) -> None:
    """Tell this transaction's enqueues that the caller holds these nominals (the ingest's batch:
    loaded in this transaction, flushed, written through the ORM): routing and payloads then take
    their columns from the instances instead of reading the rows again. Only an instance that is
    persistent, unchanged since its flush and holds every column read is taken (what
    triggers.dispatch._held_facts asks of the same instances); a reference held as None, or not
    held, is read as before. It lapses with the transaction."""
    session.info[_HELD] = (session.sync_session.get_transaction(), nominals)


def _held_rows(session: AsyncSession, visor_refs: Sequence[str]) -> dict[str, _NominalRow]:
    transaction, held = session.info.get(_HELD, (None, None))
    if not TAKE_HELD_NOMINALS or held is None or transaction is not session.sync_session.get_transaction():
        return {}
    found: dict[str, _NominalRow] = {}
    for ref in visor_refs:
        nominal = held.get(ref)
        if nominal is None:
            continue
        state = inspect(nominal)
        values = state.dict
        if state.persistent and not state.modified and values.keys() >= _NOMINAL_KEY_SET:
            found[ref] = _NominalRow(*(values[key] for key in _NOMINAL_KEYS))
    return found


async def _nominals(session: AsyncSession, visor_refs: Sequence[str]) -> dict[str, _NominalRow]:
    found = _held_rows(session, visor_refs) if visor_refs else {}
    if found:
        visor_refs = [ref for ref in visor_refs if ref not in found]
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
