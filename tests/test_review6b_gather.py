"""Review (sixth session, R2) of the group commit's gather (2f55433, casewatch/ingest/group.py
GroupCommit._gather): it waits while requests keep arriving, GATHER_SECONDS without one ends the
wait, GATHER_SECONDS * GATHER_ROUNDS at most. Attacks, each found to hold: a stream of arrivals
that never stops does not hold a group past the cap; a lone request after a burst waits one quiet
interval and no more; a conflicting arrival ends the wait at once; a request is answered only once
its transaction has committed (its events are there for a reader that starts when it is
answered), on both databases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from casewatch.clock import FixedClock
from casewatch.ingest.group import GATHER_ROUNDS, GroupCommit, _Waiting
from casewatch.ingest.schema import parse_envelopes
from casewatch.model.events import Envelope
from casewatch.store.models import Event
from casewatch.wiring import Service, stop
from tests.support import envelope, make_service, nominal_data
from tests.test_triggers_case_data import utc

GATHER = 0.02  # wider than the service's 2 ms, so that a loaded machine's timer noise is small beside it


def _parsed(raws: list[dict[str, Any]]) -> list[Envelope]:
    envelopes, errors = parse_envelopes(raws)
    assert errors == []
    return envelopes


def _request(n: int, ref: str | None = None) -> _Waiting:
    raw = envelope("nominal.upsert", nominal_data(), id=f"review6b-gather-{n}",
                   visor_ref=ref or f"VS-{8_000_000 + n:07d}")
    return _Waiting.of(_parsed([raw]))


def _bare(circulating: int) -> GroupCommit:
    commit = GroupCommit(None, None, source="test", gather_seconds=GATHER)  # type: ignore[arg-type]
    commit._circulating = circulating
    return commit


def _arrive(commit: GroupCommit, waiting: _Waiting) -> None:
    commit._queue.append(waiting)
    commit._arrived.set()


async def test_review_a_stream_that_never_stops_holds_the_group_no_longer_than_the_cap() -> None:
    commit = _bare(circulating=10**6)
    _arrive(commit, _request(0))

    async def stream() -> None:
        n = 1
        while True:
            await asyncio.sleep(GATHER / 4)
            _arrive(commit, _request(n))
            n += 1

    feeder = asyncio.create_task(stream())
    try:
        started = time.monotonic()
        await commit._gather()
        took = time.monotonic() - started
    finally:
        feeder.cancel()
    cap = GATHER * GATHER_ROUNDS
    assert took >= cap * 0.9  # it did wait while they came
    assert took < cap + 0.1, took  # and not past the cap (plus a loaded machine's scheduling)
    assert len(commit._queue) > 2


async def test_review_a_lone_request_after_a_burst_waits_one_quiet_interval() -> None:
    commit = _bare(circulating=8)
    _arrive(commit, _request(0))
    started = time.monotonic()
    await commit._gather()
    took = time.monotonic() - started
    assert GATHER * 0.9 <= took < GATHER + 0.1, took


async def test_review_a_conflicting_arrival_ends_the_wait_at_once() -> None:
    commit = _bare(circulating=8)
    _arrive(commit, _request(0, ref="VS-8100000"))

    async def conflicting() -> None:
        await asyncio.sleep(GATHER / 4)
        _arrive(commit, _request(1, ref="VS-8100000"))  # the same nominal: cannot join the group

    task = asyncio.create_task(conflicting())
    started = time.monotonic()
    await commit._gather()
    took = time.monotonic() - started
    await task
    assert took < GATHER / 4 + GATHER * 0.9, took  # ended by the arrival, not by a quiet interval
    assert commit._run_length() == 1


@pytest.fixture
async def service(db_url: str) -> AsyncIterator[Service]:
    svc = await make_service(db_url, clock=FixedClock(utc("2026-11-20T09:00:00Z")))
    try:
        yield svc
    finally:
        await stop(svc)


async def test_review_grouped_requests_are_answered_only_after_their_commit(
    service: Service,
) -> None:
    commit = GroupCommit(service.sessions, service.ctx, source="test", gather_seconds=GATHER)
    commit._circulating = 6
    seen_at_answer: list[bool] = []

    async def one(n: int) -> None:
        envelopes = _parsed([envelope("nominal.upsert", nominal_data(), id=f"review6b-answer-{n}",
                                      visor_ref=f"VS-{8_200_000 + n:07d}")])
        result = await commit.ingest(envelopes)
        assert result.accepted == 1
        async with service.sessions() as session:  # a new transaction: sees only what is committed
            found = (await session.execute(select(Event.id).where(Event.id == envelopes[0].id))).first()
        seen_at_answer.append(found is not None)

    await asyncio.gather(*(one(n) for n in range(6)))
    assert seen_at_answer == [True] * 6
    assert commit.groups >= 1  # they were stored together, at least some of them
