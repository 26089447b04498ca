"""`casewatch audit export` (issue 16): the entries asked for, filtered by nominal (with entries
written before the nominal index), actor and time (dates are days in Europe/London, BST
included), as CSV (formula cells neutralised) or JSON, streamed; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.audit import Entry, record, record_many
from casewatch.audit.chain import GENESIS, Hasher, content_hash, link_hash
from casewatch.audit.export import ExportFilter, entries
from casewatch.cli import main
from casewatch.clock import FixedClock
from casewatch.commands import audit_export
from casewatch.context import Context
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Alert, AuditEntry, Event
from tests.support import make_settings

REF = "VS-0000016"
OTHER = "VS-0000099"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# The history: (at, actor, action, subject, purpose, details, nominals). Fictional throughout.
SEED: tuple[tuple[str, str, str, str, str, dict[str, Any], list[str]], ...] = (
    # 23:59:59 BST on 14 June; written before the nominal index existed: found by its subject.
    ("2026-06-14T22:59:59Z", "PC0101", "flags.lookup", REF, "slack /flags", {"outcome": "found"}, []),
    # 00:30 BST on 15 June.
    ("2026-06-14T23:30:00Z", "system", "alert.opened", "A-AAAAAA", "alert opened: notification.missed",
     {"visor_ref": REF, "severity": "high"}, [REF]),
    ("2026-06-15T08:00:00Z", "system", "delivery.sent", "A-AAAAAA", "notification.missed",
     {"delivery": 1, "receiver": "owner", "channel": "slack", "target": "U0FICT001", "change": "opened",
      "attempt": 1}, [REF]),
    # The last instant of 15 June BST; an outcome a spreadsheet would run.
    ("2026-06-15T22:59:59.999999Z", "PC0101", "alert.acknowledged", "A-AAAAAA", "notification.missed",
     {"via": "slack_command", "outcome": '=HYPERLINK("http://evil.example")'}, [REF]),
    # Midnight BST: 16 June.
    ("2026-06-15T23:00:00Z", "system", "alert.resolved", "A-AAAAAA", "notification.missed",
     {"reason": "notification received"}, [REF]),
    ("2026-11-20T10:00:00Z", "PC0202", "flags.lookup", "@SUM(1)", "+need to know",
     {"outcome": "found", "reason": "-burglary nearby"}, [REF]),
    ("2026-11-20T11:00:00Z", "PC0303", "flags.lookup", OTHER, "slack /flags", {"outcome": "found"}, [OTHER]),
    # Before the nominal index, about an alert of REF still on record: only the chronology finds it.
    ("2026-11-21T09:00:00Z", "system", "delivery.sent", "A-BBBBBB", "visit.overdue",
     {"delivery": 2, "receiver": "spoc", "channel": "email", "target": "north.spoc@force.example",
      "change": "opened", "attempt": 1}, []),
)


def ctx_at(at: datetime) -> Context:
    return Context(make_settings("sqlite+aiosqlite:///unused.db"), FixedClock(at))


async def seed(sessions: async_sessionmaker[AsyncSession]) -> None:
    for at, actor, action, subject, purpose, details, nominals in SEED:
        async with sessions.begin() as session:
            await record(session, ctx_at(_at(at)), actor=actor, action=action, subject=subject,
                         purpose=purpose, details=details, nominals=nominals)
    async with sessions.begin() as session:
        session.add_all([
            Event(id="ev-016-1", type="nominal.upsert", visor_ref=REF,
                  occurred_at=_at("2026-06-14T12:00:00Z"), received_at=_at("2026-06-14T12:00:05Z"),
                  source="api",
                  data={"surname": "Fictionalname", "home_address": "1 Nowhere Lane"}),
            Event(id="ev-016-2", type="notification.received", visor_ref=REF,
                  occurred_at=_at("2026-11-19T09:00:00Z"), received_at=_at("2026-11-19T09:01:00Z"),
                  source="import", data={"kind": "periodic"}),
            Event(id="ev-099-1", type="nominal.upsert", visor_ref=OTHER,
                  occurred_at=_at("2026-06-01T00:00:00Z"), received_at=_at("2026-06-01T00:00:00Z"),
                  source="demo", data={}),
            Alert(id="A-BBBBBB", kind="visit.overdue", severity="medium", visor_ref=REF, team="north",
                  subject="2026-11-20", live_key=f"visit.overdue|{REF}|2026-11-20", state="open",
                  summary="visit overdue", details={}, opened_at=_at("2026-11-21T08:59:00Z")),
        ])


def _hash(i: int) -> str:
    at, actor, action, subject, purpose, details, nominals = SEED[i]
    return content_hash(Hasher(), at=_at(at), actor=actor, action=action, subject=subject, purpose=purpose,
                        details=details, nominals=sorted(nominals))


def expected(indexes: list[int]) -> list[dict[str, Any]]:
    """What the export gives for SEED[i] (entry id i + 1), not sealed."""
    out = []
    for i in indexes:
        at, actor, action, subject, purpose, details, nominals = SEED[i]
        out.append({
            "id": i + 1, "seq": None, "at": _at(at).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "actor": actor, "action": action, "subject": subject, "purpose": purpose, "nominals": nominals,
            "details": details, "content_hash": _hash(i), "chain_hash": None, "redacted": "",
        })
    return out


def withheld_query(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as an export about one nominal shows a lookup typed as something else."""
    return {**entry, "subject": "(withheld)", "redacted": "the query as typed"}


