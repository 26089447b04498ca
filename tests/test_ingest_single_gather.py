"""The events API's group commit waits briefly for the requests its last group answered
(casewatch.ingest.group.GroupCommit._gather, a commit delay), so that under steady load single
events share one transaction instead of alternating a lone one and the rest. The wait changes
which requests share a transaction, never an answer or what is stored: closed-loop traffic (each
requester posting its next event when the last is answered) gets the answers, events, alerts and
audit rows the same traffic gets posted one by one, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

import casewatch.api.events as events_api
from casewatch.ingest.group import GroupCommit
from casewatch.ingest.pipeline import IngestResult
from casewatch.model.events import Envelope
from casewatch.store.models import Alert, AuditEntry, Event
from casewatch.wiring import Service
from tests.support import envelope, nominal_data, service_client, signed_post
from tests.test_ingest_group import _alert_kinds, _envelope, _ref, _seed

PATH = "/api/v1/events"
REQUESTERS = 8


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[tuple[Service, TestClient[Any, Any]]]:
    async with service_client(db_url) as pair:
        yield pair


def _requester_traffic(first: int, tag: str) -> list[list[Any]]:
    """Each requester's requests, in its order: a level rise of a seeded nominal (opens alerts), a
    visit, a notification and a new action, each about its own nominal."""
    traffic: list[list[Any]] = []
    for k in range(REQUESTERS):
        n = first + k
        traffic.append([
            envelope("nominal.upsert", nominal_data(mappa_level=2), id=f"{tag}-up-{k}", visor_ref=_ref(n),
                     occurred_at="2026-11-20T09:32:00Z"),  # after the seed, not ahead of the clock
            envelope("visit.recorded", id=f"{tag}-visit-{k}", visor_ref=_ref(n + 100)),
            envelope("notification.received", id=f"{tag}-note-{k}", visor_ref=_ref(n + 200)),
            envelope("action.upsert", id=f"{tag}-act-{k}", visor_ref=_ref(n + 300), action_id=f"A-{tag}-{k}"),
        ])
    return traffic


def _shape(answers: Sequence[tuple[int, dict[str, Any]]]) -> list[tuple[int, int, int, int]]:
    return [(status, a["accepted"], a["duplicates"], len(a["alerts"])) for status, a in answers]


async def test_closed_loop_single_events_answer_and_store_as_one_by_one(
    api: tuple[Service, TestClient[Any, Any]],
) -> None:
    service, client = api
    await _seed(client, 1)
    await _seed(client, 1001)
    serial: list[list[tuple[int, dict[str, Any]]]] = []
    for requests in _requester_traffic(1001, "one"):
        answers = []
        for body in requests:
            resp = await signed_post(client, PATH, body)
            answers.append((resp.status, await resp.json()))
        serial.append(answers)
    committer = events_api._GROUPS[service.sessions]
    transactions_before = committer.transactions

    async def requester(requests: list[Any]) -> list[tuple[int, dict[str, Any]]]:
        answers = []
        for body in requests:
            resp = await signed_post(client, PATH, body)
            answers.append((resp.status, await resp.json()))
        return answers

    traffic = _requester_traffic(1, "many")
    together = await asyncio.gather(*(requester(requests) for requests in traffic))

    sent = sum(len(requests) for requests in traffic)
    assert committer.transactions - transactions_before < sent  # some shared a transaction
    assert [_shape(a) for a in together] == [_shape(a) for a in serial]
    assert sum(len(a["alerts"]) for answers in together for _, a in answers) >= REQUESTERS
    async with service.sessions() as session:
        alerts = dict((await session.execute(select(Alert.id, Alert.visor_ref))).all())
        audit = (await session.execute(select(AuditEntry.action, AuditEntry.subject))).all()
        ids = set((await session.execute(select(Event.id))).scalars())
    for requests, answers in zip(traffic, together, strict=True):
        for body, (_, answer) in zip(requests, answers, strict=True):
            assert {alerts[a] for a in answer["alerts"]} <= {body["visor_ref"]}
    refs_many = [_ref(n + d) for n in range(1, 1 + REQUESTERS) for d in (0, 100, 200, 300)]
    refs_one = [_ref(n + d) for n in range(1001, 1001 + REQUESTERS) for d in (0, 100, 200, 300)]
    many, one = await _alert_kinds(service, refs_many), await _alert_kinds(service, refs_one)
    assert [many[r] for r in refs_many] == [one[r] for r in refs_one]
    opened_many = {a for answers in together for _, answer in answers for a in answer["alerts"]}
    opened_one = {a for answers in serial for _, answer in answers for a in answer["alerts"]}
    assert opened_many == {i for i, ref in alerts.items() if ref in set(refs_many)}
    audit_many = Counter(action for action, subject in audit if subject in opened_many)
    audit_one = Counter(action for action, subject in audit if subject in opened_one)
    assert audit_many == audit_one and audit_many
    assert {body["id"] for requests in traffic for body in requests} <= ids


# --- the wait itself, with the transactions stubbed out -------------------------------------------


class _Recording(GroupCommit):
    """A GroupCommit whose transactions only record which requests they would have held."""

    def __init__(self, gather_seconds: float) -> None:
        super().__init__(None, None, source="api", gather_seconds=gather_seconds)  # type: ignore[arg-type]
        self.held: list[list[str]] = []

    async def _alone(self, waiting: Any) -> None:
        await self._together([waiting])

    async def _together(self, group: list[Any]) -> None:
        self.held.append([e.id for w in group for e in w.envelopes])
        await asyncio.sleep(0)  # a transaction takes a moment
        for w in group:
            w.done.set_result(IngestResult(accepted=len(w.envelopes)))


def _one(n: int) -> list[Envelope]:
    return [_envelope(_ref(n), f"e{n}")]


async def test_a_lone_requester_never_waits() -> None:
    committer = _Recording(gather_seconds=30.0)
    started = time.monotonic()
    for n in range(3):
        await asyncio.wait_for(committer.ingest(_one(n)), 5)
    assert time.monotonic() - started < 5
    assert committer.held == [["e0"], ["e1"], ["e2"]]


async def test_the_next_group_waits_for_as_many_requests_as_the_last_had() -> None:
    committer = _Recording(gather_seconds=30.0)
    await asyncio.gather(*(committer.ingest(_one(n)) for n in range(3)))
    assert committer.held == [["e0", "e1", "e2"]]
    # One arrives alone: the group waits (not 30 s) until the other two have come too.
    first = asyncio.ensure_future(committer.ingest(_one(10)))
    await asyncio.sleep(0.05)
    assert not first.done() and committer.held == [["e0", "e1", "e2"]]
    started = time.monotonic()
    await asyncio.gather(first, committer.ingest(_one(11)), committer.ingest(_one(12)))
    assert time.monotonic() - started < 5
    assert committer.held[1:] == [["e10", "e11", "e12"]]


async def test_the_wait_ends_after_gather_seconds_when_the_others_do_not_come() -> None:
    committer = _Recording(gather_seconds=0.05)
    await asyncio.gather(*(committer.ingest(_one(n)) for n in range(4)))
    started = time.monotonic()
    await committer.ingest(_one(10))
    waited = time.monotonic() - started
    assert 0.04 <= waited < 2
    assert committer.held[1:] == [["e10"]]
    # The load is now one requester: the next request does not wait again.
    started = time.monotonic()
    await committer.ingest(_one(11))
    assert time.monotonic() - started < 0.04
    assert committer.held[2:] == [["e11"]]


async def test_the_wait_goes_on_while_requests_keep_coming() -> None:
    """(Sixth session.) The returning requests arrive one after another (each read, checked and
    parsed in turn, on a busy machine some milliseconds apart): the group waits while none is
    more than gather_seconds behind the one before, past gather_seconds in all."""
    committer = _Recording(gather_seconds=0.3)
    await asyncio.gather(*(committer.ingest(_one(n)) for n in range(5)))
    started = time.monotonic()

    async def trickle() -> None:
        for n in range(11, 15):
            await asyncio.sleep(0.1)
            asyncio.ensure_future(committer.ingest(_one(n)))

    first = asyncio.ensure_future(committer.ingest(_one(10)))
    await asyncio.gather(first, trickle())
    await first
    assert time.monotonic() - started >= 0.35  # longer than gather_seconds
    assert committer.held[1:] == [["e10", "e11", "e12", "e13", "e14"]]


async def test_no_wait_when_a_conflict_already_ends_the_next_group() -> None:
    """Requests about one nominal cannot share a transaction: when the waiting ones already
    conflict, the next group is what it is, and it goes at once."""
    committer = _Recording(gather_seconds=0.5)
    await asyncio.gather(*(committer.ingest(_one(n)) for n in range(4)))
    started = time.monotonic()
    first = asyncio.ensure_future(committer.ingest([_envelope(_ref(7), "same-1")]))
    second = asyncio.ensure_future(committer.ingest([_envelope(_ref(7), "same-2")]))
    await first
    assert time.monotonic() - started < 0.4
    await second
    assert committer.held[1:] == [["same-1"], ["same-2"]]
