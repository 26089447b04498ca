"""The short ways of an ingest transaction, each against the plain way it replaces, with the same
traffic on SQLite and PostgreSQL: the rules' up-front reads (casewatch.triggers.dispatch
_Run.prefetch: the nominals' facts taken from the rows the ingest holds, Batch.nominals, flushed,
instead of read again; the live notification, visit and action alerts in one statement instead of
three) and its writes (Batch.core_writes: new actions and the notification dates of known
nominals as Core statements instead of the ORM's flush). The same answers, alerts (kind, state,
severity, subject), audit rows, nominal and action rows, row by row; and the facts taken from the
held rows equal those read from the database."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select

from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.ingest.apply import Batch, apply_event
from casewatch.ingest.pipeline import IngestResult, ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.model.events import Envelope
from casewatch.store.models import Action, Alert, AuditEntry, Nominal
from casewatch.triggers import dispatch, load
from casewatch.triggers.scan import run_scan
from casewatch.wiring import Service, stop
from tests.support import envelope, make_service, nominal_data
from tests.test_triggers_case_data import utc

NOW = "2026-11-20T09:00:00Z"
SETUP_AT = "2026-07-01T00:00:00Z"
EVENTS_AT = "2026-11-20T08:00:00Z"  # before NOW: not in the future
ROLES = ("visit", "notified", "action", "rise", "first", "unknown", "quiet")


@pytest.fixture(name="service")
async def service_fixture(db_url: str) -> AsyncIterator[Service]:
    """A service on a fixed clock (NOW); other ingest test files import it."""
    svc = await make_service(db_url, clock=FixedClock(utc(NOW)))
    try:
        yield svc
    finally:
        await stop(svc)


def _ref(base: int, role: str) -> str:
    return f"VS-{base + ROLES.index(role):07d}"


def _setup(base: int, tag: str) -> list[dict[str, Any]]:
    """Nominals whose scan opens a visit, a notification and an action alert (all resolved later by
    one event), one whose level rises, one told nothing."""

    def upsert(role: str, **data: Any) -> dict[str, Any]:
        return envelope("nominal.upsert", nominal_data(**data), id=f"{tag}-setup-{role}",
                        visor_ref=_ref(base, role), occurred_at=SETUP_AT)

    return [
        upsert("visit", risk_level="high"),
        envelope("visit.recorded", {"visited_on": "2026-08-01"}, id=f"{tag}-setup-visited",
                 visor_ref=_ref(base, "visit"), occurred_at="2026-08-01T08:00:00Z"),
        upsert("notified", last_notification_on="2025-11-01"),
        upsert("action"),
        envelope("action.upsert", id=f"{tag}-setup-act", visor_ref=_ref(base, "action"),
                 occurred_at="2026-10-01T00:00:00Z", action_id=f"A-{tag}", due_on="2026-11-01"),
        upsert("rise"),
        upsert("quiet", last_notification_on="2026-11-01"),
    ]


def _traffic(base: int, tag: str) -> list[dict[str, Any]]:
    def event(type_: str, role: str, n: int = 0, **data: Any) -> dict[str, Any]:
        return envelope(type_, id=f"{tag}-{role}-{n}", visor_ref=_ref(base, role), occurred_at=EVENTS_AT,
                        **data)

    return [
        event("visit.recorded", "visit"),
        event("notification.received", "notified"),
        event("action.upsert", "action", action_id=f"A-{tag}", due_on="2026-11-01", status="done"),
        event("action.upsert", "quiet", 2, action_id=f"B-{tag}"),  # new, then done in the same batch
        event("action.upsert", "quiet", 3, action_id=f"B-{tag}", status="done"),
        event("action.upsert", "unknown", 1, action_id=f"C-{tag}"),
        event("notification.received", "rise"),  # then the upsert below moves the date again
        envelope("nominal.upsert", nominal_data(mappa_level=2, risk_level="high"), id=f"{tag}-rise",
                 visor_ref=_ref(base, "rise"), occurred_at=EVENTS_AT),
        # A first upsert (written in bulk, then changed by the notification after it).
        envelope("nominal.upsert", nominal_data(), id=f"{tag}-first", visor_ref=_ref(base, "first"),
                 occurred_at=SETUP_AT),
        event("notification.received", "first", 1, kind="weekly"),
        event("visit.recorded", "unknown"),  # no nominal
        event("notification.received", "quiet", kind="weekly"),
        event("detention.started", "quiet", 1),
    ]


def _parsed(raws: list[dict[str, Any]]) -> list[Envelope]:
    envelopes, errors = parse_envelopes(raws)
    assert errors == []
    return envelopes


@contextmanager
def _short_ways(on: bool) -> Iterator[None]:
    before = dispatch._Run.reuse_reads, Batch.core_writes
    dispatch._Run.reuse_reads = Batch.core_writes = on
    try:
        yield
    finally:
        dispatch._Run.reuse_reads, Batch.core_writes = before


async def _state(service: Service, base: int, tag: str) -> dict[str, Any]:
    """What the store holds about one run's nominals, with its tag and references made neutral."""
    refs = {_ref(base, role): role for role in ROLES}

    def neutral(text: str | None) -> str | None:
        if text is None:
            return None
        for ref, role in refs.items():
            text = text.replace(ref, f"<{role}>")
        return text.replace(tag, "<tag>")

    async with service.sessions() as session:
        alerts = (await session.execute(
            select(Alert.id, Alert.kind, Alert.visor_ref, Alert.subject, Alert.state, Alert.severity,
                   Alert.opened_by_event, Alert.resolved_reason).where(Alert.visor_ref.in_(refs))
        )).all()
        by_id = {row.id: row for row in alerts}
        audit = (await session.execute(
            select(AuditEntry.action, AuditEntry.subject).where(AuditEntry.subject.in_(by_id))
        )).all()
        nominals = (await session.execute(select(Nominal).where(Nominal.visor_ref.in_(refs)))).scalars()
        actions = (await session.execute(select(Action).where(Action.visor_ref.in_(refs)))).scalars()

        def row(obj: Any) -> tuple[Any, ...]:
            values = {c.key: getattr(obj, c.key) for c in obj.__table__.columns}
            values["visor_ref"] = refs[values["visor_ref"]]
            return tuple(sorted((k, neutral(v) if isinstance(v, str) else v) for k, v in values.items()))

        nominal_rows = sorted(row(n) for n in nominals)
        action_rows = sorted(row(a) for a in actions)
    return {
        "alerts": sorted(
            (a.kind, refs[a.visor_ref], neutral(a.subject), a.state, a.severity, neutral(a.opened_by_event),
             a.resolved_reason)
            for a in alerts
        ),
        "audit": Counter((action, by_id[subject].kind, refs[by_id[subject].visor_ref])
                         for action, subject in audit),
        "nominals": nominal_rows,
        "actions": action_rows,
    }


