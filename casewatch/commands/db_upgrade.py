from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy.exc import OperationalError

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
        # As the other commands say it (commands._support.schema_problem): never the URL, which
        # may hold a password. A migration's own failure is raised as it is.
        print(f"casewatch db upgrade: database: cannot connect ({type(exc).__name__}); check database.url",
              file=sys.stderr)
        return 2
    print(f"database is at revision {revision}")
    return 0
