"""The append-only audit log: what was shared or looked up, with whom, when and why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from casewatch.context import Context
from casewatch.store.models import AuditEntry


def _values(
    ctx: Context, actor: str, action: str, subject: str, purpose: str, details: Mapping[str, Any] | None
) -> dict[str, Any]:
    return dict(
        at=ctx.clock.now(), actor=actor[:100], action=action[:64], subject=subject[:200],
        purpose=purpose[:200], details=dict(details or {}),
    )


async def record(
    session: AsyncSession,
    ctx: Context,
    *,
    actor: str,
    action: str,
    subject: str = "",
    purpose: str = "",
    details: Mapping[str, Any] | None = None,
) -> None:
    """Add an audit entry to the caller's transaction. Never put personal data in `details`
    beyond what the action itself shared (a ViSOR reference, an alert id, an officer id)."""
    session.add(AuditEntry(**_values(ctx, actor, action, subject, purpose, details)))


_INSERT = insert(AuditEntry.metadata.tables[AuditEntry.__tablename__])


async def record_row(
    connection: AsyncConnection,
    ctx: Context,
    *,
    actor: str,
    action: str,
    subject: str = "",
    purpose: str = "",
    details: Mapping[str, Any] | None = None,
) -> None:
    """The same entry as record(), inserted at once as Core on the transaction's connection
    (`await session.connection()`): for hot read paths, where the ORM flush costs more than the
    read it audits."""
    await connection.execute(_INSERT, _values(ctx, actor, action, subject, purpose, details))
