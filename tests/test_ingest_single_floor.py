"""The least-work baselines for single events (bench.cases.least_work_ingest_app) do the work an
event needs and no less: a signed envelope is stored as one events row, committed before its 202;
a repeated id is a duplicate; a forged signature or an envelope without its fields is refused and
stores nothing; with group commit, concurrent requests share commits and each is answered."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from bench.cases import FLOOR_EVENTS, events_signed, least_work_ingest_app, serve
from casewatch.store.engine import make_engine


def _event(n: int) -> dict[str, Any]:
    return {
        "id": f"floor-{n}", "type": "visit.recorded", "occurred_at": "2026-11-20T09:30:00Z",
        "visor_ref": f"VS-{n:07d}", "data": {"visited_on": "2026-11-20"},
    }


async def _post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    async with http.post(f"{url}/api/v1/events", data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


@pytest.mark.parametrize("group_commit", [False, True])
async def test_the_floor_stores_a_signed_event_once_and_refuses_the_rest(
    db_url: str, group_commit: bool
) -> None:
    engine = make_engine(db_url)
    app, floor_engine, grouped = await least_work_ingest_app(db_url, 4, group_commit=group_commit)
    good = json.dumps(_event(1)).encode()
    forged = {**events_signed(good), "X-Casewatch-Signature": "v2=" + "0" * 64}
    no_ref = json.dumps({k: v for k, v in _event(2).items() if k != "visor_ref"}).encode()
    naive_time = json.dumps({**_event(3), "occurred_at": "2026-11-20T09:30:00"}).encode()
    try:
        async with serve(app) as url, aiohttp.ClientSession() as http:
            assert await _post(http, url, good, events_signed(good)) == (
                202, {"accepted": 1, "duplicates": 0, "alerts": []}
            )
            assert await _post(http, url, good, events_signed(good)) == (
                202, {"accepted": 0, "duplicates": 1, "alerts": []}
            )
            assert (await _post(http, url, good, forged))[0] == 401
            assert (await _post(http, url, no_ref, events_signed(no_ref)))[0] == 400
            assert (await _post(http, url, naive_time, events_signed(naive_time)))[0] == 400
            bodies = [json.dumps(_event(n)).encode() for n in range(10, 26)]
            answers = await asyncio.gather(*(_post(http, url, b, events_signed(b)) for b in bodies))
            assert [status for status, _ in answers] == [202] * len(bodies)
            assert all(answer["accepted"] == 1 for _, answer in answers)
        async with engine.connect() as conn:
            ids = set((await conn.execute(select(FLOOR_EVENTS.c.id))).scalars())
            count = (await conn.execute(select(func.count()).select_from(FLOOR_EVENTS))).scalar_one()
        assert ids == {"floor-1"} | {f"floor-{n}" for n in range(10, 26)} and count == len(ids)
        if grouped is not None:
            assert grouped.transactions < 1 + len(bodies) + 1  # some concurrent requests shared one
    finally:
        await floor_engine.dispose()
        await engine.dispose()
