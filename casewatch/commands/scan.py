"""`casewatch scan [--at ISO8601 [--act]] [--config PATH]`: evaluate every time-based trigger once
and print how many alerts of each kind were opened and resolved. Exit 0, or 2 if it cannot run.

A scan acts on the database: it opens, raises and resolves alerts and queues them to be sent. As
of an --at far from now that is seldom what its runner means (a what-if, a mistyped year), and not
all of it comes back at the next scan as of now: alerts resolved early reopen under new ids
(their acknowledgements lost, sent again), and severities raised stay raised. So an --at more
than AT_TOLERANCE from now is refused unless --act says it is meant (a test or demo database)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from casewatch.audit.seal import sealing_beside
from casewatch.clock import SystemClock
from casewatch.commands._support import configure_logging, directory_problem, schema_problem, seal_audit
from casewatch.config import load_config
from casewatch.context import Context
from casewatch.directory import sync_directory
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.triggers.scan import run_scan

AT_TOLERANCE = timedelta(minutes=5)


def at_problem(at: datetime | None, now: datetime, act: bool) -> str | None:
    """Why a scan as of `at` is refused without --act, or None."""
    if at is None or act or abs(at - now) <= AT_TOLERANCE:
        return None
    gap = abs(at - now)
    hours, minutes = gap.seconds // 3600, gap.seconds % 3600 // 60
    amount = f"{gap.days} day(s)" if gap.days else f"{hours} hour(s) {minutes} min"
    side = "before" if at < now else "after"
    return (
        f"casewatch scan: --at is {amount} {side} now. A scan acts on the database as of that "
        "instant: it opens, raises and resolves alerts and sends them, and an alert resolved early "
        "or raised does not all come back at the next scan as of now. Leave out --at, or add --act "
        "to do it all the same (a test or demo database)."
    )


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """A first scan allocates millions of short-lived rows, records and dicts, and the cyclic
    collector at its default young-generation threshold (700) took ~1.2 s of ~4.5 s of CPU
    (bench, 1M actions). Meanwhile, what is alive already (modules, configuration) is frozen out
    of its passes and it runs every 50,000 net allocations: cycles are still collected, a few MB
    later. Restored afterwards (the command also runs inside other processes, such as tests)."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    configure_logging(settings)
    if refused := directory_problem(settings, "scan"):
        print(refused, file=sys.stderr)
        return 2
    at = getattr(args, "at", None)  # an aware UTC datetime, parsed by the CLI
    if refused := at_problem(at, SystemClock().now(), bool(getattr(args, "act", False))):
        print(refused, file=sys.stderr)
        return 2

    async def _scan() -> int:
        engine = make_engine(settings.database.url, pool_size=settings.database.pool_size)
        try:
            problem = await schema_problem(engine, args.config or "")
            if problem:
                print(f"casewatch scan: {problem}", file=sys.stderr)
                return 2
            sessions = make_sessionmaker(engine)
            async with sessions.begin() as session:
                await sync_directory(session, settings)
            ctx = Context(settings, SystemClock())
            async with sealing_beside(sessions, ctx):
                summary = await run_scan(sessions, ctx, at)
            await seal_audit(sessions, ctx)
        finally:
            await engine.dispose()
        print("\n".join(summary.lines()))
        return 0

    with _fewer_collections():
        return asyncio.run(_scan())