async def _export(sessions: async_sessionmaker[AsyncSession], f: ExportFilter) -> list[dict[str, Any]]:
    async with sessions() as session:
        return [e async for e in entries(session, f, yield_per=3)]


LONDON = Context(make_settings("sqlite+aiosqlite:///unused.db"), FixedClock(NOW)).settings


def _filter(**args: Any) -> ExportFilter:
    ns = {"subject": None, "actor": None, "since": None, "until": None, **args}
    return audit_export.export_filter(type("Args", (), ns)(), LONDON)


async def test_export_everything_in_time_order(sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessions)
    rows = await _export(sessions, ExportFilter())
    assert rows == expected(list(range(8)))
    assert rows[0] == {
        "id": 1, "seq": None, "at": "2026-06-14T22:59:59.000000Z", "actor": "PC0101",
        "action": "flags.lookup",
        "subject": "VS-0000016", "purpose": "slack /flags", "nominals": [], "details": {"outcome": "found"},
        "content_hash": _hash(0), "chain_hash": None, "redacted": "",
    }


async def test_export_by_subject_takes_indexed_and_legacy_entries(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await seed(sessions)
    # 5: looked up as typed ("@SUM(1)"): the query withheld. 7: written before the nominal index,
    # about REF's alert still on record: found through the alert.
    by_ref = expected([0, 1, 2, 3, 4, 5, 7])
    by_ref[5] = withheld_query(by_ref[5])
    assert await _export(sessions, _filter(subject=REF)) == by_ref
    assert await _export(sessions, _filter(subject=OTHER)) == expected([6])
    assert await _export(sessions, _filter(subject="VS-0000404")) == []


async def test_export_about_one_nominal_withholds_the_others(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A subject-access request or a disclosure about REF: a surname search that showed REF
    among others shows REF only, and not the name typed."""
    details = {"outcome": "several", "visor_refs_shown": [OTHER, REF], "visor_refs_matched_by_alias": [OTHER],
               "total": 2}
    async with sessions.begin() as session:
        await record(session, ctx_at(NOW), actor="PC0404", action="flags.lookup", subject="fictionalname",
                     purpose="need to know: incident", details=details, nominals=[REF, OTHER])
    [full] = await _export(sessions, ExportFilter())
    assert (full["subject"], full["nominals"], full["details"], full["redacted"]) == (
        "fictionalname", [REF, OTHER], details, ""
    )
    [about] = await _export(sessions, _filter(subject=REF))
    assert about["subject"] == "(withheld)" and about["nominals"] == [REF]
    assert about["details"] == {"outcome": "several", "visor_refs_shown": [REF],
                                "visor_refs_matched_by_alias": [], "total": 2}
    assert about["redacted"] == "other nominals' references; the query as typed"
    assert about["content_hash"] == full["content_hash"]  # the stored hash, of the entry as chained


async def test_export_by_actor(sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessions)
    assert await _export(sessions, _filter(actor="PC0101")) == expected([0, 3])
    assert await _export(sessions, _filter(actor="PC0101", subject=OTHER)) == []
    assert await _export(sessions, _filter(actor="PC0202", subject=REF)) == [withheld_query(expected([5])[0])]


async def test_export_dates_are_whole_days_in_london_bst_included(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from datetime import date

    await seed(sessions)
    day = date(2026, 6, 15)  # BST: 14 June 23:00 UTC to 15 June 23:00 UTC
    assert await _export(sessions, _filter(since=day, until=day)) == expected([1, 2, 3])
    assert await _export(sessions, _filter(since=date(2026, 6, 16))) == expected([4, 5, 6, 7])
    assert await _export(sessions, _filter(until=date(2026, 6, 14))) == expected([0])  # 23:59:59 BST
    assert await _export(sessions, _filter(until=date(2026, 6, 13))) == []
    # GMT in November: the day is UTC's.
    november = _filter(since=date(2026, 11, 20), until=date(2026, 11, 20))
    assert await _export(sessions, november) == expected([5, 6])
    # An instant is taken as given: since inclusive, until exclusive.
    since, until = _at("2026-06-15T08:00:00Z"), _at("2026-06-15T23:00:00Z")
    assert await _export(sessions, _filter(since=since, until=until)) == expected([2, 3])


def test_the_filter_refuses_a_subject_or_actor_of_the_wrong_shape() -> None:
    for bad in ("VS-0000016\n", "-VS1", "VS 1", "", "V" * 33, "VS-1\u202e"):
        with pytest.raises(audit_export.ArgumentProblem):
            _filter(subject=bad)
    for bad in ("", "PC1\u0000", " PC1", "x" * 101, "PC\u200b1"):
        with pytest.raises(audit_export.ArgumentProblem):
            _filter(actor=bad)


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised() -> None:
    for cell in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert audit_export.csv_cell(cell) == "'" + cell
    assert audit_export.csv_cell("plain") == "plain"
    assert audit_export.csv_cell(None) == ""
    assert audit_export.csv_cell({"b": 1, "a": "é"}) == '{"a": "é", "b": 1}'


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture
def cli_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FixedClock]:
    """The command's clock fixed at NOW, its user "reviewer"."""
    clock = FixedClock(NOW)
    monkeypatch.setattr(audit_export, "SystemClock", lambda: clock)
    monkeypatch.setenv("LOGNAME", "reviewer")
    yield clock


def _config(tmp_path: Path, url: str) -> str:
    path = tmp_path / "casewatch.toml"
    path.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    return str(path)


def _seeded(url: str) -> None:
    async def go() -> None:
        engine = make_engine(url)
        try:
            await seed(make_sessionmaker(engine))
        finally:
            await engine.dispose()

    asyncio.run(go())


def _chain(n: int, extra: dict[str, Any]) -> list[tuple[str, str]]:
    """(content_hash, chain_hash) of SEED[:n] then the export's own entry, recomputed from the
    chain's definition (the CLI seals before it writes)."""
    contents = [_hash(i) for i in range(n)]
    contents.append(content_hash(Hasher(), **extra))
    out, previous = [], GENESIS
    for seq, content in enumerate(contents, start=1):
        previous = link_hash(Hasher(), previous, seq, seq, content)
        out.append((content, previous))
    return out


EXPORT_ENTRY = dict(
    at=NOW, actor="cli:reviewer", action="audit.exported", subject=REF, purpose="disclosure export",
    details={"subject": REF, "since": "2026-06-14T23:00:00.000000Z", "until": "2026-06-15T23:00:00.000000Z"},
    nominals=[REF],
)


def test_cli_csv_export_exactly(
    db_url: str, tmp_path: Path, cli_clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    _seeded(db_url)
    code = main(["audit", "export", "--subject", REF, "--since", "2026-06-15", "--until", "2026-06-15",
                 "--config", _config(tmp_path, db_url)])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    h = _chain(8, EXPORT_ENTRY)
    assert out == (
        "id,seq,at,actor,action,subject,purpose,nominals,details,content_hash,chain_hash,redacted\r\n"
        f'2,2,2026-06-14T23:30:00.000000Z,system,alert.opened,A-AAAAAA,alert opened: notification.missed,'
        f'"[""VS-0000016""]","{{""severity"": ""high"", ""visor_ref"": ""VS-0000016""}}",'
        f'{h[1][0]},{h[1][1]},\r\n'
        f'3,3,2026-06-15T08:00:00.000000Z,system,delivery.sent,A-AAAAAA,notification.missed,'
        f'"[""VS-0000016""]","{{""attempt"": 1, ""change"": ""opened"", ""channel"": ""slack"", '
        f'""delivery"": 1, ""receiver"": ""owner"", ""target"": ""U0FICT001""}}",{h[2][0]},{h[2][1]},\r\n'
        f'4,4,2026-06-15T22:59:59.999999Z,PC0101,alert.acknowledged,A-AAAAAA,notification.missed,'
        f'"[""VS-0000016""]","{{""outcome"": ""=HYPERLINK(\\""http://evil.example\\"")"", '
        f'""via"": ""slack_command""}}",{h[3][0]},{h[3][1]},\r\n'
    )
    # The export's own entry: after the day asked for, so not in it; sealed, chained after SEED.
    rows = asyncio.run(_rows(db_url))
    assert rows[-1] == (9, 9, "cli:reviewer", "audit.exported", REF, "disclosure export",
                        EXPORT_ENTRY["details"], [REF], h[8][1])


async def _rows(url: str) -> list[tuple[Any, ...]]:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as s:
            result = await s.execute(select(
                AuditEntry.id, AuditEntry.seq, AuditEntry.actor, AuditEntry.action, AuditEntry.subject,
                AuditEntry.purpose, AuditEntry.details, AuditEntry.nominals, AuditEntry.chain_hash,
            ).order_by(AuditEntry.id))
            return [tuple(r) for r in result]
    finally:
        await engine.dispose()


def test_cli_csv_neutralises_formula_cells(
    db_url: str, tmp_path: Path, cli_clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    _seeded(db_url)
    assert main(["audit", "export", "--actor", "PC0202", "--config", _config(tmp_path, db_url)]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 2
    assert rows[1][3:9] == [
        "PC0202", "flags.lookup", "'@SUM(1)", "'+need to know", '["VS-0000016"]',
        '{"outcome": "found", "reason": "-burglary nearby"}',
    ]


def test_cli_json_export_exactly_and_lists_itself(
    db_url: str, tmp_path: Path, cli_clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    _seeded(db_url)
    assert main(["audit", "export", "--subject", OTHER, "--format", "json",
                 "--config", _config(tmp_path, db_url)]) == 0
    out = capsys.readouterr().out
    own = dict(EXPORT_ENTRY, subject=OTHER, details={"subject": OTHER}, nominals=[OTHER])
    h = _chain(8, own)
    first = {**expected([6])[0], "seq": 7, "chain_hash": h[6][1]}
    second = {
        "id": 9, "seq": 9, "at": "2026-11-23T09:00:00.000000Z", "actor": "cli:reviewer",
        "action": "audit.exported", "subject": OTHER, "purpose": "disclosure export", "nominals": [OTHER],
        "details": {"subject": OTHER}, "content_hash": h[8][0], "chain_hash": h[8][1], "redacted": "",
    }
    assert out == "[\n" + json.dumps(first) + ",\n" + json.dumps(second) + "\n]\n"
    assert json.loads(out) == [first, second]


def test_cli_json_export_of_nothing_is_an_empty_array(
    sqlite_url: str, tmp_path: Path, cli_clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "export", "--actor", "nobody", "--format", "json",
                 "--config", _config(tmp_path, sqlite_url)]) == 0
    out = capsys.readouterr().out
    assert (out, json.loads(out)) == ("[\n]\n", [])


def test_cli_exit_codes(
    sqlite_url: str, tmp_path: Path, cli_clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, sqlite_url)
    assert main(["audit", "export", "--subject", "VS 1", "--config", config]) == 2
    assert "--subject must be a ViSOR reference" in capsys.readouterr().err
    assert main(["audit", "export", "--actor", "PC\u202e1", "--config", config]) == 2
    assert "--actor must be" in capsys.readouterr().err
    # A window that ends before it starts (the nineteenth session's trial: it gave nothing, exit 0).
    window = ["audit", "export", "--config", config, "--since"]
    assert main([*window, "2026-12-05", "--until", "2026-12-01"]) == 2
    assert "--since is after --until" in capsys.readouterr().err
    assert main([*window, "2026-12-01", "--until", "2026-12-01"]) != 2
    capsys.readouterr()
    empty = _config(tmp_path / "..", f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    assert main(["audit", "export", "--config", empty]) == 2
    assert "casewatch db upgrade" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["audit", "export", "--since", "2026-02-30"])
    assert exc.value.code == 2


# --- streaming ------------------------------------------------------------------------------------

BIG = 20_000


async def test_a_large_export_streams_in_batches_with_bounded_memory(
    sessions: async_sessionmaker[AsyncSession], engine: Any
) -> None:
    ctx = ctx_at(NOW)
    padding = "x" * 400  # about 0.5 kB an entry: 20,000 of them held at once would be 10+ MB
    for start in range(0, BIG, 2000):
        async with sessions.begin() as session:
            await record_many(session, ctx, [
                Entry(actor="PC0101", action="flags.lookup", subject=REF, purpose="slack /flags",
                      details={"n": n, "padding": padding}, nominals=[REF])
                for n in range(start, start + 2000)
            ])
    statements: list[dict[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        if "FROM audit_log" in statement:
            statements.append(dict(context.execution_options))

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    tracemalloc.start()
    try:
        count, last = 0, -1
        async with sessions() as session:
            async for entry in entries(session, ExportFilter(subject=REF)):
                assert entry["details"]["n"] == last + 1
                last, count = entry["details"]["n"], count + 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    assert count == BIG
    # The read of the entries themselves (the last statement; the one before it finds the
    # nominal's alerts) goes through a server-side cursor, a batch at a time.
    assert statements and statements[-1].get("yield_per") == 1000 and statements[-1].get("stream_results")
    assert peak < 6 * 1024 * 1024, f"peak {peak:,} bytes"
