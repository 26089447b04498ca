from __future__ import annotations

import argparse
import asyncio

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

    revision = asyncio.run(_run())
    print(f"database is at revision {revision}")
    return 0
