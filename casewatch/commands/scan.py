"""`casewatch scan [--at ISO8601] [--config PATH]`: evaluate every time-based trigger once and
print how many alerts of each kind were opened and resolved. Exit 0, or 2 if it cannot run."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from casewatch.audit.seal import sealing_beside
from casewatch.clock import SystemClock
from casewatch.commands._support import configure_logging, directory_problem, schema_problem, seal_audit
from casewatch.config import load_config
from casewatch.context import Context
from casewatch.directory import sync_directory
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.triggers.scan import run_scan


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
