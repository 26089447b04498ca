"""The schema revision the code needs and the one a database is at, read without Alembic: every
command checks them at start, and importing Alembic and reading its scripts cost more than the
check itself (~0.12 s of a `casewatch scan`). Migrating still goes through casewatch.store.migrate."""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

# The newest script in casewatch/migrations/versions (tests/test_store.py checks it against
# Alembic's own head, so adding a migration without moving this fails the suite).
HEAD = "0011"


async def stored_revision(engine: AsyncEngine) -> str | None:
    """The revision the database was migrated to, or None when it has none yet. More than one
    (branched migrations, never made by casewatch) is an error, as Alembic makes it."""

    def _read(connection: Connection) -> str | None:
        if not inspect(connection).has_table("alembic_version"):
            return None
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(rows) > 1:
            raise ValueError(f"the database records {len(rows)} schema revisions; expected one")
        return rows[0] if rows else None

    async with engine.connect() as conn:
        return await conn.run_sync(_read)
