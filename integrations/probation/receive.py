"""Taking the items of one request: each is accepted (mapped to our events and ingested),
a duplicate (its events were stored before), ignored (not for casewatch: an unknown type, a person
who is not a nominal, nothing to change), or kept for a person (a known type that cannot be read).
Nothing is lost: everything is answered and counted, and what cannot be read is kept."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import Counter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.context import Context
from casewatch.ingest.inbound import keep
from casewatch.ingest.pipeline import IngestResult
from casewatch.ingest.schema import parse_envelopes
from casewatch.model.events import Envelope
from casewatch.store.models import Event
from integrations.probation.envelope import Item, Unreadable, digest
from integrations.probation.mapping import (
    SOURCE,
    Ignored,
    Intent,
    LevelIntent,
    NominalView,
    interpret,
    known_types,
    to_envelopes,
)
from integrations.probation.people import Directory

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/json"
OTHER = "other"
# The outcome label's values: a fixed set whatever arrives.
IGNORED_REASONS = (
    "unknown_type", "unknown_person", "not_mappa", "not_a_release", "not_a_recall_return", "no_change",
    "older_than_stored", "not_current_registration", "category_only",
)
RESULTS = ("accepted", "duplicate", "ignored", "kept")
OUTCOMES = ("accepted", "duplicate", "kept", *(f"ignored_{reason}" for reason in IGNORED_REASONS))


def make_counter(registry: Any) -> Counter:
    return Counter(
        "casewatch_probation_events",
        "HMPPS domain events received, by outcome (accepted, duplicate, kept for a person, "
        "ignored_<why>) and event type (the mapped types, else \"other\")",
        ["outcome", "event_type"],
        registry=registry,
    )


@dataclass
class Outcome:
    index: int
    event_type: str  # a known type or OTHER: safe to show and to use as a label
    outcome: str = "ignored"  # accepted | duplicate | ignored | kept
    reason: str | None = None  # why ignored or kept (fixed words)
    events: list[str] = field(default_factory=list)
    item: int | None = None  # the inbound item a kept one is

    def as_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"index": self.index, "event_type": self.event_type, "outcome": self.outcome}
        if self.reason is not None:
            found["reason"] = self.reason
        if self.events:
            found["events"] = self.events
        if self.item is not None:
            found["item"] = self.item
        return found

    @property
    def label(self) -> str:
        return f"ignored_{self.reason}" if self.outcome == "ignored" else self.outcome


@dataclass
class _Planned:
    item: Item
    outcome: Outcome
    intent: Intent
    event_id: str


def event_id_of(item: Item) -> str:
    """Our event's id: derived from the domain event (SNS MessageId, else its canonical hash)."""
    return f"probation-{item.external_id}"


Store = Callable[[Sequence[Envelope]], Awaitable[IngestResult]]


async def receive(
    items: Sequence[Item],
    readers: async_sessionmaker[AsyncSession],
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    counter: Counter,
    store: Store,
) -> dict[str, Any]:
    """Take the items (see the module's docstring) and say what happened, as the events API
    does: accepted, duplicates, ignored, kept, the alerts opened, and each item's outcome.
    `readers` read what comes before (redeliveries, the nominals named); `store` ingests our
    events (GroupCommit.ingest, or pipeline.ingest with source "probation"); `sessions` keep
    what cannot be read."""
    settings = ctx.settings.probation
    known = known_types(settings)
    tz = ZoneInfo(ctx.settings.service.timezone)
    outcomes: list[Outcome] = []
    planned: list[_Planned] = []
    to_keep: list[tuple[Item, Outcome]] = []
    first_with: dict[str, Item] = {}  # the first item of this request with each id
    for index, item in enumerate(items):
        outcome = Outcome(index, item.event_type if item.event_type in known else OTHER)
        outcomes.append(outcome)
        earlier = first_with.setdefault(item.external_id, item)
        # A hashed id is the same event (perhaps reworded); one MessageId the same message.
        same = earlier.content == item.content or not item.external_id.startswith("sns-")
        if item.event_type is not None and item.event_type not in known:
            outcome.reason = "unknown_type"  # not ours, whether or not the rest could be read
        elif earlier is not item and same:
            outcome.outcome = "duplicate"  # e.g. SQS delivered it twice in one receive
        elif earlier is not item:
            # One MessageId on two different events: a bridge's or a forger's mistake; the id is
            # the first one's, so this one is kept under the hash of what it is.
            outcome.reason = "another event in this request has the same MessageId"
            to_keep.append((replace(item, external_id=digest(item.content)), outcome))
        elif item.event is None:
            outcome.reason = item.problem
            to_keep.append((item, outcome))
        else:
            try:
                intent = interpret(item.event, settings, tz)
            except Unreadable as exc:
                outcome.reason = str(exc)
                to_keep.append((item, outcome))
                continue
            if isinstance(intent, Ignored):
                outcome.reason = intent.reason
            else:
                planned.append(_Planned(item, outcome, intent, event_id_of(item)))

    alerts: list[str] = []
    skew = ctx.settings.ingest.max_clock_skew_seconds
    envelopes = await _map(planned, readers, to_keep, ctx.clock.now(), skew)
    if envelopes:
        result = await store(envelopes)
        alerts.extend(result.alerts)
        for plan in planned:
            if plan.outcome.events:
                stored = all(event_id in result.stored for event_id in plan.outcome.events)
                plan.outcome.outcome = "accepted" if stored else "duplicate"
    if to_keep:
        alerts.extend(await _keep(to_keep, sessions, ctx))

    for outcome in outcomes:
        counter.labels(outcome.label, outcome.event_type).inc()
    tally = {name: sum(1 for o in outcomes if o.outcome == name) for name in RESULTS}
    log.info(
        "probation: %d item(s): %d accepted, %d duplicate, %d ignored, %d kept",
        len(outcomes), tally["accepted"], tally["duplicate"], tally["ignored"], tally["kept"],
    )
    return {
        "accepted": tally["accepted"],
        "duplicates": tally["duplicate"],
        "ignored": tally["ignored"],
        "kept": tally["kept"],
        "alerts": alerts,
        "items": [o.as_json() for o in outcomes],
    }


