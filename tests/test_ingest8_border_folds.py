"""A border check's folded reads (eighth session) against the plain ones, on SQLite and PostgreSQL:
the nominal's border checks read once by Batch.load and carried (Batch.carry_checks: the same-check
test, then the rules' other checks) instead of read by each; the live travel alerts about the new
check in the rules' one up-front read (dispatch._Run.fold_border_reads). The same traffic, lone
requests and batches, gives the same answers, alerts, audit entries, deliveries and border check
rows, row by row, and a lone border check runs two statements fewer. (The travel notifications
with their cancellations, first folded here too, are one statement on both paths now:
triggers.load.travels, tests/test_triggers_load_travels.py.)"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select

from casewatch.ingest.apply import Batch
from casewatch.ingest.pipeline import ingest
from casewatch.store.models import Alert, AuditEntry, BorderCheck, Delivery
from casewatch.triggers import dispatch
from casewatch.wiring import Service
from tests.support import envelope, nominal_data
from tests.test_ingest_single_fast import _parsed, service_fixture  # noqa: F401 (fixture)

SETUP_AT = "2026-11-01T00:00:00Z"
EVENTS_AT = "2026-11-20T08:30:00Z"
ROLES = ("lone", "trip", "cancel", "batch", "late", "late2", "unknown", "free")


def _ref(base: int, role: str) -> str:
    return f"VS-{base + ROLES.index(role):07d}"


def _setup(base: int, tag: str) -> list[dict[str, Any]]:
    def upsert(role: str, **data: Any) -> dict[str, Any]:
        return envelope("nominal.upsert", nominal_data(**data), id=f"{tag}-setup-{role}",
                        visor_ref=_ref(base, role), occurred_at=SETUP_AT)

    def on(role: str, type_: str, n: int, **data: Any) -> dict[str, Any]:
        return envelope(type_, id=f"{tag}-setup-{role}-{n}", visor_ref=_ref(base, role), occurred_at=SETUP_AT,
                        **data)

    return [
        *(upsert(role) for role in ("lone", "trip", "cancel", "batch", "late", "late2")),
        upsert("free", registered=False),
        on("trip", "travel.notified", 1, departure_on="2026-11-20", return_on="2026-11-27",
           trip_id=f"T-{tag}"),
        on("cancel", "travel.notified", 1, departure_on="2026-11-20", return_on="2026-11-27",
           trip_id=f"C-{tag}"),
        on("cancel", "travel.cancelled", 2, trip_id=f"C-{tag}"),
        on("batch", "travel.border_alert", 1, port="Dover", direction="outbound",
           checked_at="2026-11-19T08:00:00Z"),
    ]


def _check(base: int, tag: str, role: str, n: int, direction: str, at: str) -> dict[str, Any]:
    return envelope("travel.border_alert", id=f"{tag}-{role}-{n}", visor_ref=_ref(base, role),
                    occurred_at=EVENTS_AT, port=f"Port {n}", direction=direction, checked_at=at)


def _notice(base: int, tag: str, role: str, n: int) -> dict[str, Any]:
    """A notification made before the day's checks, heard of after them (out of order)."""
    return envelope("travel.notified", id=f"{tag}-{role}-{n}", visor_ref=_ref(base, role),
                    occurred_at=EVENTS_AT, departure_on="2026-11-20", return_on="2026-11-30",
                    notified_at="2026-11-10T00:00:00Z")


def _requests(base: int, tag: str) -> list[list[dict[str, Any]]]:
    def check(role: str, n: int, direction: str, at: str) -> dict[str, Any]:
        return _check(base, tag, role, n, direction, at)

    return [
        [check("lone", 1, "outbound", "2026-11-20T08:00:00Z")],  # unnotified: two alerts
        [check("lone", 2, "outbound", "2026-11-20T08:05:00Z")],  # the same check again: stale
        [check("lone", 3, "inbound", "2026-11-20T08:06:00Z")],  # the other way: a check of its own
        [check("trip", 1, "outbound", "2026-11-20T07:00:00Z")],  # confirmed
        [check("cancel", 1, "outbound", "2026-11-20T07:00:00Z")],  # its trip was cancelled
        [check("unknown", 1, "outbound", "2026-11-20T07:00:00Z")],  # no nominal
        [check("free", 1, "outbound", "2026-11-20T07:00:00Z")],  # owes no notice
        [  # a batch: a check, the same one again within it, the other way, another nominal's
            check("batch", 2, "outbound", "2026-11-20T06:00:00Z"),
            check("batch", 3, "outbound", "2026-11-20T06:03:00Z"),
            check("batch", 4, "inbound", "2026-11-20T07:30:00Z"),
            check("lone", 4, "outbound", "2026-11-20T06:00:00Z"),
        ],
        # a check, then in the same batch the notification that covers it
        [check("late", 1, "outbound", "2026-11-20T05:00:00Z"), _notice(base, tag, "late", 2)],
        [check("late2", 1, "outbound", "2026-11-20T05:00:00Z")],  # ... and in a request after it
        [_notice(base, tag, "late2", 2)],
    ]


