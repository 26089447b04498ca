"""Applying a rule's result: opens, raises and resolves through alerts.lifecycle, the only way
alert state changes. Opening is idempotent (one live alert per key), so re-running changes nothing.
A spec for a key that is live at a lower severity raises that alert (and re-notifies); a
severity is never lowered.

Opens may be deferred (`defer=True`) and then opened together by `Tally.flush`, in one batch of
statements (alerts.lifecycle.open_alerts) instead of a dozen round trips per alert. The caller
flushes before its transaction ends, and before reading live alerts of a kind it has deferred;
`apply` itself flushes before resolving a key that is waiting to be opened.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.alerts.lifecycle import open_alerts, raise_severity, resolve_live
from casewatch.context import Context
from casewatch.model.alerts import SEVERITY_RANK, AlertSpec
from casewatch.model.results import LiveAlert, RuleResult


@dataclass
class Tally:
    opened_ids: list[str] = field(default_factory=list)
    opened: Counter[str] = field(default_factory=Counter)
    resolved: Counter[str] = field(default_factory=Counter)
    raised: Counter[str] = field(default_factory=Counter)
    reminded: Counter[str] = field(default_factory=Counter)  # by the scan (alerts.reminders)
    # Deferred opens, in the order asked for, with the event that asked.
    pending: list[tuple[AlertSpec, str | None]] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.opened_ids.extend(other.opened_ids)
        self.opened.update(other.opened)
        self.resolved.update(other.resolved)
        self.raised.update(other.raised)
        self.reminded.update(other.reminded)
        self.pending.extend(other.pending)

    def pending_kinds(self) -> set[str]:
        return {spec.kind for spec, _ in self.pending}

    async def flush(self, session: AsyncSession, ctx: Context) -> None:
        """Open the deferred alerts in one batch."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        alerts = await open_alerts(session, [s for s, _ in batch], ctx, [e for _, e in batch])
        for (spec, _), alert in zip(batch, alerts, strict=True):
            if alert is not None:
                self.opened_ids.append(alert.id)
                self.opened[spec.kind] += 1

    async def flush_for(self, session: AsyncSession, ctx: Context, kinds: Collection[str]) -> None:
        """Flush if any deferred open is of one of `kinds` (about to be read as live)."""
        if not self.pending_kinds().isdisjoint(kinds):
            await self.flush(session, ctx)


async def apply(
    session: AsyncSession,
    result: RuleResult,
    ctx: Context,
    *,
    event_id: str | None = None,
    live: Collection[LiveAlert] = (),
    open_new: bool = True,
    tally: Tally | None = None,
    defer: bool = False,
) -> Tally:
    """`live`: alerts known to be live already, whose opens are skipped without a query; one
    whose severity (when known) is lower than its spec's is raised to it, now (not deferred).
    `open_new=False` applies only the resolutions (time-driven rules run from an event).
    `defer=True` queues the opens on the tally for `Tally.flush` (the caller must flush)."""
    tally = tally if tally is not None else Tally()
    known = {(a.kind, a.visor_ref, a.subject): a.severity for a in live}
    if result.resolves and tally.pending:
        waiting = {(s.kind, s.visor_ref, s.subject) for s, _ in tally.pending}
        if any((r.alert.kind, r.alert.visor_ref, r.alert.subject) in waiting for r in result.resolves):
            await tally.flush(session, ctx)
    for resolution in result.resolves:
        a = resolution.alert
        if await resolve_live(session, a.kind, a.visor_ref, a.subject, resolution.reason, ctx):
            tally.resolved[a.kind] += 1
    if open_new:
        for spec in result.opens:
            key = (spec.kind, spec.visor_ref, spec.subject)
            if key not in known:
                tally.pending.append((spec, event_id))
            elif _higher(spec.severity, known[key]):
                raised = await raise_severity(
                    session, spec.kind, spec.visor_ref, spec.subject, spec.severity, ctx,
                    details=spec.details,
                )
                if raised is not None:
                    tally.raised[spec.kind] += 1
        if not defer:
            await tally.flush(session, ctx)
    return tally


def _higher(wanted: str, live: str) -> bool:
    """Is `wanted` a higher severity than `live`? Unknown ("": a LiveAlert built without its
    severity) is never raised from."""
    return live in SEVERITY_RANK and SEVERITY_RANK[wanted] < SEVERITY_RANK[live]
