"""`casewatch scan [--at ISO8601] [--config PATH]`: evaluate every time-based trigger once and
print how many alerts of each kind were opened and resolved. Exit 0, or 2 if it cannot run."""

from __future__ import annotations

import argparse
import asyncio
import sys

from casewatch.clock import SystemClock
from casewatch.commands._support import configure_logging, directory_problem, schema_problem, seal_audit
from casewatch.config import load_config
from casewatch.context import Context
from casewatch.directory import sync_directory
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.triggers.scan import run_scan


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
            summary = await run_scan(sessions, ctx, at)
            await seal_audit(sessions, ctx)
        finally:
            await engine.dispose()
        print("\n".join(summary.lines()))
        return 0

    return asyncio.run(_scan())
