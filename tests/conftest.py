"""Shared fixtures: fresh, migrated SQLite and PostgreSQL databases for each test.

PostgreSQL tests need TEST_PG_URL (a postgresql+asyncpg:// URL to a database whose user may
CREATE DATABASE); scripts/test starts a throw-away server and sets it. Without it they skip,
unless CASEWATCH_REQUIRE_POSTGRES=1 (as in CI), when they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.migrate import upgrade
from tests.support.leaks import left_open, track_transports
from tests.support.pg_admin import AdminLink
from tests.support.pg_pool import PgPool

track_transports()

# Tests that time something against a tight bound (a round within 0.55 s, no wait over 0.04 s, a
# takeover within the lease and one renewal) or soak real processes: scripts/test runs them
# alone, after the rest has run on both cores, so a neighbouring test's load does not count
# against their bounds. By file: None for every test of the file, else the test names.
SERIAL: dict[str, frozenset[str] | None] = {
    "test_ingest_single_gather.py": None,
    "test_review6b_gather.py": None,  # the group commit's waits, timed within 0.1 s
    "test_delivery_rounds.py": None,
    "test_delivery_rounds_stop.py": None,
    "test_robustness_db_restart.py": None,
    "test_robustness_kill.py": None,
    # Twelve lookups gathered at once must overlap for all but the first to share commits.
    "test_flags_group_commit.py": frozenset({"test_concurrent_lookups_share_commits_and_each_is_audited"}),
    "test_leader.py": frozenset({
        "test_two_schedulers_on_postgresql_leader_killed", "test_two_serve_processes_leader_sigkilled",
    }),
}

PG_URL = os.environ.get("TEST_PG_URL", "")
REQUIRE_PG = os.environ.get("CASEWATCH_REQUIRE_POSTGRES") == "1"
_TEMPLATE_DB = f"casewatch_tmpl_{os.getpid()}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--serial",
        choices=("include", "only", "exclude"),
        default="include",
        help="the tests marked serial (timed against tight bounds, see tests/conftest.py SERIAL): "
        "run them with the rest (include, the default), only them, or not (exclude). "
        "scripts/test runs the rest on both cores (pytest-xdist), then these alone.",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = SERIAL.get(item.path.name, frozenset())
        if names is None or item.originalname in names:  # type: ignore[attr-defined]
            item.add_marker(pytest.mark.serial)
    mode = config.getoption("--serial")
    if mode == "include":
        return
    wanted = mode == "only"
    keep = [item for item in items if (item.get_closest_marker("serial") is not None) == wanted]
    dropped = [item for item in items if (item.get_closest_marker("serial") is not None) != wanted]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(autouse=True)
def _nothing_left_open() -> Iterator[None]:
    """Fails the test that leaves a connection or a session open (tests/support/leaks.py): its
    event loop is closed by the time this runs (set up before it, torn down after it)."""
    yield
    if found := left_open():
        pytest.fail("left open by this test: " + "; ".join(found), pytrace=False)


def _need_postgres() -> None:
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("CASEWATCH_REQUIRE_POSTGRES=1 but TEST_PG_URL is not set")
        pytest.skip("no PostgreSQL server (set TEST_PG_URL, or run scripts/test)")


_ADMIN = AdminLink(PG_URL)


async def _pg_admin(sql: str) -> None:
    """One statement on the server's maintenance database, outside a transaction."""
    await _ADMIN.execute(sql)


def pg_database_url(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"

    async def build() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        await upgrade(engine)
        await engine.dispose()  # closing the last connection checkpoints the WAL into the file

    asyncio.run(build())
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    _need_postgres()

    async def build() -> None:
        await _pg_admin(f"DROP DATABASE IF EXISTS {_TEMPLATE_DB}")
        await _pg_admin(f"CREATE DATABASE {_TEMPLATE_DB}")
        engine = make_engine(pg_database_url(_TEMPLATE_DB))
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(build())
    yield _TEMPLATE_DB
    asyncio.run(_pg_admin(f"DROP DATABASE IF EXISTS {_TEMPLATE_DB}"))


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite database file."""
    target = tmp_path / "casewatch.db"
    shutil.copyfile(sqlite_template, target)
    return f"sqlite+aiosqlite:///{target}"


_POOLS: list[PgPool] = []


@pytest.fixture(scope="session")
def pg_pool(pg_template: str) -> Iterator[PgPool]:
    # CASEWATCH_TEST_PG_FRESH=1: a new copy for every test, none reused (to rule the pool out).
    reuse = os.environ.get("CASEWATCH_TEST_PG_FRESH") != "1"
    pool = PgPool(pg_template, _pg_admin, pg_database_url, reuse=reuse)
    _POOLS.append(pool)
    yield pool
    asyncio.run(pool.drop_all())


def pytest_unconfigure(config: pytest.Config) -> None:
    _ADMIN.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for pool in _POOLS:
        terminalreporter.write_line(
            f"PostgreSQL test databases: {pool.created} copied from the template, {pool.reused} reused "
            f"after a reset, {pool.dropped} dropped as not resettable"
        )


@pytest.fixture
async def pg_url(pg_pool: PgPool) -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database: a copy of the migrated template, or one such copy an
    earlier test used and that was put back exactly as the template is (tests.support.pg_pool)."""
    name = await pg_pool.take()
    yield pg_database_url(name)
    await pg_pool.give_back(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test that uses this runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def pg_sessions(pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a PostgreSQL test database, for tests of PostgreSQL alone."""
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)
