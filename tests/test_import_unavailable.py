"""A database that goes away mid-import: both import commands (`casewatch import PATH` and
`casewatch import --snapshot`) stop at once with exit 2 and say the database is unavailable,
report what was stored, take no row for a bad one, and a re-run completes with no duplicates: the
database ends as one uninterrupted import leaves it.

The outage is a real PostgreSQL server of each test's own (scripts/pg-temp) shut down the way a
service manager stops it (SIGTERM to the postmaster: a "smart" shutdown) while another session
keeps it in "shutting down", and the importer's own backend terminated mid-transaction: the
statement in flight fails with SQLSTATE 08003 and every new connection is refused with 57P03.
Both reach SQLAlchemy as a plain DBAPIError, which the imports once took for bad rows. A pool that
times out (every connection taken) is the other outage, on both databases. Loopback only."""

from __future__ import annotations

import asyncio
import glob
import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from casewatch.cli import main
from casewatch.clock import SystemClock
from casewatch.commands import import_events
from casewatch.context import Context
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.migrate import upgrade
from casewatch.store.models import Alert, Event, InboundItem, Nominal
from integrations.snapshot import importer
from integrations.snapshot.importer import ImportStopped, Options, import_snapshot
from integrations.snapshot.mapping import load_mapping
from tests.support import make_settings
from tests.test_import import config_for as events_config
from tests.test_import import demo_events, line
from tests.test_snapshot_import import MAPPING, NIGHT, person, write_extract
from tests.test_snapshot_import import config_for as snapshot_config

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = glob.glob("/usr/lib/postgresql/*/bin")  # Debian keeps the server binaries off PATH


def _pg_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = ":".join([env.get("PATH", ""), *PG_BIN])
    return env


@dataclass(frozen=True)
class Server:
    url: str  # casewatch_test, migrated
    dir: Path

    def libpq(self, database: str | None = None) -> str:
        url = make_url(self.url).set(drivername="postgresql")
        return url.set(database=database or url.database).render_as_string(hide_password=False)

    def url_of(self, database: str) -> str:
        return make_url(self.url).set(database=database).render_as_string(hide_password=False)

    def pg_temp(self, command: str) -> str:
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "pg-temp"), command, str(self.dir)],
            capture_output=True, text=True, env=_pg_env(), check=True, timeout=90,
        )
        return done.stdout.strip()

    def psql(self, sql: str, database: str | None = None) -> str:
        done = subprocess.run(
            ["psql", self.libpq(database), "-X", "-A", "-t", "-c", sql],
            capture_output=True, text=True, env=_pg_env(), check=True, timeout=30,
        )
        return done.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f"CREATE DATABASE {name}")
        _migrate(self.url_of(name))
        return self.url_of(name)

    def postmaster_pid(self) -> int:
        return int((self.dir / "data" / "postmaster.pid").read_text().split("\n", 1)[0])

    def port(self) -> int:
        port = make_url(self.url).port
        assert port is not None
        return port


def _migrate(url: str) -> None:
    async def run() -> None:
        engine = make_engine(url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())


@pytest.fixture
def own_pg() -> Iterator[Server]:
    """A PostgreSQL server of this test's own: the test shuts it down under the import."""
    path = _pg_env()["PATH"]
    if shutil.which("initdb", path=path) is None or shutil.which("psql", path=path) is None:
        if os.environ.get("CASEWATCH_REQUIRE_POSTGRES") == "1":
            pytest.fail("CASEWATCH_REQUIRE_POSTGRES=1 but initdb or psql is not installed")
        pytest.skip("no PostgreSQL server binaries (initdb, psql)")
    # Not under pytest's 0700 tmp dirs: the server may run as another user (scripts/pg-temp).
    top = Path(tempfile.mkdtemp(prefix="casewatch-pg-unavailable-"))
    top.chmod(0o755)  # noqa: S103
    server = Server(url="", dir=top / "pg")
    try:
        server = Server(url=server.pg_temp("start"), dir=server.dir)
        _migrate(server.url)
        yield server
    finally:
        server.pg_temp("stop")
        shutil.rmtree(top, ignore_errors=True)


