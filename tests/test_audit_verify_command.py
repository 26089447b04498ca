"""`casewatch audit verify` as a command (exit 0 intact, 1 broken, 2 could not run), commands
sealing what they audited before they exit, the running service's sealer, and `serve` refusing a
key that is not the chain's (issue 16)."""

from __future__ import annotations

import asyncio
import os
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from casewatch.api.common import METRICS_KEY
from casewatch.audit import record
from casewatch.cli import main
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import AuditEntry
from casewatch.wiring import start_background, stop
from tests.support import make_service
from tests.test_triggers_case_data import action, nominal

TEAM = '[[teams]]\nid = "north"\nname = "North"\nspoc_email = "north.spoc@force.example"\n'


def _config(tmp_path: Path, url: str, extra: str = "") -> str:
    path = tmp_path / "casewatch.toml"
    path.write_text(f'[slack]\nmode = "off"\n[database]\nurl = "{url}"\n{extra}' + TEAM, encoding="utf-8")
    return str(path)


def _seed_and_scan(url: str, config: str) -> None:
    async def seed() -> None:
        engine = make_engine(url)
        async with make_sessionmaker(engine).begin() as s:
            s.add(nominal("VS-0000070", last_notification_on=date(2025, 11, 20)))
            s.add(action("MAPP-70", "VS-0000070", date(2026, 11, 20)))
        await engine.dispose()

    asyncio.run(seed())
    assert main(["scan", "--at", "2026-11-21T00:00:00Z", "--act", "--config", config]) == 0


def _entries(url: str) -> list[tuple[int, int | None, str]]:
    async def read() -> list[tuple[int, int | None, str]]:
        engine = make_engine(url)
        async with make_sessionmaker(engine)() as s:
            rows = (await s.execute(select(AuditEntry.id, AuditEntry.seq, AuditEntry.action))).all()
        await engine.dispose()
        return [(r.id, r.seq, r.action) for r in rows]

    return asyncio.run(read())


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("CASEWATCH_")]:
        monkeypatch.delenv(key)


def test_a_command_seals_what_it_audited_and_verify_says_intact(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, sqlite_url)
    _seed_and_scan(sqlite_url, config)
    entries = _entries(sqlite_url)
    assert sorted(a for _, _, a in entries) == ["alert.opened", "alert.opened"]
    assert all(seq is not None for _, seq, _ in entries)  # sealed before `scan` exited
    capsys.readouterr()
    assert main(["audit", "verify", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "audit log intact: 2 entries verified (seq 1 to 2)" in out
    assert "head: seq 2 hash " in out
    assert "not yet sealed" not in out


def test_verify_exits_1_and_names_the_first_broken_entry(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, sqlite_url)
    _seed_and_scan(sqlite_url, config)
    first = min(i for i, _, _ in _entries(sqlite_url))

    async def tamper() -> None:
        engine = make_engine(sqlite_url)
        async with make_sessionmaker(engine).begin() as s:
            await s.execute(update(AuditEntry).where(AuditEntry.id == first).values(actor="PC6666"))
        await engine.dispose()

    asyncio.run(tamper())
    capsys.readouterr()
    assert main(["audit", "verify", "--config", config]) == 1
    out = capsys.readouterr().out
    assert f"audit log BROKEN at entry {first} (seq 1): its content does not match its hash" in out
    assert "0 entries before it verified" in out


def test_verify_exits_2_when_it_cannot_run(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    unmigrated = _config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    assert main(["audit", "verify", "--config", unmigrated]) == 2
    assert "casewatch db upgrade" in capsys.readouterr().err
    # A chain begun without a key, checked by a process given one: nothing can be checked.
    plain = _config(tmp_path, sqlite_url)
    _seed_and_scan(sqlite_url, plain)
    keyed = _config(tmp_path, sqlite_url, '[audit]\nkey = "a-key-the-chain-never-had"\n')
    capsys.readouterr()
    assert main(["audit", "verify", "--config", keyed]) == 2
    err = capsys.readouterr().err
    assert "cannot check: the audit chain was begun without a key" in err
    assert "a-key-the-chain-never-had" not in err


def test_serve_refuses_a_key_that_is_not_the_chains(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed_and_scan(sqlite_url, _config(tmp_path, sqlite_url, '[audit]\nkey = "the-first-key-000"\n'))
    monkeypatch.setenv("CASEWATCH_INGEST__SECRET", "serve-test-secret-f00d")
    monkeypatch.setenv("CASEWATCH_AUDIT__KEY", "another-key-111")
    capsys.readouterr()
    assert main(["serve", "--config", _config(tmp_path, sqlite_url)]) == 2
    err = capsys.readouterr().err
    assert "the configured [audit] key is not the key the audit chain was begun with" in err
    assert "another-key-111" not in err and "the-first-key-000" not in err


async def test_the_running_service_seals_at_once_when_its_bell_rings(db_url: str) -> None:
    """The interval is long (30 s): an entry is sealed within a second only because the commit
    that wrote it rang the sealer's bell."""
    service = await make_service(
        db_url, audit={"seal_interval_seconds": 30}, schedules={"enabled": False}
    )
    try:
        await start_background(service)
        await asyncio.sleep(0.1)  # the sealer's first round has run and is waiting
        async with service.sessions.begin() as session:
            await record(session, service.ctx, actor="PC0001", action="flags.lookup", purpose="test")
        for _ in range(40):
            async with service.sessions() as session:
                seq = (await session.execute(select(AuditEntry.seq))).scalar_one()
            if seq is not None:
                break
            await asyncio.sleep(0.025)
        assert seq == 1
        metrics = service.app[METRICS_KEY].render().decode()
        assert "casewatch_audit_sealed_total 1.0" in metrics
        assert "casewatch_audit_seal_failures_total 0.0" in metrics
        assert "casewatch_audit_seal_seconds_count" in metrics
    finally:
        await stop(service)


async def test_a_long_read_on_sqlite_does_not_hold_writers_off(sqlite_url: str) -> None:
    """audit verify and export read through store.engine.reader(): on SQLite their transactions
    begin DEFERRED, so a writer (the running service) is not locked out while they read."""
    import sqlite3

    from casewatch.store.engine import reader

    engine = make_engine(sqlite_url)
    try:
        async with make_sessionmaker(reader(engine))() as session:
            await session.execute(select(AuditEntry.id))  # the read transaction is open
            other = sqlite3.connect(sqlite_url.split("///", 1)[1], timeout=0.5, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # would raise "database is locked" after 0.5 s
                other.execute("INSERT INTO audit_chain (id, head_seq, head_hash, base_seq, base_hash, "
                              "base_signature, legacy_through_id) VALUES ('other', 0, '', 0, '', '', 0)")
                other.execute("COMMIT")
            finally:
                other.close()
        async with make_sessionmaker(engine).begin() as session:  # a writer's session still IMMEDIATE
            ids = set((await session.execute(text("SELECT id FROM audit_chain"))).scalars())
        assert ids == {"main", "other"}
    finally:
        await engine.dispose()
