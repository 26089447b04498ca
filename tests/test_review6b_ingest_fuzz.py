"""Review (sixth session, R2): random batches through the ingest's plain and short ways
(tests/test_review6b_ingest.py's comparison: answers, alerts, audit, nominal, action and
notification rows), seeded, both databases: upserts with dates and levels, notifications of clock
kinds, actions (two ids, moved between nominals, done and open, stale), visits, level changes,
detentions, travel, border checks, recalls, change detections and repeated event ids, up to 14
events on 7 nominals (some unknown) in one batch. 400 seeds were run on each database during the
review (all the same); 12 are kept for the suite."""

from __future__ import annotations

import random
from typing import Any

import pytest

from casewatch.ingest.pipeline import ingest
from casewatch.triggers.scan import run_scan
from casewatch.wiring import Service
from tests.support import envelope, nominal_data
from tests.test_ingest_single_fast import service_fixture  # noqa: F401 (fixture)
from tests.test_review6b_ingest import NOW, ROLES, _parsed, _ref, _setup, _short_ways, _state
from tests.test_triggers_case_data import utc

TIMES = ("2026-11-18T08:00:00Z", "2026-11-19T08:00:00Z", "2026-11-20T08:00:00Z", "2026-11-20T08:30:00Z")
OTHER_TYPES = ("detention.started", "change.detected", "travel.notified", "travel.border_alert",
               "recall.issued", "recall.returned")
DATES = ("2026-09-01", "2026-10-15", "2026-11-10", "2026-11-18", "2026-11-19")


def _random_traffic(rng: random.Random, base: int, tag: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for n in range(rng.randint(3, 14)):
        role = rng.choice(ROLES)
        ref, at, eid = _ref(base, role), rng.choice(TIMES), f"{tag}-r{n}"
        kind = rng.randrange(9)
        if kind == 0:
            data = nominal_data(last_notification_on=rng.choice((None, *DATES)),
                                mappa_level=rng.choice((1, 2, 3)), risk_level=rng.choice(("medium", "high")),
                                area=rng.choice(("N01", "N02")))
            events.append(envelope("nominal.upsert", data, id=eid, visor_ref=ref, occurred_at=at))
        elif kind in (1, 2):
            events.append(envelope("notification.received", id=eid, visor_ref=ref, occurred_at=at,
                                   kind=rng.choice(("periodic", "weekly", "initial")),
                                   notified_on=rng.choice(DATES)))
        elif kind == 3:
            events.append(envelope("action.upsert", id=eid, visor_ref=ref, occurred_at=at,
                                   action_id=f"{rng.choice('AN')}-{tag}", due_on=rng.choice(DATES),
                                   status=rng.choice(("open", "done"))))
        elif kind == 4:
            events.append(envelope("visit.recorded", id=eid, visor_ref=ref, occurred_at=at,
                                   visited_on=rng.choice(DATES)))
        elif kind == 5:
            lv = rng.choice((1, 2, 3))
            events.append(envelope("mappa.level_changed", id=eid, visor_ref=ref, occurred_at=at,
                                   from_level=lv, to_level=4 - lv if lv != 2 else 3))
        elif kind == 6:
            events.append(envelope("detention.ended", id=eid, visor_ref=ref, occurred_at=at,
                                   ended_on=rng.choice(DATES)))
        elif kind == 7:
            events.append(envelope(rng.choice(OTHER_TYPES), id=eid, visor_ref=ref, occurred_at=at))
        else:  # an event id repeated in the batch: a duplicate
            if events:
                events.append({**rng.choice(events)})
    return events


@pytest.mark.parametrize("seed", range(12))
async def test_review_random_batches_store_the_same_by_both_ways(service: Service, seed: int) -> None:
    rng = random.Random(seed)
    traffic = _random_traffic(rng, 0, "T")
    ctx = service.ctx
    answers = []
    for base, tag in ((1000, "plain"), (2000, "short")):
        await ingest(service.sessions, _parsed(_setup(base, tag)), ctx, source="test")
    await run_scan(service.sessions, ctx, utc(NOW))
    for base, tag, short in ((1000, "plain", False), (2000, "short", True)):
        raws = [
            {**e, "id": e["id"].replace("T-", f"{tag}-"),
             "visor_ref": _ref(base, ROLES[int(e["visor_ref"][-1])]),
             "data": {**e["data"], **({"action_id": e["data"]["action_id"].replace("-T", f"-{tag}")}
                                      if "action_id" in e["data"] else {})}}
            for e in traffic
        ]
        with _short_ways(short):
            result = await ingest(service.sessions, _parsed(raws), ctx, source="test")
        answers.append((result.accepted, result.duplicates, len(result.alerts)))
    await run_scan(service.sessions, ctx, utc("2026-11-21T09:00:00Z"))
    assert answers[0] == answers[1]
    plain, short_state = await _state(service, 1000, "plain"), await _state(service, 2000, "short")
    for part in plain:
        assert short_state[part] == plain[part], (seed, part, traffic)