@contextmanager
def folded_reads(on: bool) -> Iterator[None]:
    """The border check's folded reads on or off (tests/test_review8_border_folds.py too)."""
    before = Batch.carry_checks, dispatch._Run.fold_border_reads
    Batch.carry_checks = dispatch._Run.fold_border_reads = on
    try:
        yield
    finally:
        Batch.carry_checks, dispatch._Run.fold_border_reads = before


async def _run(service: Service, base: int, tag: str, *, folded: bool) -> tuple[list[Any], list[int]]:
    """Each request's answer, and the statements each ran."""
    ctx = service.ctx
    await ingest(service.sessions, _parsed(_setup(base, tag)), ctx, source="test")
    counted = [0]

    def count(*_: Any) -> None:
        counted[0] += 1

    answers, statements = [], []
    event.listen(service.engine.sync_engine, "before_cursor_execute", count)
    try:
        with folded_reads(folded):
            for request in _requests(base, tag):
                counted[0] = 0
                result = await ingest(service.sessions, _parsed(request), ctx, source="test")
                answers.append((result.accepted, result.duplicates, len(result.alerts)))
                statements.append(counted[0])
    finally:
        event.remove(service.engine.sync_engine, "before_cursor_execute", count)
    return answers, statements


async def _state(service: Service, base: int, tag: str) -> dict[str, Any]:
    return await store_state(service, {_ref(base, role): role for role in ROLES}, tag)


async def store_state(service: Service, refs: dict[str, str], tag: str) -> dict[str, Any]:
    """What the store holds about one run's nominals (`refs`: reference -> role), its tag and
    references made neutral (tests/test_review8_border_folds.py compares its runs with it too)."""

    def neutral(value: Any) -> Any:
        text = json.dumps(value, sort_keys=True, default=str)
        for ref, role in refs.items():
            text = text.replace(ref, f"<{role}>")
        return text.replace(tag, "<tag>")

    async with service.sessions() as session:
        alerts = (await session.execute(select(Alert).where(Alert.visor_ref.in_(refs)))).scalars().all()
        by_id = {a.id: a for a in alerts}
        audit = (await session.execute(
            select(AuditEntry.action, AuditEntry.subject, AuditEntry.actor, AuditEntry.purpose,
                   AuditEntry.details).where(AuditEntry.subject.in_(by_id)).order_by(AuditEntry.id)
        )).all()
        deliveries = (await session.execute(
            select(Delivery.alert_id, Delivery.purpose, Delivery.receiver, Delivery.channel, Delivery.target,
                   Delivery.payload).where(Delivery.alert_id.in_(by_id)).order_by(Delivery.id)
        )).all()
        checks = (await session.execute(
            select(BorderCheck.visor_ref, BorderCheck.port, BorderCheck.direction, BorderCheck.checked_at,
                   BorderCheck.event_id).where(BorderCheck.visor_ref.in_(refs)).order_by(BorderCheck.id)
        )).all()

    def alert_key(alert_id: str) -> str:
        a = by_id[alert_id]
        return str(neutral([a.kind, a.visor_ref, a.subject]))

    return {
        "alerts": sorted(
            neutral([a.kind, a.visor_ref, a.subject, a.state, a.severity, a.team, a.summary, a.details,
                     a.opened_by_event, a.resolved_reason, a.escalation_chain, a.version])
            for a in alerts
        ),
        # In the order written: the same entries, for the same alerts, in the same order.
        "audit": [neutral([alert_key(s), action, actor, purpose, details])
                  for action, s, actor, purpose, details in audit],
        "deliveries": [
            neutral([alert_key(d.alert_id), d.purpose, d.receiver, d.channel, d.target,
                     {k: v for k, v in d.payload.items() if k not in ("alert_id", "ack_url")}])
            for d in deliveries
        ],
        "checks": [neutral(list(c)) for c in checks],
    }


async def test_the_folded_reads_store_what_the_plain_reads_store(service: Service) -> None:
    plain_answers, plain_statements = await _run(service, 1000, "plain", folded=False)
    folded_answers, folded_statements = await _run(service, 2000, "fold", folded=True)
    assert folded_answers == plain_answers
    plain, folded = await _state(service, 1000, "plain"), await _state(service, 2000, "fold")
    assert folded == plain
    # The traffic did what it is for.
    kinds = Counter(json.loads(a)[0] for a in plain["alerts"])
    assert kinds["travel.unnotified"] >= 4 and kinds["travel.confirmed"] >= 3
    assert kinds["travel.unmatched_nominal"] == 1
    assert plain_answers[1] == (1, 0, 0)  # the same check twice: stored, no alert
    assert any('"resolved"' in a and "travel.unnotified" in a for a in plain["alerts"])
    assert plain["audit"] and plain["deliveries"] and len(plain["checks"]) == 12
    # A lone border check of a known nominal: two statements fewer (the live read, the other
    # checks).
    assert plain_statements[0] - folded_statements[0] == 2
    assert all(f <= p for f, p in zip(folded_statements, plain_statements, strict=True))