def _answer(result: IngestResult) -> tuple[int, int, int]:
    return result.accepted, result.duplicates, len(result.alerts)


async def _run(service: Service, base: int, tag: str, *, reuse: bool) -> tuple[int, int, int]:
    ctx = service.ctx
    await ingest(service.sessions, _parsed(_setup(base, tag)), ctx, source="test")
    await run_scan(service.sessions, ctx, utc(NOW))
    with _short_ways(reuse):
        return _answer(await ingest(service.sessions, _parsed(_traffic(base, tag)), ctx, source="test"))


async def test_the_short_ways_store_what_the_plain_ways_store(service: Service) -> None:
    plain = await _run(service, 1000, "plain", reuse=False)
    held = await _run(service, 2000, "held", reuse=True)
    assert held == plain
    plain_state, held_state = await _state(service, 1000, "plain"), await _state(service, 2000, "held")
    assert held_state == plain_state
    # The traffic did what it is for: each kind of live alert read was there to resolve.
    resolved = {kind for kind, _, _, state, *_ in plain_state["alerts"] if state == "resolved"}
    assert {"visit.overdue", "action.overdue"} <= resolved
    assert any(kind.startswith("notification.") for kind in resolved)
    assert any(kind.startswith("mappa.") for kind, *_ in plain_state["alerts"])
    assert plain_state["audit"]
    assert len(plain_state["actions"]) == 3 and len(plain_state["nominals"]) == 6


async def test_facts_of_the_held_nominals_equal_a_read_after_the_flush(service: Service) -> None:
    ctx = Context(service.settings, FixedClock(utc(NOW)))
    await ingest(service.sessions, _parsed(_setup(3000, "facts")), ctx, source="test")
    envelopes = _parsed(_traffic(3000, "facts"))
    refs = sorted({e.visor_ref for e in envelopes})
    async with service.sessions() as session, session.begin():
        batch = await Batch.load(session, envelopes)
        for e in envelopes:
            await apply_event(session, e, ctx, source="test", batch=batch)
        await batch.finish(session)
        await session.flush()
        held = dispatch._held_facts(batch.nominals, refs)
        read = await load.nominals(session, refs)
    assert held  # the known nominals' facts come from the held rows
    assert _ref(3000, "unknown") not in held  # no nominal: read (a first upsert may be in bulk)
    assert _ref(3000, "first") in held  # written in bulk, then taken up by its notification
    assert held == {ref: read[ref] for ref in held}
    notified = held[_ref(3000, "quiet")]
    assert notified is not None and str(notified.last_notification_on) == "2026-11-19"