async def _map(
    planned: list[_Planned],
    sessions: async_sessionmaker[AsyncSession],
    to_keep: list[tuple[Item, Outcome]],
    now: datetime,
    skew_seconds: int,
) -> list[Envelope]:
    """The validated envelopes of the planned items, in order; a redelivery (its event stored
    before) is a duplicate before anything is read of the nominal, whose level may have changed
    since. An event about a nominal said to happen more than `skew_seconds` after `now` is kept:
    stored, it would be the nominal's newest state and every real change after it would be stale
    (the core refuses it too, parse_envelopes). Fills in each item's outcome."""
    if not planned:
        return []
    async with sessions() as session:
        ids = [p.event_id for p in planned]
        seen = set((await session.execute(select(Event.id).where(Event.id.in_(ids)))).scalars())
        fresh = [p for p in planned if p.event_id not in seen]
        directory = await Directory.load(session, [p.item.event.identifiers for p in fresh if p.item.event])
        await directory.load_level_registrations(session, _ended_by(fresh, directory))
    # The nominals as level changes earlier in this request left them, by visor_ref.
    changed: dict[str, NominalView] = {}
    latest = now + timedelta(seconds=skew_seconds)
    envelopes: list[Envelope] = []
    for plan in planned:
        event, outcome = plan.item.event, plan.outcome
        assert event is not None
        if plan.event_id in seen:
            outcome.outcome, outcome.events = "duplicate", [plan.event_id]
            continue
        match = directory.match(event.identifiers)
        if match.conflict is not None:
            outcome.reason = match.conflict
            to_keep.append((plan.item, outcome))
            continue
        if match.nominal is None:
            outcome.reason = "unknown_person"
            continue
        if event.occurred_at > latest:
            outcome.reason = "occurredAt is in the future"
            to_keep.append((plan.item, outcome))
            continue
        nominal = changed.get(match.nominal.visor_ref, match.nominal)
        mapped = to_envelopes(plan.intent, event, nominal, plan.event_id)
        if isinstance(mapped, Ignored):
            outcome.reason = mapped.reason
            continue
        valid, errors = parse_envelopes(mapped, now=now, max_ahead_seconds=skew_seconds)
        if errors:
            first = errors[0]
            where = first.field or "event"
            outcome.reason = f"it maps to an event casewatch refuses ({where}: {first.message})"
            to_keep.append((plan.item, outcome))
            continue
        if isinstance(plan.intent, LevelIntent):
            changed[nominal.visor_ref] = replace(
                nominal, mappa_level=plan.intent.to_level, level_as_of=event.occurred_at,
                level_registration=plan.intent.registration_id,
            )
        outcome.events = [raw["id"] for raw in mapped]
        outcome.reason = None
        envelopes.extend(valid)
    return envelopes


def _ended_by(planned: list[_Planned], directory: Directory) -> set[str]:
    """The nominals a deregistration or deletion among these items names."""
    refs = set()
    for plan in planned:
        if isinstance(plan.intent, LevelIntent) and plan.intent.to_level is None and plan.item.event:
            nominal = directory.match(plan.item.event.identifiers).nominal
            if nominal is not None:
                refs.add(nominal.visor_ref)
    return refs


async def _keep(
    to_keep: list[tuple[Item, Outcome]], sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> list[str]:
    """Keep each unreadable item for a person (one transaction); the alerts opened."""
    team = ctx.settings.probation.team or None
    opened: list[str] = []
    async with sessions() as session, session.begin():
        for item, outcome in to_keep:
            kept = await keep(
                session, ctx, source=SOURCE, external_id=item.external_id,
                reason=outcome.reason or "could not be read", content=item.content,
                media_type=MEDIA_TYPE, team=team,
            )
            outcome.outcome, outcome.item = "kept", kept.item_id
            if kept.alert_id is not None and not kept.duplicate:
                opened.append(kept.alert_id)
    return opened