def _until(done: Any, what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, f"not in time: {what}"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


_HOLD = "SELECT pg_sleep(300)"  # a session that keeps a smart shutdown waiting


@contextmanager
def shutdown_at(server: Server, statement: str, nth: int) -> Iterator[None]:
    """Shut the server down when the importer runs `statement` (its start) for the nth time:
    SIGTERM to the postmaster (new connections are refused, 57P03, while the session held here
    lasts), then the importer's own backend terminated, so the statement fails in its
    transaction. Afterwards the shutdown completes and the server starts again, as after an outage."""
    holder = subprocess.Popen(
        ["psql", server.libpq(), "-X", "-c", _HOLD],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_pg_env(),
    )
    seen = 0
    holding: list[int] = []  # the holding session's backend

    def sleeping() -> bool:
        pids = server.psql("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg\\_sleep(%'")
        holding[:] = [int(pid) for pid in pids.split()]
        return len(holding) == 1

    def refusing() -> bool:  # pg_isready: 1 is "rejecting connections"
        ready = ["pg_isready", "-h", "127.0.0.1", "-p", str(server.port())]
        return subprocess.run(ready, capture_output=True, env=_pg_env(), check=False).returncode == 1

    def on_statement(conn: Connection, cursor: Any, text: str, *_: Any) -> None:
        nonlocal seen
        if not text.startswith(statement):
            return
        seen += 1
        if seen != nth:
            return
        os.kill(server.postmaster_pid(), signal.SIGTERM)
        _until(refusing, "the server refuses new connections")
        driver = conn.connection.driver_connection  # asyncpg's connection
        assert driver is not None
        backend = driver.get_server_pid()
        os.kill(backend, signal.SIGTERM)
        _until(lambda: _gone(backend), "the importer's backend has ended")

    _until(sleeping, "the holding session is connected")
    event.listen(Engine, "before_cursor_execute", on_statement)
    try:
        yield
    finally:
        event.remove(Engine, "before_cursor_execute", on_statement)
        # The holding session ends, so the shutdown completes cleanly (pg-temp's server does not
        # flush commits at once: an immediate stop could lose the last ones), then it starts again.
        postmaster = server.postmaster_pid()
        os.kill(holding[0], signal.SIGTERM)
        holder.wait(timeout=30)
        if seen >= nth:
            _until(lambda: _gone(postmaster), "the server has shut down")
        server.pg_temp("restart")
    assert seen >= nth, f"the import ran {statement!r} {seen} time(s): the outage never happened"


async def _state_of(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """What an import leaves that a repeat could double: events, nominals, alerts, kept items."""
    queries = {
        "events": select(Event.id, Event.type, Event.visor_ref),
        "nominals": select(Nominal.visor_ref, Nominal.mappa_level, Nominal.risk_level),
        "alerts": select(Alert.kind, Alert.visor_ref, Alert.subject),
        "inbound": select(InboundItem.source, InboundItem.external_id),
    }
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return {name: sorted(tuple(row) for row in (await conn.execute(query)).all())
                    for name, query in queries.items()}
    finally:
        await engine.dispose()


def _state(url: str) -> dict[str, list[tuple[Any, ...]]]:
    return asyncio.run(_state_of(url))


def _as_one_clean_import(server: Server, run: Callable[[str], int], table: str, rows: int) -> None:
    """The database after the outage and the re-run is the one an uninterrupted import (`run` on a
    new database's URL) leaves."""
    clean = server.create_database("clean")
    assert run(clean) == 0
    assert _state(server.url) == _state(clean)
    assert len(_state(clean)[table]) == rows


def _ndjson(tmp_path: Path, events: list[dict[str, Any]]) -> Path:
    path = tmp_path / "events.ndjson"
    path.write_text("".join(line(e) for e in events), encoding="utf-8")
    return path


# --- casewatch import PATH ----------------------------------------------------------------------------


def _events_import(config: Path, path: Path) -> int:
    return main(["import", "--config", str(config), "--no-progress", "--batch-size", "2", str(path)])


@pytest.mark.slow
def test_the_events_import_stops_when_the_database_shuts_down_and_a_rerun_completes(
    own_pg: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = demo_events(6)
    path = _ndjson(tmp_path, events)
    config = events_config(tmp_path, own_pg.url)

    with shutdown_at(own_pg, "INSERT INTO nominals", nth=2):  # in the second batch's transaction
        assert _events_import(config, path) == 2
    out, err = capsys.readouterr()
    assert "import: 2 accepted, 0 duplicate(s), 0 rejected, 0 alert(s) opened" in out.splitlines()
    assert "casewatch import: stopped: the database is unavailable (DBAPIError)" in err
    assert "line " not in err and "could not be stored" not in err  # no line taken for a bad one
    assert [row[0] for row in _state(own_pg.url)["events"]] == sorted(e["id"] for e in events[:2])

    assert _events_import(config, path) == 0
    out, err = capsys.readouterr()
    assert "import: 4 accepted, 2 duplicate(s), 0 rejected, 0 alert(s) opened" in out.splitlines()
    _as_one_clean_import(
        own_pg, lambda clean: _events_import(events_config(tmp_path, clean), path), "events", 6
    )


@pytest.mark.slow
def test_the_events_import_stops_when_the_database_shuts_down_as_it_seals_the_audit(
    own_pg: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = demo_events(4)
    path = _ndjson(tmp_path, events)
    config = events_config(tmp_path, own_pg.url)

    with shutdown_at(own_pg, "SELECT audit_chain.", nth=1):  # every batch is in: the seal is last
        assert _events_import(config, path) == 2
    out, err = capsys.readouterr()
    assert "import: 4 accepted, 0 duplicate(s), 0 rejected, 0 alert(s) opened" in out.splitlines()
    assert "casewatch import: stopped: the database is unavailable (DBAPIError)" in err
    assert "Traceback" not in err
    assert len(_state(own_pg.url)["events"]) == 4

    assert _events_import(config, path) == 0  # and this run seals what the first left
    assert "import: 0 accepted, 4 duplicate(s), 0 rejected" in capsys.readouterr().out


class _Progress:
    def __init__(self) -> None:
        self.written: list[str] = []

    def write(self, message: str, file: Any = None) -> None:
        self.written.append(message)


def _tiny_pool(url: str) -> AsyncEngine:
    """One connection, and a wait for it of a tenth of a second."""
    return create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=0.1)


async def test_a_pool_that_times_out_stops_the_events_import_rejecting_no_line(db_url: str) -> None:
    lines = [import_events.parse_line(n, line(e).encode()) for n, e in enumerate(demo_events(4), 1)]
    ctx = Context(make_settings(db_url), SystemClock())
    engine = _tiny_pool(db_url)
    sessions = make_sessionmaker(engine)
    tally, progress = import_events.Tally(), _Progress()
    try:
        async with engine.connect():  # every connection taken
            stopped = r"database is unavailable \(TimeoutError\)"
            with pytest.raises(import_events.ImportAborted, match=stopped):
                await import_events._flush(sessions, lines, ctx, tally, progress)
        assert (tally.accepted, tally.rejected_lines, progress.written) == (0, [], [])
        await import_events._flush(sessions, lines, ctx, tally, progress)  # the pool is free again
        assert (tally.accepted, tally.duplicates, tally.rejected_lines) == (4, 0, [])
    finally:
        await engine.dispose()


# --- casewatch import --snapshot ----------------------------------------------------------------------


def _snapshot_import(config: Path, extract: Path) -> int:
    argv = ["import", "--config", str(config), "--no-progress", "--snapshot", str(extract)]
    return main([*argv, "--mapping", str(MAPPING), "--extracted-at", NIGHT[0]])


@pytest.mark.slow
def test_the_snapshot_import_stops_when_the_database_shuts_down_and_a_rerun_completes(
    own_pg: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "MAX_ENVELOPES", 2)  # a transaction a row or two: several before the outage
    extract = write_extract(tmp_path / "extract.csv", [person(n) for n in range(1, 7)])
    config = snapshot_config(tmp_path, own_pg.url)

    with shutdown_at(own_pg, "INSERT INTO nominals", nth=2):
        assert _snapshot_import(config, extract) == 2
    out, err = capsys.readouterr()
    assert "casewatch import --snapshot: stopped: the database is unavailable (DBAPIError)" in err
    stored = _state(own_pg.url)
    assert len(stored["nominals"]) == 2
    assert f"before it: {len(stored['events'])} event(s) stored, 0 seen before" in err
    assert "could not be stored" not in err and "bad row" not in err + out  # no row taken for a bad one
    assert stored["inbound"] == []

    assert _snapshot_import(config, extract) == 0
    out, err = capsys.readouterr()
    assert "6 row(s): 4 new, 0 changed, 2 unchanged, 0 bad" in out
    _as_one_clean_import(
        own_pg, lambda clean: _snapshot_import(snapshot_config(tmp_path, clean), extract), "nominals", 6
    )


@pytest.mark.slow
def test_the_snapshot_import_stops_when_the_database_shuts_down_at_the_missing_nominal_check(
    own_pg: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extract = write_extract(tmp_path / "extract.csv", [person(n) for n in range(1, 4)])
    config = snapshot_config(tmp_path, own_pg.url)
    listed = "SELECT nominals.visor_ref, nominals.team, nominals.offender_manager \nFROM nominals"

    with shutdown_at(own_pg, listed, nth=1):  # every row is in; the full extract's check is last
        assert _snapshot_import(config, extract) == 2
    err = capsys.readouterr().err
    assert "stopped: the database is unavailable (DBAPIError); before it: 3 event(s) stored" in err
    assert "Traceback" not in err
    assert _snapshot_import(config, extract) == 0
    assert "3 row(s): 0 new, 0 changed, 3 unchanged, 0 bad" in capsys.readouterr().out


@pytest.mark.slow
def test_the_snapshot_import_stops_when_the_database_shuts_down_as_it_seals_the_audit(
    own_pg: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extract = write_extract(tmp_path / "extract.csv", [person(n) for n in range(1, 4)])
    config = snapshot_config(tmp_path, own_pg.url)

    with shutdown_at(own_pg, "SELECT audit_chain.", nth=1):  # every row is in: the seal is last
        assert _snapshot_import(config, extract) == 2
    out, err = capsys.readouterr()
    assert "3 row(s): 3 new, 0 changed, 0 unchanged, 0 bad" in out
    assert "stopped: the database is unavailable (DBAPIError) while sealing the audit" in err
    assert "Traceback" not in err
    assert len(_state(own_pg.url)["nominals"]) == 3
    assert _snapshot_import(config, extract) == 0  # and this run seals what the first left
    assert "3 row(s): 0 new, 0 changed, 3 unchanged, 0 bad" in capsys.readouterr().out


async def test_a_pool_that_times_out_stops_the_snapshot_import_keeping_no_row(
    db_url: str, tmp_path: Path
) -> None:
    extract = write_extract(tmp_path / "extract.csv", [person(n) for n in range(1, 4)])
    options = Options(name="extract.csv", full=True, dry_run=False,
                      extracted_at=datetime.fromisoformat(NIGHT[0]).astimezone(UTC))
    ctx = Context(make_settings(db_url), SystemClock())
    engine = _tiny_pool(db_url)
    sessions = make_sessionmaker(engine)
    said: list[str] = []
    try:
        async with engine.connect():  # every connection taken
            with pytest.raises(ImportStopped, match=r"database is unavailable \(TimeoutError\)"):
                await import_snapshot(sessions, ctx, io.BytesIO(extract.read_bytes()), load_mapping(MAPPING),
                                      options, say=said.append)
        assert said == []
        summary = await import_snapshot(sessions, ctx, io.BytesIO(extract.read_bytes()),
                                        load_mapping(MAPPING), options, say=said.append)
        assert (summary.new, len(summary.bad_lines), summary.kept, said) == (3, 0, None, [])
    finally:
        await engine.dispose()
    assert len((await _state_of(db_url))["nominals"]) == 3


@pytest.mark.postgres
def test_a_database_that_takes_no_writes_now_stops_the_events_import(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PostgreSQL that is up but read-only (a standby after a failover, maintenance with
    default_transaction_read_only): SQLSTATE 25006 is "away" (exit 2), not a bad line each."""
    from tests.conftest import _pg_admin

    database = make_url(pg_url).database
    asyncio.run(_pg_admin(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'))
    path = _ndjson(tmp_path, demo_events(4))
    assert _events_import(events_config(tmp_path, pg_url), path) == 2
    out, err = capsys.readouterr()
    assert "casewatch import: stopped: the database is unavailable (DBAPIError)" in err
    assert "could not be stored" not in err and "Traceback" not in err
    assert "import: 0 accepted, 0 duplicate(s), 0 rejected" in out
