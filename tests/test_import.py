"""`casewatch import`: NDJSON through the real ingest pipeline, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from casewatch.cli import main
from casewatch.commands import import_events
from casewatch.demo.data import build_demo
from casewatch.store.engine import make_engine
from casewatch.store.models import Alert, Event, Nominal

TODAY = date(2026, 11, 23)


def demo_events(count: int) -> list[dict[str, Any]]:
    return build_demo(TODAY, nominals=count).events[:count]


def line(event: dict[str, Any]) -> str:
    return json.dumps(event) + "\n"


def config_for(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "casewatch.toml"
    path.write_text(
        f'[database]\nurl = "{url}"\n\n[[teams]]\nid = "north"\nname = "North MOSOVO"\n'
        'spoc_email = "north.spoc@force.example"\n',
        encoding="utf-8",
    )
    return path


def test_no_teams_configured_is_refused_before_anything_is_read(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare.toml"
    bare.write_text(f'[database]\nurl = "{sqlite_url}"\n', encoding="utf-8")
    path = tmp_path / "events.ndjson"
    path.write_text("".join(line(e) for e in demo_events(3)))
    assert run_import(bare, str(path)) == 2
    assert "no [[teams]]" in capsys.readouterr().err
    assert count(sqlite_url, Event) == 0


def count(url: str, model: Any, **where: Any) -> int:
    async def run() -> int:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                stmt = select(func.count()).select_from(model)
                for column, value in where.items():
                    stmt = stmt.where(getattr(model, column) == value)
                return int((await conn.execute(stmt)).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def run_import(config: Path, source: str, *extra: str) -> int:
    return main(["import", "--config", str(config), "--no-progress", *extra, source])


def test_a_good_file_is_stored(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = demo_events(30)
    path = tmp_path / "events.ndjson"
    # Blank lines (also with spaces or CRLF) are skipped, not counted.
    path.write_text(line(events[0]) + "\n   \n" + "".join(line(e) for e in events[1:]) + "\r\n")
    assert run_import(config_for(tmp_path, db_url), str(path), "--batch-size", "7") == 0
    out, err = capsys.readouterr()
    assert "import: 30 accepted, 0 duplicate(s), 0 rejected" in out
    assert err == ""
    assert count(db_url, Event, source="import") == 30
    assert count(db_url, Nominal) == 30


def test_bad_lines_are_reported_and_good_lines_kept(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = demo_events(5)
    bad_date = {**good[0], "id": "bad-date", "data": {**good[0]["data"], "date_of_birth": "1970-13-45"}}
    faults = {"category": "9", "registered": "yes"}
    two_faults = {**good[1], "id": "two-faults", "data": {**good[1]["data"], **faults}}
    unknown_type = {**good[2], "id": "unknown-type", "type": "nominal.teleported"}
    lines = [
        line(good[0]),                       # 1
        '{"id": "broken", "type": \n',       # 2 bad JSON
        line(good[1]),                       # 3
        "[1, 2, 3]\n",                       # 4 not an object
        line(bad_date),                      # 5 field error
        "\n",                                # 6 blank: skipped
        line(two_faults),                    # 7 two field errors
        line(unknown_type),                  # 8 unknown type
        line(good[2]),                       # 9
    ]
    path = tmp_path / "mixed.ndjson"
    with path.open("wb") as stream:
        stream.write("".join(lines).encode())
        stream.write(b'{"id": "latin1-\xe9"}\n')  # 10 not UTF-8
        stream.write(line(good[3]).encode())    # 11
        stream.write(line(good[4]).encode().rstrip(b"\n"))  # 12, no final newline

    assert run_import(config_for(tmp_path, db_url), str(path), "--batch-size", "2") == 1
    out, err = capsys.readouterr()
    assert "import: 5 accepted, 0 duplicate(s), 6 rejected" in out
    assert "rejected line(s): 2, 4, 5, 7, 8, 10" in out
    assert "line 2: not valid JSON" in err
    assert "line 4: expected one JSON object (an event envelope) per line" in err
    assert "line 5: data.date_of_birth:" in err
    assert "line 7: data.category:" in err and "line 7: data.registered: must be true or false" in err
    assert "line 8: type: unknown event type" in err
    assert "line 10: not UTF-8 text" in err
    for number in (1, 3, 6, 9, 11, 12):
        assert f"line {number}:" not in err
    assert count(db_url, Event) == 5
    assert count(db_url, Event, id="bad-date") == 0


def test_reimport_counts_duplicates_and_changes_nothing(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = demo_events(10)
    path = tmp_path / "events.ndjson"
    # The same event twice in one file: the second is a duplicate.
    path.write_text("".join(line(e) for e in events) + line(events[3]))
    config = config_for(tmp_path, db_url)
    assert run_import(config, str(path)) == 0
    assert "import: 10 accepted, 1 duplicate(s), 0 rejected" in capsys.readouterr().out
    assert run_import(config, str(path)) == 0
    assert "import: 0 accepted, 11 duplicate(s), 0 rejected" in capsys.readouterr().out
    assert count(db_url, Event) == 10


def test_stdin(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = demo_events(4)
    data = "".join(line(e) for e in events) + "not json\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    assert run_import(config_for(tmp_path, db_url), "-") == 1
    out, err = capsys.readouterr()
    assert "import: 4 accepted, 0 duplicate(s), 1 rejected" in out
    assert "line 5: not valid JSON" in err
    assert count(db_url, Event) == 4


def test_events_that_open_alerts_are_counted(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    border = {
        "id": "import-border-1", "type": "travel.border_alert", "occurred_at": "2026-11-22T07:40:00Z",
        "visor_ref": "VS-D999777",
        "data": {
            "port": "Mockford Airport (fictional)", "direction": "inbound",
            "checked_at": "2026-11-22T07:40:00Z",
        },
    }
    path = tmp_path / "border.ndjson"
    path.write_text(line(border))
    assert run_import(config_for(tmp_path, sqlite_url), str(path)) == 0
    assert "1 alert(s) opened" in capsys.readouterr().out
    assert count(sqlite_url, Alert, visor_ref="VS-D999777") == 1


def test_an_overlong_line_is_rejected_and_the_next_kept(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(import_events, "MAX_LINE_BYTES", 2000)
    events = demo_events(2)
    path = tmp_path / "long.ndjson"
    path.write_text(line(events[0]) + '{"x": "' + "y" * 5000 + '"}\n' + line(events[1]))
    assert run_import(config_for(tmp_path, sqlite_url), str(path)) == 1
    out, err = capsys.readouterr()
    assert "line 2: line is longer than 2000 bytes" in err
    assert "import: 2 accepted, 0 duplicate(s), 1 rejected" in out


def test_a_batch_the_store_refuses_costs_only_its_bad_line(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the pipeline fails a batch for one event (not a validation error), the import retries
    the batch line by line: the other lines are stored, the one that fails is reported."""
    from casewatch.ingest.pipeline import ingest as real_ingest

    events = demo_events(6)
    poison = events[3]["id"]

    async def ingest_failing_on_poison(sessions: Any, envelopes: Any, ctx: Any, *, source: str) -> Any:
        if any(e.id == poison for e in envelopes):
            raise ValueError("simulated failure while applying one event")
        return await real_ingest(sessions, envelopes, ctx, source=source)

    monkeypatch.setattr(import_events, "ingest", ingest_failing_on_poison)
    path = tmp_path / "events.ndjson"
    path.write_text("".join(line(e) for e in events))
    assert run_import(config_for(tmp_path, sqlite_url), str(path), "--batch-size", "3") == 1
    out, err = capsys.readouterr()
    assert "line 4: could not be stored (ValueError)" in err
    assert "simulated" not in err  # only the type: a database error's text can quote the data
    assert "import: 5 accepted, 0 duplicate(s), 1 rejected" in out
    assert count(sqlite_url, Event) == 5


