"""The PostgreSQL test databases (tests.support.pg_pool): a database given back after a test is
either put back exactly as a new copy of the migrated template, or dropped; a test never gets one
it could tell from a new copy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from casewatch.store.engine import make_engine
from tests.conftest import _pg_admin, pg_database_url
from tests.support.pg_pool import _FINGERPRINT, PgPool, _sequences, relation_counts, statistics

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pool(pg_template: str) -> AsyncIterator[PgPool]:
    pool = PgPool(pg_template, _pg_admin, pg_database_url)
    yield pool
    await pool.drop_all()


async def state(name: str) -> dict[str, Any]:
    """Everything a test could read of a database: its schema and settings (the fingerprint),
    every table's rows and every sequence's position."""
    engine = make_engine(pg_database_url(name))
    try:
        async with engine.connect() as conn:
            tables = [
                t for (t,) in await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
                )
            ]
            rows = {
                t: sorted(repr(tuple(r)) for r in await conn.execute(text(f'SELECT * FROM "{t}"')))  # noqa: S608
                for t in tables
            }
            return {
                "fingerprint": (await conn.execute(text(_FINGERPRINT))).scalar_one(),
                "planner": (await relation_counts(conn), await statistics(conn)),
                "rows": rows,
                "sequences": await _sequences(conn),
            }
    finally:
        await engine.dispose()


async def run(name: str, *statements: str) -> None:
    engine = make_engine(pg_database_url(name))
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def exists(name: str) -> bool:
    engine = make_engine(pg_database_url("postgres"))
    try:
        async with engine.connect() as conn:
            found = await conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            return found.first() is not None
    finally:
        await engine.dispose()


async def test_a_database_given_back_is_put_back_as_a_new_copy(pool: PgPool) -> None:
    name = await pool.take()
    new = await state(name)
    assert new["rows"]["alembic_version"] and new["rows"]["audit_chain"]  # the template's own rows
    await run(
        name,
        "INSERT INTO teams (id, name, channel, spoc_email, supervisor_emails, digest_time) "
        "VALUES ('north', 'North MOSOVO', 'C0NORTH', 'north.spoc@force.example', '[]', '07:00')",
        "UPDATE audit_chain SET head_seq = 7, head_hash = 'changed'",
        "UPDATE alembic_version SET version_num = 'not-the-head'",
        "SELECT nextval(pg_get_serial_sequence('audit_log', 'id'))",
        # planner statistics and counts a new copy does not have (TRUNCATE keeps statistics)
        "INSERT INTO visits (visor_ref, visited_on, event_id) VALUES ('VS-0000001', '2026-11-19', 'e1')",
        "ANALYZE visits",
        "ANALYZE officers",  # an empty table counted: 0 rows known, where a new copy has 'never counted'
    )
    # A sequence moved by a transaction that rolled back leaves no row behind.
    engine = make_engine(pg_database_url(name))
    async with engine.connect() as conn:
        await conn.execute(text("SELECT nextval(pg_get_serial_sequence('visits', 'id'))"))
        await conn.rollback()
    # And a session still open, inside a transaction that holds a row lock, when the test ends.
    left_open = await engine.connect()
    await left_open.execute(text("SELECT * FROM teams FOR UPDATE"))
    changed = await state(name)
    assert changed != new and changed["planner"] != new["planner"]

    await pool.give_back(name)
    await left_open.invalidate()  # its server session was ended by the reset
    await engine.dispose()
    assert len(pool.free) == 1 and pool.dropped == 0
    assert not await exists(name)  # renamed: a leftover of the test cannot reconnect to it
    again = await pool.take()
    assert await state(again) == new


@pytest.mark.parametrize(
    "change",
    [
        "CREATE TABLE extra (id integer)",
        "ALTER TABLE teams ADD COLUMN extra integer",
        "CREATE INDEX extra_index ON teams (name)",
        "CREATE SCHEMA extra",

        "ALTER DATABASE {name} SET default_transaction_read_only = on",
    ],
)
async def test_a_database_it_cannot_put_back_is_dropped(pool: PgPool, change: str) -> None:
    name = await pool.take()
    if "{name}" in change:
        await _pg_admin(change.format(name=name))
    else:
        await run(name, *change.split("; "))
    await pool.give_back(name)
    assert pool.free == [] and pool.dropped == 1
    assert not await exists(name)
    replacement = await pool.take()
    assert replacement != name
