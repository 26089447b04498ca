"""Opening, acknowledging, raising and resolving alerts: the only code that changes an alert's state.

Every change writes its outbox rows (routing.outbox.enqueue) and an audit entry in the caller's
transaction, so an alert never changes without the people who must hear of it being queued.
At most one live (open or acknowledged) alert exists per (kind, visor_ref, subject): the
`live_key` column is unique while the alert lives and NULL once it is resolved.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import TextClause, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch import audit
from casewatch.alerts.authority import Acknowledger, clean_outcome, may_acknowledge
from casewatch.audit import (
    Entry,
    entry_rows,
    pg_entries_ctes,
    pg_entries_params,
    record,
    record_many,
)
from casewatch.context import Context
from casewatch.model.alerts import LIVE_STATES, SEVERITIES, SEVERITY_RANK, AlertSpec, live_key
from casewatch.routing.escalation import chain_for
from casewatch.routing.outbox import enqueue, fold_deliveries, pg_deliveries_cte, plan_enqueue
from casewatch.routing.purposes import alert_purpose, nominals_of
from casewatch.store.direct_read import fetch_in_transaction
from casewatch.store.engine import mark_audited
from casewatch.store.lists import chunked, one_of
from casewatch.store.models import Acknowledgement, Alert, Officer

# Crockford base32 without 0/1 (read as O/I): unambiguous when read out or typed.
_ID_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_LENGTH = 6
_ID_ATTEMPTS = 5
# A raise reads the alert, then updates it only if it is still as read; if an acknowledgement or
# a resolution came between, it reads it again (a resolved alert is then not raised).
_RAISE_ATTEMPTS = 3

AckStatus = Literal["acknowledged", "already_acknowledged", "resolved", "unknown", "refused"]


@dataclass(frozen=True)
class AckOutcome:
    """What became of an acknowledgement. `alert` is None for "unknown" and "refused": a
    refused requester must learn nothing about the alert."""

    status: AckStatus
    alert: Alert | None


def new_alert_ids(n: int) -> list[str]:
    """`n` random alert ids from one read of the system's random source (a scan draws
    thousands; secrets.choice reads it once per character). They may repeat each other or an id
    in use: _draw_ids and the insert check."""
    size = len(_ID_ALPHABET)
    unbiased = 256 - 256 % size  # bytes below a multiple of the alphabet's size map onto it evenly
    chars: list[str] = []
    while len(chars) < n * _ID_LENGTH:
        chars += [_ID_ALPHABET[b % size] for b in secrets.token_bytes(2 * _ID_LENGTH * n) if b < unbiased]
    return ["A-" + "".join(chars[i * _ID_LENGTH : (i + 1) * _ID_LENGTH]) for i in range(n)]


def normalise_alert_id(text: str) -> str:
    """What a person typed (`a-7k3q9m`, ` A7K3Q9M `) as a stored id."""
    raw = text.strip().upper().replace(" ", "")
    if raw.startswith("A-"):
        raw = raw[2:]
    elif raw.startswith("A") and len(raw) == _ID_LENGTH + 1:
        raw = raw[1:]
    return "A-" + raw


_ALERTS = Alert.metadata.tables[Alert.__tablename__]


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_ALERTS)


async def open_alert(
    session: AsyncSession, spec: AlertSpec, ctx: Context, *, event_id: str | None = None
) -> Alert | None:
    """Open the alert unless a live one with the same key exists. Returns the new alert, or None.

    Safe under concurrent ingests: the insert is ON CONFLICT DO NOTHING on the live key, so two
    transactions racing to open the same alert leave exactly one.
    """
    [opened] = await open_alerts(session, [spec], ctx, [event_id])
    return await session.get(Alert, opened.id) if opened is not None else None


@dataclass(frozen=True, slots=True)
class OpenedAlert:
    """An alert as open_alerts wrote it: the row's values, without reading the row back (a scan
    opens thousands at a time, and ORM objects for them would cost more than the inserts)."""

    id: str
    kind: str
    severity: str
    visor_ref: str
    team: str
    subject: str
    live_key: str
    state: str
    summary: str
    details: dict[str, Any]
    owner: str | None
    due_at: datetime | None
    opened_at: datetime
    opened_by_event: str | None
    escalation_chain: list[dict[str, Any]]
    escalation_step: int
    next_escalation_at: datetime | None
    version: int
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    acknowledged_outcome: str | None = None
    resolved_at: datetime | None = None
    resolved_reason: str | None = None


async def open_alerts(
    session: AsyncSession,
    specs: Sequence[AlertSpec],
    ctx: Context,
    event_ids: Sequence[str | None] | None = None,
) -> list[OpenedAlert | None]:
    """open_alert for many specs in a few statements: a multi-row INSERT .. ON CONFLICT DO
    NOTHING RETURNING (paged by SQLAlchemy), one batched outbox enqueue, the audit rows.
    Returns, for each spec in order, the new alert (an OpenedAlert record, not an ORM object)
    or None (a live alert with its key existed, or an earlier spec in `specs` has the same
    key). `event_ids[i]` is the event that opened `specs[i]`.

    The insert has no conflict target, so it skips both a live-key conflict and an alert-id
    collision without aborting the transaction; RETURNING says which live keys went in. A spec
    that did not go in, and whose live key is not in the table, collided on its random id: it
    is drawn again.
    """
    if event_ids is None:
        event_ids = [None] * len(specs)
    if len(event_ids) != len(specs):
        raise ValueError("open_alerts: one event id (or None) per spec")
    now = ctx.clock.now()
    chains: dict[tuple[str, str], list[dict[str, Any]]] = {}
    wanted: dict[str, dict[str, Any]] = {}  # live key -> row values, first spec of a key wins
    for spec, event_id in zip(specs, event_ids, strict=True):
        key = spec.live_key
        if key in wanted:
            continue
        chain = chains.get((spec.kind, spec.severity))
        if chain is None:
            chain = chains[(spec.kind, spec.severity)] = chain_for(spec.kind, spec.severity, ctx)
        first_wait = chain[0].get("after_seconds") if chain else None
        wanted[key] = dict(
            kind=spec.kind,
            severity=spec.severity,
            visor_ref=spec.visor_ref,
            team=spec.team,
            subject=spec.subject,
            live_key=key,
            state="open",
            summary=spec.summary,
            details=dict(spec.details),
            owner=spec.owner,
            due_at=spec.due_at,
            opened_at=now,
            opened_by_event=event_id,
            escalation_chain=chain,
            escalation_step=0,
            next_escalation_at=now + timedelta(seconds=first_wait) if first_wait is not None else None,
            version=1,
        )
    opened: dict[str, OpenedAlert] = {}
    pending = list(wanted)
    written = False  # the deliveries and audit entries went in with the alerts (_insert_folded)
    for attempt in range(_ID_ATTEMPTS):
        if not pending:
            break
        ids = _draw_ids(len(pending))
        rows = [{**wanted[key], "id": alert_id} for key, alert_id in zip(pending, ids, strict=True)]
        if attempt == 0 and _may_fold(session, len(rows)):
            inserted, written = await _insert_folded(session, rows, ctx)
        else:
            # One cached Core statement, executemany: SQLAlchemy sends it as multi-row VALUES pages
            # ("insertmanyvalues") within the driver's parameter limits. (An ORM-enabled insert
            # returning entities is far slower here: it correlates each row to its parameters.)
            inserted = await _insert_rows(session, rows)
        for row in rows:
            if inserted.get(row["live_key"]) == row["id"]:
                opened[row["live_key"]] = OpenedAlert(**row)
        missing = [key for key in pending if key not in opened]
        live = await _existing_live_keys(session, missing) if missing else set()
        pending = [key for key in missing if key not in live]
    if pending:
        raise RuntimeError("could not draw an unused alert id")
    new = [opened[key] for key in wanted if key in opened]
    if new and not written:
        await enqueue(session, new, "opened", ctx)
        await record_many(session, ctx, _opened_entries(new))
    # Each live key answers for its first spec only; later specs with the same key get None.
    answered: set[str] = set()
    out: list[OpenedAlert | None] = []
    for spec in specs:
        key = spec.live_key
        out.append(opened.get(key) if key not in answered else None)
        answered.add(key)
    return out


def _opened_entries(alerts: Sequence[OpenedAlert]) -> list[Entry]:
    return [
        Entry(
            actor="system", action="alert.opened", subject=alert.id,
            purpose=alert_purpose("alert.opened", alert.kind), nominals=nominals_of(alert.visor_ref),
            details={"visor_ref": alert.visor_ref, "severity": alert.severity},
        )
        for alert in alerts
    ]


async def _insert_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> dict[str, str]:
    """INSERT .. ON CONFLICT DO NOTHING of `rows`; the live key -> id of those that went in."""
    if session.get_bind().dialect.name == "postgresql":
        result = await session.execute(_PG_INSERT, _pg_params(rows))
    else:
        result = await session.execute(_SQLITE_INSERT, rows)
    return {key: alert_id for alert_id, key in result}


def _pg_params(rows: list[dict[str, Any]], prefix: str = "") -> dict[str, Any]:
    for row in rows:
        if any(row[c] is not None and row[c].tzinfo is None for c in _PG_TIMES):
            raise ValueError("naive datetime given to a UTC column")  # as store.types.UTCDateTime
    return {
        prefix + c: [json.dumps(row[c]) for row in rows] if c in _PG_JSON else [row[c] for row in rows]
        for c in _PG_COLUMNS
    }


# PostgreSQL: a few new alerts, their deliveries and their audit entries (with the entries'
# nominal index) in one statement, not three (_insert_folded); False: three, as on SQLite (A/B).
FOLD_OPEN_WRITES = True


def _may_fold(session: AsyncSession, count: int) -> bool:
    # Up to the audit's own one-statement bound: a scan's thousands keep their paged statements.
    return (
        FOLD_OPEN_WRITES and 0 < count <= audit.ONE_STATEMENT_ROWS
        and session.get_bind().dialect.name == "postgresql"
    )


async def _insert_folded(
    session: AsyncSession, rows: list[dict[str, Any]], ctx: Context
) -> tuple[dict[str, str], bool]:
    """_insert_rows on PostgreSQL, with the deliveries (routing.outbox) and the audit entries
    (audit) that enqueue and record_many would write for these alerts once in, as parts of the
    same statement (data-modifying CTEs). Those parts write only if every alert went in (the
    gate): then the rows are what the three statements write, ids drawn in the same order, and
    the second value is True. Otherwise (a live key taken, an id drawn twice) they write nothing
    and open_alerts goes on as without the fold (False). The deliveries' foreign key to their
    alert is checked at the statement's end, when the alert is in. Plans that cannot go as a
    part (an alert with no receiver: audited as unroutable) go the plain way."""
    # The transaction's connection first (the statement takes it anyway): whether the rows go
    # claimed to this process's worker is then asked after a trip, as the plain path asks it after
    # the alerts' insert (a worker starting beside the first alert has attached by then).
    await session.connection()
    candidates = [OpenedAlert(**row) for row in rows]
    folded = fold_deliveries(session, await plan_enqueue(session, candidates, "opened", ctx))
    if folded is None:
        return await _insert_rows(session, rows), False
    entries = entry_rows(ctx, _opened_entries(candidates))
    params = {
        **_pg_params(rows, "a_"), "a_count": len(rows), **folded.params("d_"),
        **pg_entries_params(entries, "e_"),
    }
    result = await fetch_in_transaction(session, _pg_folded_statement(), params)
    inserted = {key: alert_id for alert_id, key, _, _ in result}
    if len(inserted) != len(rows):
        return inserted, False
    _, _, audited, deliveries = result[0]
    if audited != len(entries):
        raise RuntimeError("audit entries' ids could not be matched to their rows")
    folded.written(session, deliveries)
    mark_audited(session)
    return inserted, True


@lru_cache(maxsize=1)
def _pg_folded_statement() -> TextClause:
    gate = "(SELECT every_in FROM fold_gate)"
    return text(
        f"WITH fold_alerts AS ({_pg_insert_sql('a_')}), "  # noqa: S608 (constants only)
        "fold_gate AS (SELECT count(*) = CAST(:a_count AS bigint) AS every_in FROM fold_alerts), "
        f"{pg_deliveries_cte('fold_deliveries', 'd_', gate)}, {pg_entries_ctes('e_', gate)} "
        "SELECT fold_alerts.id, fold_alerts.live_key, (SELECT count(*) FROM e_numbered), "
        "(SELECT array_agg(ARRAY[CAST(id AS varchar), alert_id, channel, target]) FROM fold_deliveries) "
        "FROM fold_alerts"
    )


# SQLite: built once, not per call (building it and its cache key was ~0.04 ms a lone event).
_SQLITE_INSERT = sqlite.insert(_ALERTS).on_conflict_do_nothing().returning(_ALERTS.c.id, _ALERTS.c.live_key)


# PostgreSQL: the rows as one array a column, unnested: one short statement, parsed and planned
# once, instead of SQLAlchemy's multi-row VALUES (18 bound parameters a row, pages of 1000
# rows), which took ~200 us an alert in the bench's first scan. The JSON columns go as text
# (json.dumps, as SQLAlchemy's JSON type sends them) and are cast back.
_PG_TYPES = {
    "id": "varchar", "kind": "varchar", "severity": "varchar", "visor_ref": "varchar", "team": "varchar",
    "subject": "varchar", "live_key": "varchar", "state": "varchar", "summary": "text", "details": "text",
    "owner": "varchar", "due_at": "timestamptz", "opened_at": "timestamptz", "opened_by_event": "varchar",
    "escalation_chain": "text", "escalation_step": "int", "next_escalation_at": "timestamptz",
    "version": "int",
}
_PG_COLUMNS = tuple(_PG_TYPES)
_PG_JSON = frozenset({"details", "escalation_chain"})
_PG_TIMES = tuple(c for c, t in _PG_TYPES.items() if t == "timestamptz")


def _pg_insert_sql(prefix: str = "") -> str:
    """The alerts' insert, its parameters named {prefix}{column}."""
    return (
        f"INSERT INTO {_ALERTS.name} ({', '.join(_PG_COLUMNS)}) "  # noqa: S608 (constants only)
        f"SELECT {', '.join(f'CAST({c} AS json)' if c in _PG_JSON else c for c in _PG_COLUMNS)} "
        f"FROM unnest({', '.join(f'CAST(:{prefix}{c} AS {t}[])' for c, t in _PG_TYPES.items())}) "
        f"AS rows ({', '.join(_PG_COLUMNS)}) "
        "ON CONFLICT DO NOTHING RETURNING id, live_key"
    )