def test_an_unmigrated_database_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    path = tmp_path / "events.ndjson"
    path.write_text(line(demo_events(1)[0]))
    assert run_import(config, str(path)) == 2
    err = capsys.readouterr().err
    assert "not set up yet" in err and f"casewatch db upgrade --config {config}" in err


def test_a_missing_file_is_refused(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_import(config_for(tmp_path, sqlite_url), str(tmp_path / "nope.ndjson")) == 2
    assert "cannot read" in capsys.readouterr().err


def test_batch_size_is_bounded(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_import(config_for(tmp_path, sqlite_url), "-", "--batch-size", "0") == 2
    assert "--batch-size must be between 1 and 1000" in capsys.readouterr().err


def test_lines_are_read_one_at_a_time() -> None:
    """A huge file streams: the first line is validated before the rest is read."""
    events = demo_events(3)

    class OnlyReadline(io.BytesIO):
        def read(self, *args: Any) -> bytes:
            raise AssertionError("the whole stream was read")

    stream = OnlyReadline("".join(line(e) for e in events).encode())
    lines = import_events.read_lines(stream)
    first = next(lines)
    assert first.number == 1 and first.envelope is not None
    assert stream.tell() == len(line(events[0]).encode())
    assert [entry.number for entry in lines] == [2, 3]


def test_a_read_error_part_way_keeps_what_was_read(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = demo_events(3)

    class FailingAfterTwoLines(io.BytesIO):
        calls = 0

        def readline(self, *args: Any) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError(5, "Input/output error")
            return super().readline(*args)

    class Stdin:
        buffer = FailingAfterTwoLines("".join(line(e) for e in events).encode())

    monkeypatch.setattr(sys, "stdin", Stdin())
    assert run_import(config_for(tmp_path, sqlite_url), "-") == 2
    out, err = capsys.readouterr()
    assert "import: 2 accepted, 0 duplicate(s), 0 rejected" in out
    assert "stopped: cannot read the input (Input/output error)" in err
    assert count(sqlite_url, Event) == 2


def test_a_hostile_unknown_key_is_not_echoed(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An unknown key is refused by name, but a name with a terminal escape, a line break, a bidi
    # override or 5,000 characters is the sender's text: it must not reach the terminal.
    good = demo_events(1)[0]
    key = "\x1b[2J\x1b[31mevil\nline 99: forged\u202e" + "k" * 5000
    hostile = {**good, "id": "hostile-key", "data": {**good["data"], key: 1}}
    path = tmp_path / "hostile.ndjson"
    path.write_text(line(hostile), encoding="utf-8")
    assert run_import(config_for(tmp_path, sqlite_url), str(path)) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == ["line 1: data.(unknown key): is not a known field"]
    assert count(sqlite_url, Event) == 0


def test_a_line_stamped_in_the_future_is_rejected_by_the_clock() -> None:
    """Issue 18 review: as the events API, the import refuses an event said to have happened more
    than [ingest] max_clock_skew_seconds after its clock; the lines around it still count."""
    from casewatch.clock import FixedClock
    from tests.support import T0, envelope

    now_line = json.dumps(envelope("visit.recorded", occurred_at=T0)) + "\n"
    future = json.dumps(envelope("visit.recorded", occurred_at="2099-01-01T00:00:00Z")) + "\n"
    lines = list(import_events.read_lines(io.BytesIO((now_line + future).encode()), FixedClock(T0), 300))
    assert lines[0].envelope is not None
    assert lines[1].envelope is None
    assert lines[1].problems == (
        "occurred_at: is more than 300 seconds after the server's clock: an event cannot have happened "
        "in the future (check the sender's clock and the year)",
    )
