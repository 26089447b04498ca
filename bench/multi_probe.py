"""`python -m bench.multi_probe --db-url URL [--prepare] [--requests 600] [--no-delivery]`

bench.multi's load (16 requesters, half signed border checks opening alerts, half /flags) against
one service in this process, with the Slack stand-in and the relay in processes of their own (as
`casewatch serve` has them in bench.multi), to see where a border check waits under concurrency:
each request's wait for its group commit (queue and transaction), the groups' sizes, statements and
durations, the event loop's lag (a 5 ms timer's overshoot) and the delivery work beside them.
`--no-delivery` leaves the outbox to fill for the run (the worker does not start), to measure
what delivery's share of the loop costs the answers. Not part of `python -m bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import event

import casewatch.ingest.group as group_mod
from bench import harness
from bench.cases import serve
from bench.dataset import BOT_TOKEN, SIGNING_SECRET, Sizes, make_settings
from bench.loadgen import closed_loop_remote, shutdown
from bench.measure import percentile
from bench.multi import CONCURRENCY, load
from bench.relay import ProcessMailSink
from bench.slack_process import ProcessSlackStandIn
from casewatch.clock import SystemClock
from casewatch.delivery.worker import DeliveryWorker
from casewatch.wiring import create_service, settle_heap, start_background, stop

IN_GROUP: contextvars.ContextVar[bool] = contextvars.ContextVar("in_group", default=False)


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(percentile(values, 50), 2),
            "p90": round(percentile(values, 90), 2), "p99": round(percentile(values, 99), 2),
            "max": round(max(values), 2), "sum": round(sum(values), 1)}


class Probe:
    def __init__(self) -> None:
        self.request_ms: list[float] = []  # GroupCommit.ingest: queued + the transaction
        self.groups: list[dict[str, Any]] = []  # size, ms, statements
        self.lag_ms: list[float] = []
        self.statements = 0
        self.record_ms: list[float] = []
        self.window: tuple[float, float] = (0.0, 0.0)

    def install(self) -> Callable[[], None]:
        saved: list[tuple[Any, str, Any]] = []
        probe = self

        def wrap(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
            original = getattr(owner, name)
            saved.append((owner, name, original))
            setattr(owner, name, functools.wraps(original)(make(original)))

        def ingest(original: Any) -> Any:
            async def timed(self: Any, envelopes: Any) -> Any:
                started = time.monotonic()
                try:
                    return await original(self, envelopes)
                finally:
                    probe.request_ms.append((time.monotonic() - started) * 1000)
            return timed

        def grouped(original: Any) -> Any:
            async def timed(self: Any, group: Any) -> Any:
                size = len(group) if isinstance(group, list) else 1
                token = IN_GROUP.set(True)
                before = probe.statements
                started = time.monotonic()
                try:
                    return await original(self, group)
                finally:
                    took = (time.monotonic() - started) * 1000
                    probe.groups.append({"at": started, "size": size, "ms": took,
                                         "statements": probe.statements - before})
                    IN_GROUP.reset(token)
            return timed

        def recorded(original: Any) -> Any:
            async def timed(self: Any, results: Any) -> Any:
                started = time.monotonic()
                try:
                    return await original(self, results)
                finally:
                    probe.record_ms.append((time.monotonic() - started) * 1000)
            return timed

        wrap(group_mod.GroupCommit, "ingest", ingest)
        wrap(group_mod.GroupCommit, "_together", grouped)
        wrap(group_mod.GroupCommit, "_alone", grouped)
        wrap(DeliveryWorker, "_record_many", recorded)

        def undo() -> None:
            for owner, name, original in reversed(saved):
                setattr(owner, name, original)

        return undo

    def watch(self, engine: Any) -> None:
        def statement(*_args: Any) -> None:
            if IN_GROUP.get():
                self.statements += 1

        event.listen(engine.sync_engine, "before_cursor_execute", statement)

    async def lag(self, stop_: asyncio.Event) -> None:
        while not stop_.is_set():
            started = time.monotonic()
            await asyncio.sleep(0.005)
            self.lag_ms.append((time.monotonic() - started - 0.005) * 1000)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sizes = Sizes(nominals=5000, actions=20000, officers=200, teams=10)  # bench --quick's
    if args.prepare:
        print("prepared", await harness.prepare(args.db_url, sizes))
    if args.no_delivery:
        async def idle(self: Any, stop_: asyncio.Event) -> None:
            await stop_.wait()
        DeliveryWorker.run_forever = idle  # type: ignore[method-assign,assignment]
    probe = Probe()
    undo = probe.install()
    sink = ProcessMailSink().start()
    out: dict[str, Any] = {"no_delivery": args.no_delivery}
    try:
        async with ProcessSlackStandIn(token=BOT_TOKEN) as slack:
            settings = make_settings(
                args.db_url, sizes,
                slack={"mode": "http", "signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN,
                       "api_url": slack.url},
                smtp={"host": "127.0.0.1", "port": sink.port},
                delivery={"chat_interval_seconds": 0.0},
                database={"pool_size": CONCURRENCY},
            )
            service = await create_service(settings, SystemClock())
            probe.watch(service.engine)
            lag_stop = asyncio.Event()
            try:
                await start_background(service)
                settle_heap(service)
                async with serve(service.app) as url:
                    warm = [r for r in load(url, sizes, 4 * CONCURRENCY, 1, seed=101) if r.tag == "flags"]
                    lagging = asyncio.create_task(probe.lag(lag_stop))
                    first = args.first_nominal
                    since = time.monotonic()
                    result = await closed_loop_remote(
                        load(url, sizes, args.requests, first, seed=1), CONCURRENCY, (200, 202), warmup=warm
                    )
                    lag_stop.set()
                    await lagging
                    kept = ("n", "errors", "p50_ms", "p99_ms", "per_s", "by_tag")
                    out["load"] = {k: result[k] for k in kept}
                    start, end = result["timed_window"]
                    inside = [g for g in probe.groups if start <= g["at"] <= end]
                    out["groups"] = {
                        "count": len(inside), "size": stats([g["size"] for g in inside]),
                        "ms": stats([g["ms"] for g in inside]),
                        "statements": stats([g["statements"] for g in inside]),
                        "busy_share": round(sum(g["ms"] for g in inside) / 1000 / (end - start), 3),
                        "sizes": sorted(Counter(g["size"] for g in inside).items()),
                    }
                    out["ingest_request_ms"] = stats(probe.request_ms[-(args.requests // 2):])
                    out["loop_lag_ms"] = stats(probe.lag_ms)
                    out["record_ms"] = stats(probe.record_ms)
                    out["since_start_s"] = round(time.monotonic() - since, 1)
            finally:
                await stop(service)
    finally:
        sink.stop()
        undo()
        shutdown()
    return out


def cli(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.multi_probe")
    p.add_argument("--db-url", required=True)
    p.add_argument("--prepare", action="store_true")
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--first-nominal", type=int, default=1, help="border checks from this nominal on")
    p.add_argument("--no-delivery", action="store_true")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    out = asyncio.run(main(args))
    text = json.dumps(out, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    cli()


