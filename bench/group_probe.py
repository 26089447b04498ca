"""Probe for a group commit's cost (issue 17, thirteenth session): groups of `--size` mixed single
events (the bench's singles traffic) through the events API's group committer, in this process
(no HTTP), one group at a time; the wall time and this process's CPU time a group, and the
statements each ran as SQLAlchemy's listeners see them (those sent by asyncpg included,
store.direct_read), with how many SQLAlchemy executed itself.

    python -m bench.group_probe --db-url URL [--size 8] [--groups 300] [--plain] [--no-prepare]

`--plain`: every statement through SQLAlchemy (store.direct_read.ENABLED off), for an A/B. Not part
of `python -m bench`: a tool to see where a group's CPU goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from typing import Any

from sqlalchemy import event

import casewatch.store.direct_read as direct_read
from bench import cases
from bench.dataset import PROBE_SIZES, Sizes, make_settings
from bench.harness import prepare
from bench.measure import percentile
from casewatch.api.events import loads_strict
from casewatch.clock import SystemClock
from casewatch.ingest.group import GroupCommit
from casewatch.ingest.schema import parse_envelopes
from casewatch.wiring import create_service, settle_heap, stop

WARM_GROUPS = 5


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sizes = Sizes.of_arguments(args)
    direct_read.ENABLED = not args.plain
    if not args.no_prepare:
        await prepare(args.db_url, sizes)
    service = await create_service(make_settings(args.db_url, sizes), SystemClock())
    seen: list[str] = []
    executed = [0]

    def before(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()[:4])[:60])

    def after(*_: Any) -> None:
        executed[0] += 1

    event.listen(service.engine.sync_engine, "before_cursor_execute", before)
    event.listen(service.engine.sync_engine, "after_cursor_execute", after)
    rng = random.Random(5)
    group = GroupCommit(service.sessions, service.ctx, source="api")
    walls: list[float] = []
    cpus: list[float] = []
    kinds: Counter[str] = Counter()
    by_sqlalchemy = 0
    try:
        settle_heap(service)
        for n in range(args.groups + WARM_GROUPS):
            bodies = [json.dumps(cases.mixed_event(i, sizes, rng)).encode() for i in range(args.size)]
            parsed = [parse_envelopes(loads_strict(b), now=service.ctx.clock.now(), max_ahead_seconds=300)[0]
                      for b in bodies]
            seen.clear()
            executed[0] = 0
            wall, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(group.ingest(envelopes) for envelopes in parsed))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if n >= WARM_GROUPS:
                walls.append(wall)
                cpus.append(cpu)
                kinds.update(seen)
                by_sqlalchemy += executed[0]
            await asyncio.sleep(0.005)
    finally:
        await stop(service)
    groups = len(walls)
    return {
        "size": args.size, "groups": groups, "direct": not args.plain,
        "wall_ms": {
            "p50": round(percentile(walls, 50) * 1000, 2), "mean": round(sum(walls) / groups * 1000, 2),
        },
        "cpu_ms_a_group": round(sum(cpus) / groups * 1000, 3),
        "statements_a_group": round(sum(kinds.values()) / groups, 2),
        "executed_by_sqlalchemy_a_group": round(by_sqlalchemy / groups, 2),
        "statements": {k: round(v / groups, 2) for k, v in kinds.most_common()},
    }


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.group_probe")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--size", type=int, default=8, help="single events a group")
    parser.add_argument("--groups", type=int, default=300)
    parser.add_argument("--plain", action="store_true", help="every statement through SQLAlchemy")
    parser.add_argument("--no-prepare", action="store_true", help="reuse the data set at the URL")
    PROBE_SIZES.add_arguments(parser)
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(_parse())), indent=1))
