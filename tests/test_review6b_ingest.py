"""Review (sixth session, R2) of the ingest's short ways (bdc905d, f5617f9): the rules' facts taken
from the nominals the batch holds, the live alerts read in one statement, new actions and
notification dates written by Batch.finish as Core statements. Traffic the session's own test
(tests/test_ingest_single_fast.py) does not send, each run through the plain ways and the short
ways on both databases and compared row by row: a known nominal's date moved by an upsert, then
by notifications newer and older, then a stale upsert; a notification, then an upsert moving the
date past it, then another notification; a nominal made in the batch by the ORM (a notification
before its first upsert) and notified after; an action with a live alert done, reopened and done
again; a new action with a stale restatement and a move to another nominal; two nominals' events
interleaved. Both runs' nominals live in one database and see the same scans at the same times."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from casewatch.ingest.pipeline import IngestResult, ingest
from casewatch.store.models import Action, Alert, AuditEntry, Nominal, NotificationReceived
from casewatch.triggers.scan import run_scan
from casewatch.wiring import Service
from tests.support import envelope, nominal_data
from tests.test_ingest_single_fast import _parsed, _short_ways, service_fixture  # noqa: F401 (fixture)
from tests.test_triggers_case_data import utc

NOW = "2026-11-20T09:00:00Z"
SETUP_AT = "2026-07-01T00:00:00Z"
AT = "2026-11-20T08:00:00Z"
EARLIER = "2026-11-19T08:00:00Z"
LATER = "2026-11-20T08:30:00Z"
ROLES = ("upsert_first", "notify_first", "made_here", "acted", "new_action", "moved_to", "visited")


def _ref(base: int, role: str) -> str:
    return f"VS-{base + ROLES.index(role):07d}"


def _setup(base: int, tag: str) -> list[dict[str, Any]]:
    def upsert(role: str, **data: Any) -> dict[str, Any]:
        return envelope("nominal.upsert", nominal_data(**data), id=f"{tag}-setup-{role}",
                        visor_ref=_ref(base, role), occurred_at=SETUP_AT)

    return [
        upsert("upsert_first", last_notification_on="2025-11-01"),  # overdue: a live alert
        upsert("notify_first", last_notification_on="2025-10-01"),
        upsert("acted"),
        envelope("action.upsert", id=f"{tag}-setup-act", visor_ref=_ref(base, "acted"),
                 occurred_at="2026-10-01T00:00:00Z", action_id=f"A-{tag}", due_on="2026-11-01"),
        upsert("new_action", last_notification_on="2026-11-01"),
        upsert("moved_to", last_notification_on="2026-11-01"),
        upsert("visited", risk_level="high", last_notification_on="2026-11-01"),
        envelope("visit.recorded", {"visited_on": "2026-08-01"}, id=f"{tag}-setup-visited",
                 visor_ref=_ref(base, "visited"), occurred_at="2026-08-01T08:00:00Z"),
    ]


def _traffic(base: int, tag: str) -> list[dict[str, Any]]:
    n = iter(range(1000))

    def event(type_: str, role: str, at: str = AT, **data: Any) -> dict[str, Any]:
        return envelope(type_, id=f"{tag}-{role}-{next(n)}", visor_ref=_ref(base, role), occurred_at=at,
                        **data)

    def upsert(role: str, at: str = AT, **data: Any) -> dict[str, Any]:
        return envelope("nominal.upsert", nominal_data(**data), id=f"{tag}-{role}-{next(n)}",
                        visor_ref=_ref(base, role), occurred_at=at)

    return [
        # A known nominal: upsert moves the date, a newer notification, an older one, a stale upsert.
        upsert("upsert_first", last_notification_on="2026-10-01", mappa_level=2),
        event("notification.received", "upsert_first", notified_on="2026-11-19"),
        event("visit.recorded", "visited"),  # interleaved: another nominal's event
        event("notification.received", "upsert_first", notified_on="2026-09-01"),
        upsert("upsert_first", at=EARLIER, last_notification_on="2026-11-19", risk_level="high"),
        # A notification, an upsert moving the date past it, another notification between.
        event("notification.received", "notify_first", notified_on="2026-11-10"),
        upsert("notify_first", last_notification_on="2026-11-15", area="N02"),
        event("notification.received", "notify_first", notified_on="2026-11-12"),
        event("notification.received", "notify_first", kind="weekly", notified_on="2026-11-18"),
        # No nominal yet: a notification, then the first upsert (the ORM's way: it has history),
        # then a later notification of the nominal made in this batch.
        event("notification.received", "made_here", notified_on="2026-11-05"),
        upsert("made_here", at=EARLIER, last_notification_on="2026-10-01"),
        event("notification.received", "made_here", notified_on="2026-11-19"),
        # A known action with a live alert: done, reopened, done again.
        event("action.upsert", "acted", action_id=f"A-{tag}", due_on="2026-11-01", status="done"),
        event("action.upsert", "acted", at=LATER, action_id=f"A-{tag}", due_on="2026-11-01",
              status="open"),
        event("action.upsert", "acted", at="2026-11-20T08:45:00Z", action_id=f"A-{tag}",
              due_on="2026-11-01", status="done"),
        # A new action, restated stale, then moved to another nominal.
        event("action.upsert", "new_action", action_id=f"N-{tag}", due_on="2026-11-25"),
        event("action.upsert", "new_action", at=EARLIER, action_id=f"N-{tag}", due_on="2026-11-02",
              status="done"),
        event("action.upsert", "moved_to", at=LATER, action_id=f"N-{tag}", due_on="2026-11-26"),
        event("notification.received", "moved_to", notified_on="2026-11-18"),
    ]


async def _state(service: Service, base: int, tag: str) -> dict[str, Any]:
    refs = {_ref(base, role): role for role in ROLES}

    def neutral(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        for ref, role in refs.items():
            value = value.replace(ref, f"<{role}>")
        return value.replace(tag, "<tag>")

    def row(obj: Any, skip: tuple[str, ...] = ()) -> tuple[Any, ...]:
        return tuple(sorted((c.key, neutral(getattr(obj, c.key))) for c in obj.__table__.columns
                            if c.key not in skip))

    async with service.sessions() as session:
        alerts = list((await session.execute(select(Alert).where(Alert.visor_ref.in_(refs)))).scalars())
        by_id = {a.id: a for a in alerts}
        audit = (await session.execute(
            select(AuditEntry.action, AuditEntry.subject, AuditEntry.purpose)
            .where(AuditEntry.subject.in_(by_id))
        )).all()
        nominals = (await session.execute(select(Nominal).where(Nominal.visor_ref.in_(refs)))).scalars()
        actions = (await session.execute(select(Action).where(Action.visor_ref.in_(refs)))).scalars()
        notes = (await session.execute(
            select(NotificationReceived).where(NotificationReceived.visor_ref.in_(refs))
        )).scalars()
        return {
            "alerts": sorted((
                (a.kind, refs[a.visor_ref], neutral(a.subject), a.state, a.severity,
                 neutral(a.opened_by_event), a.resolved_reason)
                for a in alerts
            ), key=repr),
            "audit": sorted(((action, by_id[subject].kind, refs[by_id[subject].visor_ref], neutral(purpose))
                            for action, subject, purpose in audit), key=repr),
            "nominals": sorted((row(n) for n in nominals), key=repr),
            "actions": sorted((row(a) for a in actions), key=repr),
            "notifications": sorted((row(x, skip=("id",)) for x in notes), key=repr),
        }


def _answer(result: IngestResult) -> tuple[int, int, int]:
    return result.accepted, result.duplicates, len(result.alerts)


async def _run_both(service: Service) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Both set-ups, one scan, the traffic the plain way then the short way, one scan after: each
    run's nominals see the same scans at the same times."""
    ctx = service.ctx
    for base, tag in ((1000, "plain"), (2000, "short")):
        await ingest(service.sessions, _parsed(_setup(base, tag)), ctx, source="test")
    await run_scan(service.sessions, ctx, utc(NOW))
    answers = []
    for base, tag, short in ((1000, "plain", False), (2000, "short", True)):
        with _short_ways(short):
            answers.append(_answer(await ingest(service.sessions, _parsed(_traffic(base, tag)), ctx,
                                                source="test")))
    # What a scan finds next must not differ either (the stored dates drive it).
    await run_scan(service.sessions, ctx, utc("2026-11-21T09:00:00Z"))
    return answers[0], answers[1]


async def test_review_odd_batches_store_the_same_by_both_ways(service: Service) -> None:
    plain, short = await _run_both(service)
    assert short == plain
    plain_state, short_state = await _state(service, 1000, "plain"), await _state(service, 2000, "short")
    for part in plain_state:
        assert short_state[part] == plain_state[part], part
    # The traffic reached what it is for.
    dates = {dict(n)["visor_ref"]: dict(n)["last_notification_on"] for n in plain_state["nominals"]}
    assert str(dates["<upsert_first>"]) == "2026-11-19"
    assert str(dates["<notify_first>"]) == "2026-11-18"
    assert str(dates["<made_here>"]) == "2026-11-19"
    actions = {dict(a)["action_id"]: dict(a) for a in plain_state["actions"]}
    assert actions["N-<tag>"]["visor_ref"] == "<moved_to>" and actions["N-<tag>"]["status"] == "open"
    assert actions["A-<tag>"]["status"] == "done"
    resolved = {kind for kind, _, _, state, *_ in plain_state["alerts"] if state == "resolved"}
    assert "action.overdue" in resolved
    assert any(kind.startswith("mappa.") for kind, *_ in plain_state["alerts"])
    assert any(kind.startswith("notification.") for kind in resolved)
