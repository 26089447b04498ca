"""Opening, acknowledging and resolving alerts: the only code that changes an alert's state.

Every change writes its outbox rows (routing.outbox.enqueue) and an audit entry in the caller's
transaction, so an alert never changes without the people who must hear of it being queued.
At most one live (open or acknowledged) alert exists per (kind, visor_ref, subject): the
`live_key` column is unique while the alert lives and NULL once it is resolved.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.audit import record
from casewatch.context import Context
from casewatch.routing.escalation import chain_for
from casewatch.routing.outbox import enqueue
from casewatch.store.models import Acknowledgement, Alert

Severity = Literal["critical", "high", "medium", "low"]
SEVERITY_RANK: dict[str, int] = {"critical": 0, "high": 1, "medium": 2, "low": 3}
LIVE_STATES = ("open", "acknowledged")

# Crockford base32 without 0/1 (read as O/I): unambiguous when read out or typed.
_ID_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
_ID_LENGTH = 6

AckStatus = Literal["acknowledged", "already_acknowledged", "resolved", "unknown"]


@dataclass(frozen=True)
class AlertSpec:
    """What a rule asks for. `summary` is what chat may carry: no names, no markers."""

    kind: str
    severity: Severity
    visor_ref: str
    team: str
    subject: str = ""
    summary: str = ""
    owner: str | None = None
    due_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def live_key(self) -> str:
        return live_key(self.kind, self.visor_ref, self.subject)


@dataclass(frozen=True)
class AckOutcome:
    status: AckStatus
    alert: Alert | None


def live_key(kind: str, visor_ref: str, subject: str) -> str:
    return f"{kind}|{visor_ref}|{subject}"


def new_alert_id() -> str:
    return "A-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))


def normalise_alert_id(text: str) -> str:
    """What a person typed (`a-7k3q9m`, ` A7K3Q9M `) as a stored id."""
    raw = text.strip().upper().replace(" ", "")
    if raw.startswith("A-"):
        raw = raw[2:]
    elif raw.startswith("A") and len(raw) == _ID_LENGTH + 1:
        raw = raw[1:]
    return "A-" + raw


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Alert)


async def open_alert(
    session: AsyncSession, spec: AlertSpec, ctx: Context, *, event_id: str | None = None
) -> Alert | None:
    """Open the alert unless a live one with the same key exists. Returns the new alert, or None.

    Safe under concurrent ingests: the insert is ON CONFLICT DO NOTHING on the live key, so two
    transactions racing to open the same alert leave exactly one.
    """
    now = ctx.clock.now()
    chain = chain_for(spec.kind, spec.severity, ctx)
    first_wait = chain[0].get("after_seconds") if chain else None
    for _ in range(5):
        alert_id = new_alert_id()
        values = dict(
            id=alert_id,
            kind=spec.kind,
            severity=spec.severity,
            visor_ref=spec.visor_ref,
            team=spec.team,
            subject=spec.subject,
            live_key=spec.live_key,
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
        if await session.get(Alert, alert_id) is not None:
            continue  # an id collision: draw again
        stmt = _insert(session).values(**values).on_conflict_do_nothing(index_elements=["live_key"])
        result = await session.execute(stmt.returning(Alert.id))
        if result.scalar_one_or_none() is None:
            return None  # a live alert with this key exists already
        alert = await session.get(Alert, alert_id)
        assert alert is not None
        await enqueue(session, alert, "opened", ctx)
        await record(
            session, ctx, actor="system", action="alert.opened", subject=alert.id,
            purpose=alert.kind, details={"visor_ref": alert.visor_ref, "severity": alert.severity},
        )
        return alert
    raise RuntimeError("could not draw an unused alert id")


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
    await enqueue(session, alert, "resolved", ctx)
    await record(
        session, ctx, actor="system", action="alert.resolved", subject=alert.id,
        purpose=alert.kind, details={"reason": reason[:200]},
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


async def acknowledge(
    session: AsyncSession, alert_id: str, officer_id: str, via: str, ctx: Context
) -> AckOutcome:
    """Acknowledge as `officer_id` (via "slack_command", "slack_button" or "api"): record who and
    when, stop escalation, and enqueue the "acknowledged" updates. Idempotent; the alert id is
    matched case-insensitively."""
    alert = await session.get(Alert, normalise_alert_id(alert_id))
    if alert is None:
        return AckOutcome("unknown", None)
    now = ctx.clock.now()
    # A conditional update is the arbiter when ack, escalation and auto-resolve race each other.
    result = await session.execute(
        update(Alert)
        .where(Alert.id == alert.id, Alert.state == "open")
        .values(
            state="acknowledged", acknowledged_by=officer_id, acknowledged_at=now,
            next_escalation_at=None, version=Alert.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    await session.refresh(alert)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        status: AckStatus = "resolved" if alert.state == "resolved" else "already_acknowledged"
        return AckOutcome(status, alert)
    session.add(Acknowledgement(alert_id=alert.id, officer_id=officer_id, via=via, acknowledged_at=now))
    await enqueue(session, alert, "acknowledged", ctx)
    await record(
        session, ctx, actor=officer_id, action="alert.acknowledged", subject=alert.id,
        purpose=alert.kind, details={"via": via},
    )
    return AckOutcome("acknowledged", alert)


async def count_live(session: AsyncSession) -> int:
    stmt = select(func.count()).select_from(Alert).where(Alert.state.in_(LIVE_STATES))
    return int((await session.execute(stmt)).scalar_one())
