"""A bounded soak (~20 s; `python -m bench.soak --seconds 600` for the long one): steady ingest
through the events API while the Slack stand-in answers 429 in bursts. At the end the outbox has
drained (queue depth 0, nothing dead), every request was accepted, and memory stayed flat."""

from __future__ import annotations

import pytest

from bench.soak import run_soak

pytestmark = pytest.mark.slow


async def test_soak_with_429_bursts_drains_the_outbox_and_holds_memory(sqlite_url: str) -> None:
    result = await run_soak(sqlite_url, seconds=20, ticks_per_s=5)
    assert result["bursts"] >= 5 and result["slack_429_answered"] >= 20  # the bursts really came
    assert result["statuses"] == {202: result["ticks"]}
    assert result["queue_depth"] == 0, result
    assert set(result["deliveries"]) == {"sent"}, result  # nothing dead, nothing stuck
    recalls = (result["ticks"] + 1) // 2
    assert result["deliveries"]["sent"] >= 3 * recalls  # control room, team channel, SPOC each
    assert result["rss_end_mb"] - result["rss_start_mb"] < 60, result
