"""What one statement costs this process on PostgreSQL, by the way it is sent (issue 17,
thirteenth session): the same one-row read by key, `--count` times inside one transaction, through
the ORM session, through its Core connection, and by asyncpg itself (as store.direct_read sends
the ingest's hot statements); then whole transactions of one read through a session (pool
checkout with its ping, BEGIN, the read, COMMIT). CPU (this process) and wall time a statement.

    python -m bench.statement_cost --db-url URL [--count 2000]

The URL's database needs the schema (any data set `python -m bench` or a probe prepared). Not part
of `python -m bench`: a tool to see what SQLAlchemy's execution adds to a trip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Nominal

WARM = 50


async def _timed(count: int, run: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    for _ in range(WARM):
        await run()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        await run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_us": round(cpu / count * 1e6, 1), "wall_us": round(wall / count * 1e6, 1)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    engine = make_engine(args.db_url)
    sessions = make_sessionmaker(engine)
    key = select(Nominal.visor_ref).order_by(Nominal.visor_ref).limit(1)
    out: dict[str, Any] = {}
    try:
        async with sessions() as session, session.begin():
            ref = (await session.execute(key)).scalar_one()
            core = select(Nominal.visor_ref).where(Nominal.visor_ref == ref)
            orm = select(Nominal).where(Nominal.visor_ref == ref)
            connection = await session.connection()
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection
            sql = "SELECT visor_ref FROM nominals WHERE visor_ref = $1"

            async def session_core() -> None:
                (await session.execute(core)).all()

            async def session_orm() -> None:
                (await session.execute(orm)).scalars().all()

            async def connection_core() -> None:
                (await connection.execute(core)).all()

            async def by_asyncpg() -> None:
                await driver.fetch(sql, ref)

            async def empty_trip() -> None:
                await driver.fetchrow(";")

            for name, run in (
                ("session.execute, Core select", session_core), ("session.execute, ORM select", session_orm),
                ("connection.execute, Core select", connection_core), ("asyncpg fetch", by_asyncpg),
                ("asyncpg empty query", empty_trip),
            ):
                out[name] = await _timed(args.count, run)

        async def transaction() -> None:
            async with sessions() as session, session.begin():
                (await session.execute(core)).all()

        whole = "session transaction: checkout and ping, BEGIN, read, COMMIT"
        out[whole] = await _timed(args.count, transaction)
    finally:
        await engine.dispose()
    return out


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.statement_cost")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--count", type=int, default=2000)
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(_parse())), indent=1))
