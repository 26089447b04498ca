"""Ingest: store validated events, apply them to the case store and run the event-driven rules,
all in one transaction.

Idempotency rests on the database, not on a read-before-write: events are inserted with
INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id, so an id seen before, repeated in the batch
or posted concurrently by another request is a duplicate and changes nothing. On PostgreSQL a
concurrent insert of the same id waits for the other transaction and then finds the conflict.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import ReturningInsert

from casewatch.context import Context
from casewatch.ingest import arrays
from casewatch.ingest.apply import Batch, apply_event
from casewatch.ingest.plans import plan_for_these_keys
from casewatch.model.events import Envelope
from casewatch.routing.outbox import hold_nominals
from casewatch.store.direct_read import fetch_in_transaction
from casewatch.store.models import Event
from casewatch.triggers.applied import Applied
from casewatch.triggers.dispatch import on_applied

log = logging.getLogger(__name__)

# Transient conflicts between concurrent ingests (two first upserts of one nominal, a deadlock
# between batches touching the same nominals in a different order): the whole transaction is
# retried after a backoff with jitter; the event-id idempotency makes that safe.
_ATTEMPTS = 4
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "23505"})
_BACKOFF_BASE_SECONDS = 0.05
_BACKOFF_CAP_SECONDS = 1.0
_RNG = random.Random()

Sleep = Callable[[float], Awaitable[None]]

# Batches of this many new events or more plan their reads for their own keys (ingest.plans): an
# import's chunks and large API batches, whose IN lists run to hundreds of keys. A request's or a
# group commit's few events are left to the plan cache: one round trip more is a visible share of
# those short transactions.
PLANNED_FOR_THEIR_KEYS_FROM = 100


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    alerts: list[str] = field(default_factory=list)  # ids of alerts these events opened
    retries: int = 0  # transient conflicts (deadlock, serialization failure) retried
    stored: set[str] = field(default_factory=set)  # ids of the events stored (not duplicates)


async def ingest(
    sessions: async_sessionmaker[AsyncSession],
    envelopes: Sequence[Envelope],
    ctx: Context,
    *,
    source: str,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random = _RNG,
) -> IngestResult:
    """Store the events (a duplicate id changes nothing, also under concurrent posts), apply each
    new one to the case state, run triggers.dispatch.on_applied, and commit before returning.
    A deadlock or serialization failure retries the whole transaction (at most _ATTEMPTS in all)."""
    result, _ = await _ingest_with_retries(sessions, envelopes, ctx, source, sleep, rng, _no_refs)
    return result


async def _no_refs(session: AsyncSession, alert_ids: Sequence[str]) -> dict[str, str]:
    return {}


AlertRefs = Callable[[AsyncSession, Sequence[str]], Awaitable[dict[str, str]]]


async def _ingest_with_retries(
    sessions: async_sessionmaker[AsyncSession],
    envelopes: Sequence[Envelope],
    ctx: Context,
    source: str,
    sleep: Sleep,
    rng: random.Random,
    alert_refs: AlertRefs,
) -> tuple[IngestResult, dict[str, str]]:
    """One ingest transaction, retried on transient conflicts; also returns `alert_refs` of the
    alerts it opened, read inside the transaction."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with sessions() as session, session.begin():
                result = await _ingest_in(session, envelopes, ctx, source=source)
                refs = await alert_refs(session, result.alerts) if result.alerts else {}
            result.retries = attempt - 1
            return result, refs
        except DBAPIError as exc:
            if attempt == _ATTEMPTS or not _retryable(exc):
                raise
            delay = retry_delay(attempt, rng)
            log.warning(
                "ingest: transient conflict (%s); retry %d of %d in %.0f ms",
                _sqlstate(exc), attempt, _ATTEMPTS - 1, delay * 1000,
            )
            await sleep(delay)
    raise AssertionError("unreachable")


def retry_delay(attempt: int, rng: random.Random) -> float:
    """Seconds before retry number `attempt`: doubling from 50 ms up to 1 s, drawn from the upper
    half, so that transactions which deadlocked each other do not meet again in step."""
    delay = min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2.0 ** (attempt - 1))
    return delay / 2 + rng.uniform(0.0, delay / 2)


