"""Applying a rule's result: opens and resolves through alerts.lifecycle, the only way alert
state changes. Opening is idempotent (one live alert per key), so re-running changes nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.alerts.lifecycle import open_alert, resolve_live
from casewatch.context import Context
from casewatch.triggers.result import LiveAlert, RuleResult


@dataclass
class Tally:
    opened_ids: list[str] = field(default_factory=list)
    opened: Counter[str] = field(default_factory=Counter)
    resolved: Counter[str] = field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        self.opened_ids.extend(other.opened_ids)
        self.opened.update(other.opened)
        self.resolved.update(other.resolved)


async def apply(
    session: AsyncSession,
    result: RuleResult,
    ctx: Context,
    *,
    event_id: str | None = None,
    live: Collection[LiveAlert] = (),
    open_new: bool = True,
    tally: Tally | None = None,
) -> Tally:
    """`live`: alerts known to be live already, whose opens are skipped without a query.
    `open_new=False` applies only the resolutions (time-driven rules run from an event)."""
    tally = tally if tally is not None else Tally()
    known = {(a.kind, a.visor_ref, a.subject) for a in live}
    for resolution in result.resolves:
        a = resolution.alert
        if await resolve_live(session, a.kind, a.visor_ref, a.subject, resolution.reason, ctx):
            tally.resolved[a.kind] += 1
    if open_new:
        for spec in result.opens:
            if (spec.kind, spec.visor_ref, spec.subject) in known:
                continue
            alert = await open_alert(session, spec, ctx, event_id=event_id)
            if alert is not None:
                tally.opened_ids.append(alert.id)
                tally.opened[spec.kind] += 1
    return tally
