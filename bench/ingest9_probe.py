"""Probe for single events at 8 requesters (issue 17, ninth session): casewatch's events API only,
no floors, in rounds on one data set, so that a profiler attached to this process (py-spy) sees the
service's work and little else, and so that two variants can alternate in one process.

    python -m bench.ingest9_probe --db-url URL [--singles N] [--rounds N] [--steps]
    python -m bench.ingest9_probe --db-url URL --txn [--groups N] [--rounds N] [--variant NAME]

Each round sends `--singles` mixed events (bench.cases.mixed_event) from 8 requesters in the load
generator's child process and reports events/s, p50 ms, this process's CPU ms an event, requests a
transaction and, with --steps, the wall time of the group committer's cycle: the gather wait, the
transaction (begin to commit), and the answers' settling.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import cases
from bench.dataset import PROBE_SIZES, Sizes, make_settings
from bench.harness import prepare
from bench.ingest_probe import StepClock
from bench.loadgen import Request, closed_loop_remote, shutdown
from casewatch.clock import SystemClock
from casewatch.wiring import create_service, settle_heap, stop


def _switch(owner: str, name: str) -> Callable[[bool], None]:
    """Sets a class's switch (module:Class, attribute) to a value."""
    def flip(on: bool) -> None:
        module, cls = owner.split(":")
        setattr(getattr(importlib.import_module(module), cls), name, on)
    return flip


# A faster path's switch: on for the variant's rounds, off for the plain ones.
VARIANTS: dict[str, Callable[[bool], None]] = {
    "any_keys": _switch("casewatch.ingest.apply:Batch", "keys_as_array"),
    "combine_writes": _switch("casewatch.ingest.apply:Batch", "combine_writes"),
    "hold_writes": _switch("casewatch.ingest.apply:Batch", "hold_writes"),
    "array_events": _switch("casewatch.ingest.apply:Batch", "array_events"),
    "defer_writes": lambda on: setattr(importlib.import_module("casewatch.ingest.pipeline"), "DEFER_WRITES", on),  # noqa: E501
}


async def txn_rounds(args: argparse.Namespace, service: Any, sizes: Sizes, rng: random.Random) -> None:
    from casewatch.ingest.group import GroupCommit
    from casewatch.ingest.schema import parse_envelopes

    committer = GroupCommit(service.sessions, service.ctx, source="api")

    def group() -> list[Any]:
        out = []
        for i in range(8):
            raw = json.loads(json.dumps([cases.mixed_event(i, sizes, rng)]))
            envelopes, errors = parse_envelopes(raw, now=service.ctx.clock.now(), max_ahead_seconds=300)
            assert not errors
            out.append(envelopes)
        return out

    for _ in range(10):  # warm: connections, statement caches
        await asyncio.gather(*(committer.ingest(e) for e in group()))
    seen: dict[str, list[float]] = {}
    for number in range(args.rounds):
        on = bool(args.variant) and number % 2 == 1
        if args.variant:
            VARIANTS[args.variant](on)
        groups = [group() for _ in range(args.groups)]
        cpu, wall = time.process_time(), time.perf_counter()
        for envelopes in groups:
            await asyncio.gather(*(committer.ingest(e) for e in envelopes))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        name = args.variant if on else "plain"
        seen.setdefault(name, []).append(cpu * 1000 / (8 * args.groups))
        if args.verbose:
            print(json.dumps({
                "variant": name, "cpu_ms_event": round(seen[name][-1], 3),
                "wall_ms_group": round(wall * 1000 / args.groups, 3),
            }), flush=True)
    if args.variant:
        VARIANTS[args.variant](True)
    # Rounds alternate, so a drift of the machine's speed reaches both; the median of each.
    print(json.dumps({name: {"rounds": len(cpus), "cpu_ms_event_median": round(statistics.median(cpus), 3),
                             "min": round(min(cpus), 3)} for name, cpus in seen.items()}), flush=True)


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    sizes = Sizes.of_arguments(args)
    await prepare(args.db_url, sizes)
    rng = random.Random(11)
    service = await create_service(make_settings(args.db_url, sizes), SystemClock())
    settle_heap(service)
    if args.txn:
        try:
            await txn_rounds(args, service, sizes, rng)
        finally:
            await stop(service)
        return []
    steps = StepClock()
    if args.steps:
        from casewatch.ingest import group, pipeline

        steps.wrap(group.GroupCommit, "_gather", "gather")
        steps.wrap(group.GroupCommit, "_together", "together")
        steps.wrap(group, "_ingest_with_retries", "transaction")
        steps.wrap(pipeline, "_ingest_in", "ingest_in")
    rounds: list[dict[str, Any]] = []
    try:
        async with cases.serve(service.app) as url:
            def requests(count: int) -> list[Request]:
                bodies = [json.dumps(cases.mixed_event(i, sizes, rng)).encode() for i in range(count)]
                return [
                    Request("POST", f"{url}/api/v1/events", body, tuple(cases.events_signed(body).items()))
                    for body in bodies
                ]

            for _ in range(args.rounds):
                steps.seconds, steps.calls = {}, {}
                warm = requests(cases.warmup_size(8))
                timed = requests(args.singles)
                before = cases.group_commit_counts(service)
                cpu = time.process_time()
                measured = await closed_loop_remote(timed, 8, ok_statuses=(202,), warmup=warm)
                cpu_ms = (time.process_time() - cpu) * 1000 / (len(warm) + len(timed))
                after = cases.group_commit_counts(service)
                per_txn = (len(warm) + len(timed)) / max(1, after[1] - before[1])
                rounds.append({
                    "per_s": measured["per_s"], "p50_ms": measured["p50_ms"], "p99_ms": measured["p99_ms"],
                    "cpu_ms": round(cpu_ms, 3), "req_per_txn": round(per_txn, 2),
                    "steps_ms": steps.report(),
                })
                print(json.dumps(rounds[-1]), flush=True)
    finally:
        await stop(service)
        shutdown()
    return rounds


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest9_probe")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--steps", action="store_true", help="time the group committer's steps")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--txn", action="store_true", help="groups of 8 through the group committer, no HTTP")
    parser.add_argument("--groups", type=int, default=100, help="groups a --txn round")
    parser.add_argument("--verbose", action="store_true", help="--txn: a line a round")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="--txn rounds alternate plain and this")
    parser.add_argument("--singles", type=int, default=2000)
    PROBE_SIZES.add_arguments(parser)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_parse()))
