"""Probe for a lone border check's ingest (issue 17, eighth session): single border checks, one at
a time, through the events API's group committer (the path POST /api/v1/events takes after the
body is read and parsed), each timed from the call to its durable commit, with the statements
it ran. Optionally profiled with pyinstrument.

    python -m bench.lone_probe --db-url URL [--events 300] [--profile out.html]

Not part of `python -m bench`: a tool to see where a lone event's ingest time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, select

from bench import cases
from bench.dataset import Sizes, make_settings
from bench.harness import prepare
from bench.measure import percentile
from casewatch.api.events import loads_strict
from casewatch.clock import SystemClock
from casewatch.ingest.group import GroupCommit
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.models import Nominal
from casewatch.wiring import create_service, settle_heap, stop


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sizes = Sizes.of_arguments(args)
    out: dict[str, Any] = {}
    if args.plain:
        from casewatch.ingest.apply import Batch
        from casewatch.triggers.dispatch import _Run

        Batch.carry_checks = _Run.fold_border_reads = False
    if args.unfolded_writes:
        from casewatch.alerts import lifecycle

        lifecycle.FOLD_OPEN_WRITES = False
    if args.by_sqlalchemy:
        import casewatch.store.direct_read as direct_read

        direct_read.ENABLED = False
    if args.undeferred_writes:
        from casewatch.ingest import pipeline

        pipeline.DEFER_WRITES = False
    if not args.no_prepare:
        out["dataset"] = await prepare(args.db_url, sizes)
    settings = make_settings(args.db_url, sizes)
    service = await create_service(settings, SystemClock())
    statements: list[str] = []

    def _seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        words = statement.split()
        statements.append(" ".join(words[:4])[:60])

    event.listen(service.engine.sync_engine, "before_cursor_execute", _seen)
    try:
        settle_heap(service)
        async with service.sessions() as session:
            refs = list((await session.execute(
                select(Nominal.visor_ref).where(Nominal.registered.is_(True)).order_by(Nominal.visor_ref)
                .limit(args.events + 20)
            )).scalars())
        group = GroupCommit(service.sessions, service.ctx, source="api")
        times: list[float] = []
        counts: list[int] = []
        kinds: Counter[str] = Counter()
        profiler = None
        for i, ref in enumerate(refs[: args.events + 20]):
            body = json.dumps(cases._event("travel.border_alert", ref, {
                "port": "Benchport", "direction": "outbound",
                "checked_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            }, datetime.now(UTC))).encode()
            envelopes, errors = parse_envelopes(
                loads_strict(body), now=service.ctx.clock.now(), max_ahead_seconds=300
            )
            assert not errors, errors
            if i == 20 and args.profile:
                # Not a dependency (installed by hand for profiling), so imported by name.
                Profiler = importlib.import_module("pyinstrument").Profiler
                profiler = Profiler(interval=0.0002, async_mode="enabled")
                profiler.start()
            statements.clear()
            started = time.perf_counter()
            result = await group.ingest(envelopes)
            elapsed = time.perf_counter() - started
            assert len(result.alerts) == 2, result
            if i >= 20:
                times.append(elapsed)
                counts.append(len(statements))
                kinds.update(statements)
            await asyncio.sleep(args.gap)
        if profiler is not None:
            profiler.stop()
            Path(args.profile).write_text(profiler.output_html())  # noqa: ASYNC240 (after the timing)
            Path(args.profile + ".txt").write_text(  # noqa: ASYNC240
                profiler.output_text(unicode=False, color=False, show_all=True)
            )
    finally:
        await stop(service)
    n = len(times)
    out["ingest_ms"] = {
        "p50": round(percentile(times, 50) * 1000, 2), "p90": round(percentile(times, 90) * 1000, 2),
        "p99": round(percentile(times, 99) * 1000, 2), "events": n,
    }
    out["statements_per_event"] = percentile(counts, 50)
    out["statements"] = {k: round(v / n, 2) for k, v in kinds.most_common()}
    return out


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.lone_probe")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between events")
    parser.add_argument("--profile", default="", help="pyinstrument HTML to this file")
    parser.add_argument("--plain", action="store_true", help="the eighth session's folds off")
    parser.add_argument("--unfolded-writes", action="store_true",
                        help="the alerts, deliveries and audit entries in three statements (lifecycle)")
    parser.add_argument("--undeferred-writes", action="store_true",
                        help="the batch's writes in a statement of their own (pipeline.DEFER_WRITES)")
    parser.add_argument("--by-sqlalchemy", action="store_true",
                        help="every statement through SQLAlchemy, none by asyncpg (store.direct_read)")
    parser.add_argument("--no-prepare", action="store_true", help="reuse the data set at the URL")
    Sizes(nominals=2000, actions=5000, officers=50, teams=10).add_arguments(parser)
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(_parse())), indent=1))
