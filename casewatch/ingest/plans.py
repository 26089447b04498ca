"""Planning a transaction's keyed reads for their own keys on PostgreSQL.

asyncpg runs every statement prepared, and after five runs PostgreSQL may keep a generic plan,
made without the parameters and sized to the tables as they were then. A batch's reads are IN
lists of hundreds of keys on tables a first import is filling: a generic plan chosen while
`nominals` was small (a sequential scan) was kept while it grew, and a read of 500 references
went from ~1 ms to ~250 ms at 20,000 nominals, growing with the table (measured, fifth session:
bench/README.md, "Feeds"). Planning a batch's few statements afresh costs well under a
millisecond each.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def plan_for_these_keys(session: AsyncSession) -> None:
    """Plan every statement of the session's transaction for its own parameters (PostgreSQL 12
    and newer; elsewhere nothing). Call it inside the transaction, before the reads."""
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql" and (dialect.server_version_info or (0,)) >= (12,):
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
