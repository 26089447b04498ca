"""A batch's writes riding with the rules' live-alert read on PostgreSQL (twelfth session):
`Batch.finish(defer=True)` returns the records, new actions and notification dates as the parts of
one statement (ingest.arrays.Writes) instead of sending them, and the rules send them as parts of
their first statement, the one live-alert read (`WITH w0 AS (INSERT ..) SELECT .. FROM alerts`),
when that is the next statement; else on their own first (pipeline.DEFER_WRITES). The same
traffic both ways (every record table with new actions and dates, a first upsert beside them, a
duplicate; lone border checks, the same check again, a cancelled trip; a group of singles through
the group committer) stores the same text in every column of every record table, the actions, the
nominals and the events, opens the same alerts with the same audit entries and deliveries, and
answers alike; on PostgreSQL a lone border check and a group of singles run one statement fewer;
on SQLite nothing changes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

import casewatch.ingest.pipeline as pipeline
from casewatch.ingest.group import GroupCommit
from casewatch.ingest.pipeline import IngestResult, ingest
from casewatch.wiring import Service
from tests.support import envelope, switched
from tests.test_ingest8_border_folds import ROLES as BORDER_ROLES
from tests.test_ingest8_border_folds import _ref as border_ref
from tests.test_ingest8_border_folds import _requests, _setup, store_state
from tests.test_ingest9_writes import _statements
from tests.test_ingest10_held import AT, _run, _text_state
from tests.test_ingest_arrays7 import _ref
from tests.test_ingest_arrays7 import _traffic as traffic
from tests.test_ingest_single_fast import _parsed, service_fixture  # noqa: F401 (fixture)


def _deferred(on: bool) -> AbstractContextManager[None]:
    return switched(pipeline, "DEFER_WRITES", on)


def _riding(statements: list[str]) -> list[str]:
    """The live-alert reads that carried writes."""
    flat = (" ".join(s.replace("(", " ( ").split()) for s in statements)
    return [s for s in flat if s.startswith("WITH w0 AS ( INSERT INTO ") and "FROM alerts" in s]


@pytest.mark.parametrize("first_upsert", [False, True])
async def test_the_deferred_writes_store_what_the_plain_writes_store(
    service: Service, first_upsert: bool
) -> None:
    with _deferred(False):
        plain_seen, plain_answer = await _run(service, 1000, "plain", short=True, first_upsert=first_upsert)
    with _deferred(True):
        short_seen, short_answer = await _run(service, 2000, "short", short=True, first_upsert=first_upsert)
    assert short_answer == plain_answer
    plain, short = await _text_state(service, 1000, "plain"), await _text_state(service, 2000, "short")
    assert short == plain
    assert plain["alerts"] and plain["audit"] and len(plain["actions"]) == 2
    assert len(short_seen) <= len(plain_seen)
    assert _riding(plain_seen) == []


Runs = dict[str, tuple[list[tuple[int, int, int]], list[Any], dict[str, Any]]]


async def lone_checks_both_ways(
    service: Service, switch: Callable[[bool], AbstractContextManager[Any]],
    watch: Callable[[Service], AbstractContextManager[Any]],
) -> Runs:
    """The border folds' requests (tests/test_ingest8_border_folds.py), each a lone ingest, with
    `switch(False)` (tag "plain") and `switch(True)` ("short"), each request inside `watch(service)`:
    for each tag the answers, what each request's watch caught, and the store's state after both."""
    ctx = service.ctx
    caught: dict[str, tuple[list[tuple[int, int, int]], list[Any]]] = {}
    for base, tag, on in ((5000, "plain", False), (6000, "short", True)):
        await ingest(service.sessions, _parsed(_setup(base, tag)), ctx, source="test")
        answers, seen_by_request = [], []
        for request in _requests(base, tag):
            with switch(on), watch(service) as seen:
                result = await ingest(service.sessions, _parsed(request), ctx, source="test")
            answers.append((result.accepted, result.duplicates, len(result.alerts)))
            seen_by_request.append(seen)
        caught[tag] = (answers, seen_by_request)
    runs: Runs = {}
    for base, tag in ((5000, "plain"), (6000, "short")):
        state = await store_state(service, {border_ref(base, role): role for role in BORDER_ROLES}, tag)
        runs[tag] = (*caught[tag], state)
    return runs


async def test_lone_border_checks_store_alike_and_run_one_statement_fewer(service: Service) -> None:
    runs = await lone_checks_both_ways(service, _deferred, _statements)
    plain, short = runs["plain"][2], runs["short"][2]
    assert short == plain
    assert plain["alerts"] and plain["audit"] and plain["deliveries"] and len(plain["checks"]) == 12
    counts = {
        tag: (answers, [len(seen) for seen in caught], sum(len(_riding(seen)) for seen in caught))
        for tag, (answers, caught, _) in runs.items()
    }
    assert counts["short"][0] == counts["plain"][0]
    assert counts["plain"][2] == 0
    if service.engine.dialect.name == "postgresql":
        # The first request, a lone check of a known nominal: its border check rides with the read.
        assert counts["plain"][1][0] - counts["short"][1][0] == 1
        assert counts["short"][2] >= 1
    else:
        assert counts["short"] == counts["plain"]
    assert all(s <= p for s, p in zip(counts["short"][1], counts["plain"][1], strict=True))


async def known_singles(service: Service, base: int, tag: str) -> list[dict[str, Any]]:
    """A visit, a notification and a new action (the bench's singles) of nominals set up (with
    their case records: ingest_arrays7's traffic) under `base` first."""
    setup, _ = traffic(base, tag)
    await ingest(service.sessions, _parsed(setup), service.ctx, source="test")
    return [
        envelope("visit.recorded", id=f"{tag}-v", visor_ref=_ref(base, "known"), occurred_at=AT),
        envelope("notification.received", id=f"{tag}-n", visor_ref=_ref(base, "twice"), occurred_at=AT,
                 kind="weekly", notified_on="2026-11-19"),
        envelope("action.upsert", id=f"{tag}-a", visor_ref=_ref(base, "traveller"), occurred_at=AT,
                 action_id=f"A-{tag}", summary="Fictional action: café 😀, \"quoted\" \\ back"),
    ]


async def in_one_group(committer: GroupCommit, singles: list[dict[str, Any]]) -> list[IngestResult]:
    """Each single a request of its own, all at once: stored in one transaction of `committer`."""
    before = committer.groups
    results = await asyncio.gather(*(committer.ingest(_parsed([s])) for s in singles))
    assert committer.groups == before + 1  # the requests in one transaction
    return results


async def test_a_group_of_singles_is_stored_alike_in_one_statement_fewer(service: Service) -> None:
    """Mixed singles (visits, notifications, new actions: the bench's traffic) of known nominals
    through the events API's group committer, both ways."""
    committer = GroupCommit(service.sessions, service.ctx, source="test")
    answers, counts = {}, {}
    for base, tag, on in ((7000, "plain", False), (8000, "short", True)):
        singles = await known_singles(service, base, tag)
        with _deferred(on), _statements(service) as seen:
            results = await in_one_group(committer, singles)
        answers[tag] = [(r.accepted, r.duplicates, len(r.alerts)) for r in results]
        counts[tag] = (len(seen), len(_riding(seen)))
    assert answers["short"] == answers["plain"] == [(1, 0, 0)] * 3
    assert await _text_state(service, 8000, "short") == await _text_state(service, 7000, "plain")
    if service.engine.dialect.name == "postgresql":
        assert counts["plain"][0] - counts["short"][0] == 1 and counts["short"][1] == 1
    else:
        assert counts["short"] == counts["plain"]
