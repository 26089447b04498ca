"""Review (tenth session) of the ingest's keys as one parameter (ninth session: Batch.keys_as_array,
one JSON array on SQLite, one text[] on PostgreSQL) and the combined write (Batch.combine_writes)
with hostile keys: action ids holding quotes, backslashes, JSON's and PostgreSQL array literals'
special characters ({, }, ",", NULL), non-ASCII, astral and combining characters, 100 characters
(invisible ones are refused by the events' validation); references with slashes and hyphens.
More keys than one chunk of the locking read (500), the same key twice in a batch, then every key
again in a later batch: the locking read must find each row the first batch wrote (an upsert of a
known action updates it; a key not found would be inserted again and refused). With the switches
on and off, into two fresh databases of each kind: the same answers and the same rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from casewatch.clock import FixedClock
from casewatch.ingest.apply import Batch
from casewatch.ingest.pipeline import ingest
from casewatch.store.models import Action, Nominal, Visit
from casewatch.wiring import stop
from tests.support import envelope, make_service, nominal_data
from tests.test_audit9_folds import backing, two_urls  # noqa: F401 (fixtures)
from tests.test_ingest_single_fast import _parsed
from tests.test_triggers_case_data import utc

NOW = "2026-11-20T09:00:00Z"
PATTERNS = (
    'q"{i}', "a'{i}", "b\\{i}\\", "{{{i}}}", "NULL{i}", "c,{i}", "[{i}]", "é{i}ß", "漢{i}",
    "e\U0001f600{i}", "e\u0301{i}", "n{i}" + "x" * 90, "{i} ; --", "%{i}_",
)
KEYS = [p.format(i=i) for i in range(60) for p in PATTERNS]  # 840: two chunks of the read
REFS = ["VS/0001-A", "vs-0001/b", "VS0001C", "A" * 32]


def _actions(tag: str, status: str, at: str) -> list[dict[str, Any]]:
    return [
        envelope("action.upsert", id=f"{tag}-{n}", visor_ref=REFS[n % len(REFS)], occurred_at=at,
                 action_id=key, status=status, summary=f"Fictional action {n} {key[:30]}")
        for n, key in enumerate(KEYS)
    ]


async def _run(url: str, *, on: bool, patch: pytest.MonkeyPatch) -> dict[str, Any]:
    patch.setattr(Batch, "keys_as_array", on)
    patch.setattr(Batch, "combine_writes", on)
    service = await make_service(url, clock=FixedClock(utc(NOW)))
    try:
        answers = []
        requests = [
            [envelope("nominal.upsert", nominal_data(), id=f"setup-{ref}", visor_ref=ref,
                      occurred_at="2026-11-01T00:00:00Z") for ref in REFS],
            # New actions, the first ones twice in the batch (the later upsert wins), and visits.
            [*_actions("new", "open", "2026-11-20T08:00:00Z"),
             *_actions("again", "open", "2026-11-20T08:01:00Z")[:20],
             *(envelope("visit.recorded", id=f"visit-{ref}", visor_ref=ref,
                        occurred_at="2026-11-20T08:00:00Z") for ref in REFS)],
            # Every action known now: each found by the locking read and updated.
            _actions("done", "done", "2026-11-20T08:30:00Z"),
            # The nominals again (their references the locking read's keys).
            [envelope("nominal.upsert", nominal_data(surname="Example"), id=f"again-{ref}", visor_ref=ref,
                      occurred_at="2026-11-10T00:00:00Z") for ref in REFS],
        ]
        for request in requests:
            result = await ingest(service.sessions, _parsed(request), service.ctx, source="test")
            answers.append((result.accepted, result.duplicates, len(result.alerts)))
        async with service.sessions() as session:
            actions = (await session.execute(
                select(Action.action_id, Action.visor_ref, Action.summary, Action.status, Action.state_as_of,
                       Action.done_at).order_by(Action.action_id))).all()
            nominals = (await session.execute(select(Nominal.visor_ref, Nominal.surname, Nominal.state_as_of)
                                              .order_by(Nominal.visor_ref))).all()
            visits = (await session.execute(select(Visit.visor_ref, Visit.event_id)
                                            .order_by(Visit.event_id))).all()
        return {"answers": answers, "actions": [tuple(a) for a in actions],
                "nominals": [tuple(n) for n in nominals], "visits": [tuple(v) for v in visits]}
    finally:
        await stop(service)


async def test_hostile_keys_are_found_as_the_in_list_finds_them(
    two_urls: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    plain_url, fast_url = two_urls
    with monkeypatch.context() as patch:
        plain = await _run(plain_url, on=False, patch=patch)
    with monkeypatch.context() as patch:
        fast = await _run(fast_url, on=True, patch=patch)
    assert fast == plain
    assert {a[0] for a in plain["actions"]} == set(KEYS)
    assert all(a[3] == "done" for a in plain["actions"])  # every later upsert found its row
    assert plain["answers"][1][0] == len(KEYS) + 20 + len(REFS)
    assert [n[1] for n in plain["nominals"]] == ["Example"] * len(REFS)
    assert json.dumps(KEYS)  # (the keys are JSON-safe strings; their JSON is what SQLite reads)
