from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy.exc import OperationalError

from casewatch.commands._support import connect_problem
from casewatch.config import load_config
from casewatch.store.engine import make_engine
from casewatch.store.migrate import current_revision, upgrade


def run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)

    async def _run() -> str | None:
        engine = make_engine(settings.database.url)
        try:
            await upgrade(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    try:
        revision = asyncio.run(_run())
    except (OperationalError, OSError) as exc:
        # As the other commands say it; a migration's own failure is raised as it is.
        print(f"casewatch db upgrade: {connect_problem(exc)}", file=sys.stderr)
        return 2
    print(f"database is at revision {revision}")
    return 0