async def _ingest_in(
    session: AsyncSession, envelopes: Sequence[Envelope], ctx: Context, *, source: str
) -> IngestResult:
    first_of_id: dict[str, Envelope] = {}
    for envelope in envelopes:
        first_of_id.setdefault(envelope.id, envelope)
    result = IngestResult(duplicates=len(envelopes) - len(first_of_id))
    if not first_of_id:
        return result

    now = ctx.clock.now()
    # Sorted by id: concurrent batches sharing ids then lock them in one order (no deadlock).
    rows = [
        {
            "id": e.id,
            "type": e.type,
            "visor_ref": e.visor_ref,
            "occurred_at": e.occurred_at,
            "received_at": now,
            "source": source[:16],
            "data": e.raw,
        }
        for e in sorted(first_of_id.values(), key=lambda e: e.id)
    ]
    inserted = await _store_events(session, rows)
    stored = {row["id"] for row in rows if row["id"] in inserted}
    result.duplicates += len(first_of_id) - len(stored)
    result.accepted = len(stored)
    result.stored = stored
    if not stored:
        return result

    new = [e for e in first_of_id.values() if e.id in stored]
    if len(new) >= PLANNED_FOR_THEIR_KEYS_FROM:
        await plan_for_these_keys(session)
    batch = await Batch.load(session, new)
    applied: list[Applied] = []
    for envelope in new:
        applied.append(await apply_event(session, envelope, ctx, source=source, batch=batch))
    writes = await batch.finish(session, defer=DEFER_WRITES and _on_postgres(session))
    if writes is not None and (session.new or session.dirty or session.deleted):
        await writes.run(session)  # the flush has work: the writes go first, as without deferring
        writes = None
    await session.flush()
    hold_nominals(session, batch.nominals)  # the outbox routes by them without reading them again
    result.alerts = list(await on_applied(session, applied, ctx, batch.nominals, batch.checks, writes=writes))
    return result


# PostgreSQL: the batch's writes (Batch.finish) handed to the rules, which send them as parts of
# their first statement, the live-alert read, when nothing runs before it (triggers.dispatch);
# False: one statement of their own, as before (A/B).
DEFER_WRITES = True


def _on_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def _store_events(session: AsyncSession, rows: list[dict[str, Any]]) -> set[str]:
    """INSERT the rows ON CONFLICT (id) DO NOTHING; the ids stored. On PostgreSQL (Batch.array_events)
    as one array a column (ingest.arrays), else one cached statement run as executemany, which
    SQLAlchemy batches into multi-row INSERT ... VALUES ... RETURNING id ("insertmanyvalues")."""
    if Batch.array_events and session.get_bind().dialect.name == "postgresql":
        keys = tuple(rows[0])  # the rows' own columns: one list of them, where the rows are made
        statement = arrays.returning_insert_statement(_EVENTS, keys, "id", "id")
        return {row.id for row in await fetch_in_transaction(session, statement, arrays.columns(rows, keys))}
    return set((await session.execute(_insert_events(session), rows)).scalars())


def _insert_events(session: AsyncSession) -> ReturningInsert[str]:
    return _insert_events_for(session.get_bind().dialect.name)


_EVENTS = Event.metadata.tables[Event.__tablename__]


@cache
def _insert_events_for(dialect: str) -> ReturningInsert[str]:
    """INSERT INTO events ... ON CONFLICT (id) DO NOTHING RETURNING id, built once a dialect."""
    # The Core table, not the mapped class: a plain executemany, not an ORM bulk insert.
    insert = postgresql.insert(_EVENTS) if dialect == "postgresql" else sqlite.insert(_EVENTS)
    return insert.on_conflict_do_nothing(index_elements=["id"]).returning(Event.id)


def _sqlstate(exc: DBAPIError) -> str | None:
    orig: Any = exc.orig
    for candidate in (orig, getattr(orig, "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def _retryable(exc: DBAPIError) -> bool:
    code = _sqlstate(exc)
    if code is not None:
        return code in _RETRYABLE_SQLSTATES
    return False  # SQLite serialises writers (BEGIN IMMEDIATE): nothing there is a race
