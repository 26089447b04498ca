"""Group commit of the events API (casewatch.ingest.group), on SQLite and PostgreSQL: concurrent
requests share a transaction only when their references, actions and event ids are disjoint; each
gets the answer it would have got alone (its events, its duplicates, the alerts about its
references) and the store ends as the same requests one by one leave it; a failing group is
stored request by request."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

import casewatch.api.events as events_api
import casewatch.ingest.group as group_module
from casewatch.ingest.group import GroupCommit, _Waiting
from casewatch.model.events import Envelope
from casewatch.store.models import Alert, AuditEntry, Event
from casewatch.wiring import Service
from tests.support import envelope, nominal_data, service_client, signed_post

PATH = "/api/v1/events"


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[tuple[Service, TestClient[Any, Any]]]:
    async with service_client(db_url) as pair:
        yield pair


def _ref(n: int) -> str:
    return f"VS-{n:07d}"


def _traffic(first: int, tag: str) -> list[Any]:
    """Ten nominals' level rises (each opens alerts), visits, an action, and a repeated id."""
    bodies: list[Any] = []
    for n in range(first, first + 10):
        bodies.append(envelope(
            "nominal.upsert", nominal_data(mappa_level=2), id=f"{tag}-up-{n}", visor_ref=_ref(n),
            occurred_at="2026-11-20T09:32:00Z",  # after the seed (T0 09:30), not ahead of the clock
        ))
        bodies.append(envelope("visit.recorded", id=f"{tag}-visit-{n}", visor_ref=_ref(n + 100)))
    bodies.append(
        envelope("action.upsert", id=f"{tag}-act", visor_ref=_ref(first + 200), action_id=f"A-{tag}")
    )
    # An id already stored, in a batch with a new one.
    bodies.append([
        envelope("visit.recorded", id=f"{tag}-visit-{first}", visor_ref=_ref(first + 300)),
        envelope("visit.recorded", id=f"{tag}-visit-new", visor_ref=_ref(first + 300)),
    ])
    return bodies


async def _seed(client: TestClient[Any, Any], first: int) -> None:
    for n in range(first, first + 10):
        seed = envelope("nominal.upsert", nominal_data(mappa_level=1), id=f"seed-{n}", visor_ref=_ref(n))
        resp = await signed_post(client, PATH, seed)
        assert resp.status == 202


async def _alert_kinds(service: Service, refs: list[str]) -> dict[str, Counter[str]]:
    async with service.sessions() as session:
        stmt = select(Alert.visor_ref, Alert.kind).where(Alert.visor_ref.in_(refs))
        rows = (await session.execute(stmt)).all()
    found: dict[str, Counter[str]] = {ref: Counter() for ref in refs}
    for ref, kind in rows:
        found[ref][kind] += 1
    return found


async def test_concurrent_requests_answer_and_store_as_one_by_one(
    api: tuple[Service, TestClient[Any, Any]],
) -> None:
    service, client = api
    await _seed(client, 1)
    await _seed(client, 1001)
    serial = []
    for body in _traffic(1001, "one"):
        resp = await signed_post(client, PATH, body)
        serial.append((resp.status, await resp.json()))
    bodies = _traffic(1, "many")
    # The repeated id goes last in both runs (concurrent requests may arrive in any order).
    responses = await asyncio.gather(*(signed_post(client, PATH, body) for body in bodies[:-1]))
    responses.append(await signed_post(client, PATH, bodies[-1]))
    together = [(r.status, await r.json()) for r in responses]

    assert events_api._GROUPS[service.sessions].groups > 0  # some requests shared a transaction

    def shape(answers: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, int, int, int]]:
        # Alert ids are random: compared by count here, by reference below.
        return [(s, a["accepted"], a["duplicates"], len(a["alerts"])) for s, a in answers]

    assert shape(together) == shape(serial)
    assert shape(together)[-1] == (202, 1, 1, 0)
    assert sum(len(a["alerts"]) for _, a in together) >= 10  # the level rises opened alerts
    async with service.sessions() as session:
        alerts = dict((await session.execute(select(Alert.id, Alert.visor_ref))).all())
        audit = (await session.execute(select(AuditEntry.action, AuditEntry.subject))).all()
        ids = set((await session.execute(select(Event.id))).scalars())
    # Each request's alerts are about its own reference; every alert opened was answered.
    for body, (_, answer) in zip(bodies, together, strict=True):
        ref = body[0]["visor_ref"] if isinstance(body, list) else body["visor_ref"]
        assert {alerts[a] for a in answer["alerts"]} <= {ref}
    opened_many = {a for _, answer in together for a in answer["alerts"]}
    assert opened_many == {i for i, ref in alerts.items() if ref in {_ref(n) for n in range(1, 11)}}
    opened_one = {a for _, answer in serial for a in answer["alerts"]}
    # The store: the same alerts by kind for each nominal, the same audit rows about them.
    many = await _alert_kinds(service, [_ref(n) for n in range(1, 11)])
    one = await _alert_kinds(service, [_ref(n) for n in range(1001, 1011)])
    assert [many[_ref(n)] for n in range(1, 11)] == [one[_ref(n)] for n in range(1001, 1011)]
    audit_many = Counter(action for action, subject in audit if subject in opened_many)
    audit_one = Counter(action for action, subject in audit if subject in opened_one)
    assert audit_many == audit_one and audit_many
    assert {e["id"] for b in bodies for e in (b if isinstance(b, list) else [b])} <= ids


