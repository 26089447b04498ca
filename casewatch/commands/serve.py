"""`casewatch serve`: run the service until SIGINT or SIGTERM.

It refuses to start, with a list of what to fix, when the configuration is unsafe to serve with
(settings.serve_problems()) or the database is not migrated. Migrations are never applied
implicitly: in production that is a deliberate step (`casewatch db upgrade`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from casewatch import wiring
from casewatch.audit.seal import check_key
from casewatch.commands._support import configure_logging, schema_problem
from casewatch.config import load_config
from casewatch.directory import sync_directory


def run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    configure_logging(settings)
    problems = settings.serve_problems()
    if problems:
        _refuse(problems)
        return 2

    async def _serve() -> int:
        service = await wiring.create_service(settings)
        problem = await schema_problem(service.engine, args.config or "") or await check_key(
            service.sessions, service.ctx
        )
        if problem:
            await wiring.stop(service)
            _refuse([problem])
            return 2
        async with service.sessions.begin() as session:
            await sync_directory(session, settings)
        stop_event = asyncio.Event()
        wiring.stop_on_signals(stop_event)
        try:
            await wiring.run_service(service, stop_event=stop_event)
        except OSError as exc:  # the port is taken, or the host is not an address of ours
            _refuse([f"http: cannot listen on {settings.http.host}:{settings.http.port}: {exc.strerror}"])
            return 2
        return 0

    return asyncio.run(_serve())


def _refuse(problems: list[str]) -> None:
    print("casewatch serve: not starting; fix these first:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
