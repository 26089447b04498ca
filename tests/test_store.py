from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.commands._support import schema_problem
from casewatch.store.engine import make_engine
from casewatch.store.migrate import current_revision, head_revision, upgrade
from casewatch.store.models import Base, Nominal
from casewatch.store.revision import HEAD, stored_revision
from tests.conftest import _need_postgres, _pg_admin, pg_database_url


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def _migrate_from_empty(url: str) -> None:
    engine = make_engine(url)
    try:
        assert await current_revision(engine) is None
        assert await stored_revision(engine) is None
        await upgrade(engine, "0003")
        assert await stored_revision(engine) == await current_revision(engine) == "0003"
        assert await schema_problem(engine) == (
            f"database: at revision 0003, this version needs {HEAD}. Run `casewatch db upgrade` first"
        )
        await upgrade(engine)
        assert await current_revision(engine) == head_revision()
        # The start-up check reads the revision without Alembic; its head is Alembic's head.
        assert HEAD == head_revision()
        assert await stored_revision(engine) == HEAD
        assert await schema_problem(engine) is None
        assert set(Base.metadata.tables) <= await _tables(engine)
        await upgrade(engine)  # a second run is a no-op
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


async def test_migrations_from_empty_sqlite(tmp_path) -> None:
    await _migrate_from_empty(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")


@pytest.mark.postgres
async def test_migrations_from_empty_postgres() -> None:
    _need_postgres()
    name = "cw_empty_migration"
    await _pg_admin(f"DROP DATABASE IF EXISTS {name}")
    await _pg_admin(f"CREATE DATABASE {name}")
    try:
        await _migrate_from_empty(pg_database_url(name))
    finally:
        await _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# SQLite cannot reflect expression indexes (ix_nominals_visor_ref_compact), so neither side compares it.
@pytest.mark.filterwarnings(
    "ignore:Skipped unsupported reflection of expression-based index",
    "ignore:autogenerate skipping metadata-specified expression-based index",
)
async def test_models_match_migrations(engine: AsyncEngine) -> None:
    """Nothing in the models is missing from the migrations (alembic's own comparison)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
        )
    assert diff == []


async def test_times_round_trip_as_aware_utc(sessions: async_sessionmaker[AsyncSession]) -> None:
    bst = timezone(timedelta(hours=1))
    at = datetime(2026, 7, 1, 9, 30, tzinfo=bst)
    async with sessions.begin() as session:
        session.add(_nominal("VS-0000001", at))
    async with sessions() as session:
        row = (await session.execute(select(Nominal))).scalar_one()
    assert row.state_as_of == at
    assert row.state_as_of.tzinfo == UTC
    assert row.state_as_of.hour == 8
    assert row.date_of_birth == date(1970, 1, 2)


async def test_naive_datetimes_are_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    from sqlalchemy.exc import StatementError

    with pytest.raises(StatementError, match="naive datetime"):
        async with sessions.begin() as session:
            session.add(_nominal("VS-0000002", datetime(2026, 7, 1, 9, 30)))


def _nominal(ref: str, at: datetime) -> Nominal:
    return Nominal(
        visor_ref=ref, surname="Testperson", surname_key="testperson", forenames="Ada",
        date_of_birth=date(1970, 1, 2), category="1", mappa_level=1, registered=True,
        risk_level="low", lead_agency="police", team="north", offender_manager="PC1",
        area="N1", on_licence=False, no_fixed_abode=False, last_notification_on=None,
        release_date=None, licence_expiry=None, aliases=[], state_as_of=at, level_as_of=None,
        updated_at=at,
    )