def _envelope(ref: str, event_id: str, kind: str = "visit.recorded", **data: Any) -> Envelope:
    from casewatch.ingest.schema import parse_envelopes

    parsed, errors = parse_envelopes(envelope(kind, id=event_id, visor_ref=ref, **data))
    assert not errors
    return parsed[0]


async def test_requests_sharing_a_reference_an_action_or_an_id_are_not_grouped() -> None:
    waiting = [
        _Waiting.of([_envelope("VS-0000001", "e1")]),
        _Waiting.of([_envelope("VS-0000002", "e2")]),
        _Waiting.of([_envelope("VS-0000001", "e3")]),  # the first one's reference
        _Waiting.of([_envelope("VS-0000004", "e4")]),
    ]
    committer = GroupCommit(None, None, source="api")  # type: ignore[arg-type]
    committer._queue = list(waiting)
    assert committer._take() == waiting[:2]
    assert committer._take() == waiting[2:]
    acts = [
        _Waiting.of([_envelope("VS-0000001", "a1", "action.upsert", action_id="A-1")]),
        _Waiting.of([_envelope("VS-0000002", "a2", "action.upsert", action_id="A-1")]),
    ]
    committer._queue = list(acts)
    assert committer._take() == acts[:1]
    same_id = [_Waiting.of([_envelope("VS-0000001", "x")]), _Waiting.of([_envelope("VS-0000002", "x")])]
    committer._queue = list(same_id)
    assert committer._take() == same_id[:1]
    for w in [*waiting, *acts, *same_id]:
        w.done.cancel()


async def test_a_failing_group_is_stored_request_by_request(
    api: tuple[Service, TestClient[Any, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, client = api
    real = group_module._ingest_with_retries

    async def fails_for_groups(sessions: Any, envelopes: Any, *args: Any) -> Any:
        if len(envelopes) > 1:
            raise RuntimeError("fictional failure of a group")
        return await real(sessions, envelopes, *args)

    monkeypatch.setattr(group_module, "_ingest_with_retries", fails_for_groups)
    bodies = [envelope("visit.recorded", id=f"v-{n}", visor_ref=_ref(n)) for n in range(1, 13)]
    responses = await asyncio.gather(*(signed_post(client, PATH, body) for body in bodies))
    assert [r.status for r in responses] == [202] * len(bodies)
    assert [(await r.json())["accepted"] for r in responses] == [1] * len(bodies)
    async with service.sessions() as session:
        ids = set((await session.execute(select(Event.id))).scalars())
    assert {b["id"] for b in bodies} <= ids
    assert events_api._GROUPS[service.sessions].groups == 0


async def test_an_unreachable_database_answers_every_grouped_request_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """(Review of issue 17.) A group that fails because the database is away (or the connection
    dropped, perhaps during the commit) is not stored again request by request: each request gets
    the error at once (the API answers 503; the sender retries, idempotently)."""
    from casewatch.clock import FixedClock
    from casewatch.context import Context
    from casewatch.store.engine import make_engine, make_sessionmaker
    from casewatch.store.errors import is_unavailable
    from tests.support import T0, make_settings

    engine = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # nothing listens there
    try:
        ctx = Context(make_settings("sqlite+aiosqlite:///unused.db"), FixedClock(T0))
        committer = GroupCommit(make_sessionmaker(engine), ctx, source="api")
        alone: list[int] = []
        real_alone = committer._alone

        async def counted(waiting: _Waiting) -> None:
            alone.append(1)
            await real_alone(waiting)

        monkeypatch.setattr(committer, "_alone", counted)
        results = await asyncio.gather(
            *(committer.ingest([_envelope(_ref(n), f"u{n}")]) for n in range(4)), return_exceptions=True
        )
    finally:
        await engine.dispose()
    assert all(isinstance(r, Exception) and is_unavailable(r) for r in results), results
    assert len(alone) <= 1  # the first request, alone; the group of the others failed together