_PG_INSERT = text(_pg_insert_sql())


def _draw_ids(n: int) -> list[str]:
    ids: set[str] = set()
    while len(ids) < n:
        ids.update(new_alert_ids(n - len(ids)))
    return list(ids)


async def _existing_live_keys(session: AsyncSession, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for part in chunked(session, keys):
        stmt = select(Alert.live_key).where(one_of(session, Alert.live_key, part))
        found.update(k for k in await session.scalars(stmt) if k is not None)
    return found


async def live_alert(session: AsyncSession, kind: str, visor_ref: str, subject: str) -> Alert | None:
    stmt = select(Alert).where(Alert.live_key == live_key(kind, visor_ref, subject))
    return (await session.execute(stmt)).scalar_one_or_none()


async def resolve(session: AsyncSession, alert: Alert, reason: str, ctx: Context) -> bool:
    """Resolve a live alert (with a row lock where the database has them). False if it was not live."""
    now = ctx.clock.now()
    result = await session.execute(
        update(Alert)
        .where(Alert.id == alert.id, Alert.state.in_(LIVE_STATES))
        .values(
            state="resolved", resolved_at=now, resolved_reason=reason[:200], live_key=None,
            next_escalation_at=None, version=Alert.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await session.refresh(alert)
    await enqueue(session, [alert], "resolved", ctx)
    await record(
        session, ctx, actor="system", action="alert.resolved", subject=alert.id,
        purpose=alert_purpose("alert.resolved", alert.kind), details={"reason": reason[:200]},
        nominals=nominals_of(alert.visor_ref),
    )
    return True


async def resolve_live(
    session: AsyncSession, kind: str, visor_ref: str, subject: str, reason: str, ctx: Context
) -> Alert | None:
    """Resolve the live alert with this key, if there is one; return it."""
    alert = await live_alert(session, kind, visor_ref, subject)
    if alert is not None and await resolve(session, alert, reason, ctx):
        return alert
    return None


async def raise_severity(
    session: AsyncSession,
    kind: str,
    visor_ref: str,
    subject: str,
    severity: str,
    ctx: Context,
    *,
    details: Mapping[str, Any] | None = None,
) -> Alert | None:
    """Raise the live alert with this key to `severity` if it is lower (never lower it); return
    the alert, or None if there is no live alert of the key or it is already that high.

    In the caller's transaction: the severity goes up (version + 1) by an UPDATE whose WHERE
    says the alert is still in the state read and still lower, so a racing acknowledgement,
    resolution or raise cannot be overwritten; `details` (the rule's current view, e.g.
    days_overdue) is merged into the alert's. An open alert's escalation chain is re-armed for
    the new severity from now (as open_alerts sets it); an acknowledged one stays acknowledged
    and does not escalate again. Either way the receivers are told again ("raised": the kind's
    route and everyone who heard of the alert) and the raise is audited.
    """
    if severity not in SEVERITY_RANK:
        raise ValueError(f"unknown severity {severity!r}")
    lower = [s for s in SEVERITIES if SEVERITY_RANK[s] > SEVERITY_RANK[severity]]
    key = live_key(kind, visor_ref, subject)
    now = ctx.clock.now()
    for _ in range(_RAISE_ATTEMPTS):
        alert = (
            await session.execute(
                select(Alert).where(Alert.live_key == key).execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()
        if alert is None or alert.state not in LIVE_STATES or alert.severity not in lower:
            return None
        was, state = alert.severity, alert.state
        values: dict[str, Any] = {"severity": severity, "version": Alert.version + 1}
        if details:
            values["details"] = {**(alert.details or {}), **details}
        if state == "open":
            chain = chain_for(kind, severity, ctx)
            first_wait = chain[0].get("after_seconds") if chain else None
            values.update(
                escalation_chain=chain, escalation_step=0,
                next_escalation_at=now + timedelta(seconds=first_wait) if first_wait is not None else None,
            )
        result = await session.execute(
            update(Alert)
            .where(Alert.id == alert.id, Alert.state == state, Alert.severity.in_(lower))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            break
    else:
        return None
    await session.refresh(alert)
    days = (details or {}).get("days_overdue")  # the rule's count now, not the stored one
    why = {"days_overdue": days} if isinstance(days, int) and not isinstance(days, bool) else {}
    await enqueue(session, [alert], "raised", ctx, extra={alert.id: {"raised_from": was, **why}})
    await record(
        session, ctx, actor="system", action="alert.severity_raised", subject=alert.id,
        purpose=alert_purpose("alert.severity_raised", alert.kind),
        details={"from": was, "to": severity, **why}, nominals=nominals_of(alert.visor_ref),
    )
    return alert


async def acknowledge(
    session: AsyncSession,
    alert_id: str,
    officer_id: str,
    via: str,
    ctx: Context,
    *,
    outcome: str | None = None,
) -> AckOutcome:
    """Acknowledge as `officer_id` (via "slack_command", "slack_button" or "api"): record who,
    when and the outcome (what was done; authority.clean_outcome rules, OutcomeError if broken),
    stop escalation, and enqueue the "acknowledged" updates. The alert id is matched
    case-insensitively. The first acknowledgement stands: a later one changes nothing.

    Only who authority.may_acknowledge allows: anyone else gets "refused" with no alert (so
    the caller can say nothing about it), and the refusal is audited.
    """
    outcome = clean_outcome(outcome)
    alert = await session.get(Alert, normalise_alert_id(alert_id))
    if alert is None:
        return AckOutcome("unknown", None)
    if not may_acknowledge(alert, await _acknowledger(session, officer_id), ctx.settings):
        await record(
            session, ctx, actor=officer_id, action="alert.ack_refused", subject=alert.id,
            purpose="acknowledgement refused: not the alert's team or owner, the control room or an admin",
            details={"via": via}, nominals=nominals_of(alert.visor_ref),
        )
        return AckOutcome("refused", None)
    now = ctx.clock.now()
    # A conditional update is the arbiter when ack, escalation and auto-resolve race each other.
    result = await session.execute(
        update(Alert)
        .where(Alert.id == alert.id, Alert.state == "open")
        .values(
            state="acknowledged", acknowledged_by=officer_id, acknowledged_at=now,
            acknowledged_outcome=outcome, next_escalation_at=None, version=Alert.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    await session.refresh(alert)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        status: AckStatus = "resolved" if alert.state == "resolved" else "already_acknowledged"
        return AckOutcome(status, alert)
    session.add(Acknowledgement(alert_id=alert.id, officer_id=officer_id, via=via, acknowledged_at=now))
    await enqueue(session, [alert], "acknowledged", ctx)
    details: dict[str, Any] = {"via": via}
    if outcome is not None:
        details["outcome"] = outcome
    await record(
        session, ctx, actor=officer_id, action="alert.acknowledged", subject=alert.id,
        purpose=alert_purpose("alert.acknowledged", alert.kind), details=details,
        nominals=nominals_of(alert.visor_ref),
    )
    return AckOutcome("acknowledged", alert)


async def _acknowledger(session: AsyncSession, officer_id: str) -> Acknowledger | None:
    officer = await session.get(Officer, officer_id)
    if officer is None:
        return None
    return Acknowledger(officer.id, officer.team, frozenset(str(r) for r in officer.roles or ()))
