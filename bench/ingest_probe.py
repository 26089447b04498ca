"""Probe for the events API's ingest figures (issue 17, seventh session): runs bench_ingest on a
fresh data set, optionally after bench_end_to_end (as `python -m bench --only e2e,ingest` does),
and reports the garbage collector's passes and their time during the ingest.

    python -m bench.ingest_probe --db-url URL [--e2e] [--singles N] [--batches N] [--settle]

Not part of `python -m bench`: a tool to see where the single-event figure moves.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

from bench import cases
from bench.dataset import PROBE_SIZES, Sizes
from bench.harness import prepare


class GcClock:
    """Collections by generation and their wall time, while installed."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = int(info["generation"])
            self.count[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started

    def report(self) -> dict[str, Any]:
        return {"collections": self.count, "ms": [round(s * 1000, 1) for s in self.seconds]}


class StepClock:
    """Wall time in the group committer's steps (wrapped in this process only)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await inner(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started
                self.calls[label] = self.calls.get(label, 0) + 1

        setattr(owner, name, timed)

    def report(self) -> dict[str, Any]:
        return {k: [self.calls[k], round(v * 1000 / self.calls[k], 3)] for k, v in self.seconds.items()}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sizes = Sizes.of_arguments(args)
    out: dict[str, Any] = {"dataset": await prepare(args.db_url, sizes)}
    if args.e2e:
        await cases.bench_end_to_end(args.db_url, sizes, 100, rate=5.0)
    if args.no_ping:
        import casewatch.wiring as wiring

        plain = getattr(wiring, "make_engine")  # noqa: B009 (not re-exported; patched here only)

        def unpinged(*a: Any, **kw: Any) -> Any:
            engine = plain(*a, **kw)
            engine.sync_engine.pool._pre_ping = False  # what the ping costs a transaction
            return engine

        setattr(wiring, "make_engine", unpinged)  # noqa: B010
    if args.no_arrays:
        from casewatch.ingest.apply import Batch

        Batch.array_writes = False  # PostgreSQL's writes as executemany, for comparison
    out["rounds"] = []
    steps = StepClock()
    if args.steps:
        from casewatch.ingest import group, pipeline

        steps.wrap(group.GroupCommit, "_gather", "gather")
        steps.wrap(group.GroupCommit, "_together", "together")
        steps.wrap(pipeline, "_ingest_in", "ingest_in")
        steps.wrap(group, "_ingest_with_retries", "with_retries")
    for _ in range(args.rounds):
        steps.seconds, steps.calls = {}, {}
        clock = GcClock()
        gc.callbacks.append(clock)
        try:
            ingest = await cases.bench_ingest(args.db_url, sizes, args.singles, args.batches)
        finally:
            gc.callbacks.remove(clock)
        out["rounds"].append({**_brief(ingest, clock), "steps_ms": steps.report()})
    return out


def _brief(ingest: dict[str, Any], clock: GcClock) -> dict[str, Any]:
    single, floor = ingest["single"], ingest["single_least_work_group"]
    return {
        "single": [single["per_s"], single["p50_ms"], single["server_cpu_ms_per_request"],
                   single["requests_per_transaction"]],
        "floor_group": [floor["per_s"], floor["p50_ms"], floor["server_cpu_ms_per_request"]],
        "batch_per_s": ingest["batch"]["events_per_s"],
        "gc": clock.report(),
    }


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest_probe")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--e2e", action="store_true", help="run bench_end_to_end first")
    parser.add_argument("--no-arrays", action="store_true", help="executemany, not arrays (PostgreSQL)")
    parser.add_argument("--no-ping", action="store_true", help="the service's pool without pre-ping")
    parser.add_argument("--steps", action="store_true", help="time the group committer's steps")
    parser.add_argument("--rounds", type=int, default=1, help="bench_ingest runs on the one data set")
    parser.add_argument("--singles", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=10)
    PROBE_SIZES.add_arguments(parser)
    return parser.parse_args()


if __name__ == "__main__":
    for line in asyncio.run(main(_parse()))["rounds"]:
        print(json.dumps(line))
