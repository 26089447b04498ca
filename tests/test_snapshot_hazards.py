"""`casewatch import --snapshot` against the hazards a review found (issue 18): a stray quote
swallowing rows, an extract time in the future, an extract older than the stored state, bad rows
held without bound, a closed stdout. Through the real command on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from casewatch.model.events import LevelChanged, NominalUpsert
from casewatch.store.models import Event, InboundItem, LevelChange, Nominal
from integrations.snapshot import command, importer
from integrations.snapshot.fields import FIELDS, MULTILINE, RATIONALE, Kind
from tests.test_snapshot_import import (
    HEADER,
    MAPPING,
    NIGHT,
    alerts,
    config_for,
    count,
    nominal,
    person,
    query,
    snapshot,
    write_extract,
)

ROOT = Path(__file__).resolve().parent.parent


def with_stray_quote(path: Path, n: int) -> None:
    """Person n's surname cell opens a quote it never closes (`"Test`), as a hand edit might."""
    data = path.read_bytes()
    cell = f",Testperson,Number {n},".encode()
    assert data.count(cell) == 1
    path.write_bytes(data.replace(cell, f',"Test,Number {n},'.encode()))


# --- a stray quote ---------------------------------------------------------------------------------


def test_a_stray_quote_near_the_end_swallows_no_row_and_reports_no_nominal_missing(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(n) for n in range(1, 9)])
    assert snapshot(config, extract) == 0
    capsys.readouterr()
    with_stray_quote(extract, 4)  # line 5; no quote after it: the csv module reads to the end
    assert snapshot(config, extract, at=NIGHT[1]) == 1
    out, err = capsys.readouterr()
    assert (
        "lines 5-9: not CSV: a quoted cell is not closed by the end of the file (a stray quote?); "
        "the lines after line 5 are read again as rows"
    ) in err
    assert "8 row(s): 0 new, 0 changed, 7 unchanged, 1 bad" in out
    assert "missing-nominal check skipped: 1 line(s) could not be read as rows" in out
    assert "missing from the full extract" not in out
    assert alerts(db_url, "feed.nominal_missing") == []
    # Only the record's first line is kept: the lines after it were read again as rows.
    [(content,)] = query(db_url, select(InboundItem.content))
    kept = content.decode("utf-8").splitlines()
    assert len(kept) == 2 and kept[1].startswith('VS-T000004,"Test,')


def test_a_stray_quote_in_a_long_extract_costs_one_row_and_the_next_night_reports_missing_again(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(n) for n in range(1, 31)])
    assert snapshot(config, extract) == 0
    capsys.readouterr()
    write_extract(extract, [person(n, Area="N02") for n in range(1, 31)])
    with_stray_quote(extract, 3)  # line 4
    assert snapshot(config, extract, at=NIGHT[1]) == 1
    out, err = capsys.readouterr()
    assert "lines 4-14: a quoted cell is still open after 10 lines (a stray quote?)" in err
    assert "30 row(s): 0 new, 29 changed, 0 unchanged, 1 bad" in out
    assert "missing-nominal check skipped: 1 line(s) could not be read as rows" in out
    assert [n.area for n in [nominal(db_url, f"VS-T{i:06d}") for i in (2, 4, 5, 14, 15, 30)]] == ["N02"] * 6
    assert alerts(db_url, "feed.nominal_missing") == []
    # A clean full extract the next night checks again: a nominal it lacks is reported.
    write_extract(extract, [person(n, Area="N02") for n in range(1, 30)])
    assert snapshot(config, extract, at=NIGHT[2]) == 0
    assert "missing from the full extract: 1 nominal(s) (VS-T000030)" in capsys.readouterr().out
    assert [a.visor_ref for a in alerts(db_url, "feed.nominal_missing")] == ["VS-T000030"]


def test_a_stray_quote_closed_by_a_later_quoted_cell_is_resynced(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [person(n) for n in range(1, 7)]
    rows[4]["Forenames"] = "Number 5, Junior"  # line 6: written quoted, "Number 5, Junior"
    extract = write_extract(tmp_path / "extract.csv", rows)
    with_stray_quote(extract, 2)  # line 3: its quote pairs with line 6's opening quote
    assert snapshot(config_for(tmp_path, sqlite_url), extract) == 1
    out, err = capsys.readouterr()
    assert "lines 3-6: not CSV: ',' expected after '\"' (a stray quote?)" in err
    assert "6 row(s): 5 new, 0 changed, 0 unchanged, 1 bad" in out
    assert nominal(sqlite_url, "VS-T000005").forenames == "Number 5, Junior"


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_a_stray_quote_closed_by_a_quote_before_a_delimiter_in_the_next_row_merges_no_rows(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], newline: bytes
) -> None:
    # The second review's s2.csv: line 2's rationale `"Oops` opens a quote that line 3's
    # `Described as 5'10"` closes; the record across lines 2-3 happened to have 24 cells, so
    # VS-T000001 took VS-T000002's risk, agency, manager, area, licence and release date.
    config = config_for(tmp_path, db_url)
    second = {
        "Risk": "High", "Lead Agency": "Probation", "Offender Manager": "PC0002", "Area": "N02",
        "On Licence": "Y", "Release Date": "01/09/2025", "Licence Expiry": "01/09/2027",
    }
    rows = [person(1, **{"MAPPA Level": "L1"}), person(2, **second), person(3, Team="STH", Area="S01")]
    extract = write_extract(tmp_path / "extract.csv", rows)
    assert snapshot(config, extract) == 0
    capsys.readouterr()
    events = count(db_url, Event)
    rows[0]["Level Change Rationale"] = "STRAY"
    rows[1]["Level Change Rationale"] = "INCHES"
    write_extract(extract, rows)
    data = extract.read_bytes().replace(b"STRAY", b'"Oops').replace(b"INCHES", b"Described as 5'10\"")
    extract.write_bytes(data.replace(b"\r\n", newline))
    assert snapshot(config, extract, at=NIGHT[1]) == 1
    out, err = capsys.readouterr()
    assert (
        "lines 2-3: line 3 is a whole row by itself (a stray quote?); the lines after line 2 are read "
        "again as rows"
    ) in err
    assert "3 row(s): 0 new, 0 changed, 2 unchanged, 1 bad" in out
    assert "missing-nominal check skipped: 1 line(s) could not be read as rows" in out
    assert count(db_url, Event) == events
    for kind in ("risk.changed", "area.moved_out", "area.moved_in", "feed.nominal_missing"):
        assert alerts(db_url, kind) == [], kind
    one, two = nominal(db_url, "VS-T000001"), nominal(db_url, "VS-T000002")
    assert (one.risk_level, one.lead_agency, one.offender_manager, one.area, one.on_licence) == (
        "medium", "police", "PC0001", "N01", False
    )
    assert (two.risk_level, two.area, two.release_date.isoformat()) == ("high", "N02", "2025-09-01")
    [(content,)] = query(db_url, select(InboundItem.content))
    kept = content.splitlines()
    assert len(kept) == 2 and kept[1].startswith(b'VS-T000001,') and b"Oops" in kept[1]


def test_a_line_break_in_a_column_that_cannot_hold_one_is_read_again_as_a_stray_quote(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Line 3's `VS-T000002"` closes line 2's stray quote, and line 3 alone is no whole row (it lacks
    # a cell): the record across lines 2-3 has 24 cells, a line break in its surname.
    rows = [person(1), person(2, Forenames="INCHES"), person(3)]
    config = config_for(tmp_path, sqlite_url)
    extract = write_extract(tmp_path / "extract.csv", rows)
    assert snapshot(config, extract) == 0
    capsys.readouterr()
    data = extract.read_bytes()
    data = data.replace(b",Testperson,Number 1,", b',"Testperson,Number 1,', 1)
    data = data.replace(b"VS-T000002,Testperson,INCHES,", b'VS-T000002",Testperson,')
    extract.write_bytes(data)
    assert snapshot(config, extract, at=NIGHT[1]) == 1
    out, err = capsys.readouterr()
    assert (
        'lines 2-3: a line break in column "Surname", which cannot hold one (a stray quote?); the lines '
        "after line 2 are read again as rows"
    ) in err
    assert "line 3: has 23 cells, the header has 24" in err
    assert "3 row(s): 0 new, 0 changed, 1 unchanged, 2 bad" in out
    assert "missing-nominal check skipped" in out
    assert alerts(sqlite_url, "feed.nominal_missing") == []
    assert nominal(sqlite_url, "VS-T000001").forenames == "Number 1"


def test_a_plausible_row_across_lines_and_a_quoted_delimiter_are_read_as_one_row(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A rationale across lines (a field that may hold a line break), an unmapped notes column across
    # lines, and a quoted cell holding the delimiter on one line.
    header = [*HEADER, "Notes"]
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1), person(2)], header=header)
    assert snapshot(config, extract) == 0
    capsys.readouterr()
    rationale = "Raised at the MAPP meeting.\nSee the minutes (fictional)."
    write_extract(extract, [
        person(1, **{"MAPPA Level": "L3", "Level Change Rationale": rationale, "Notes": "a\nb\nc"}),
        person(2, Forenames="Number 2, Junior"),
    ], header=header)
    assert b'"Number 2, Junior"' in extract.read_bytes()
    assert snapshot(config, extract, at=NIGHT[1]) == 0
    out, err = capsys.readouterr()
    assert "2 row(s): 0 new, 2 changed, 0 unchanged, 0 bad" in out, err
    assert "missing from the full extract: 0 nominal(s)" in out
    assert query(db_url, select(LevelChange.from_level, LevelChange.to_level, LevelChange.rationale)) == [
        (2, 3, rationale)
    ]
    assert nominal(db_url, "VS-T000002").forenames == "Number 2, Junior"


def test_the_fields_that_may_hold_a_line_break_are_those_the_events_validation_lets_hold_one() -> None:
    base = {
        "surname": "Testperson", "forenames": "Alpha", "date_of_birth": "1970-02-01", "category": "1",
        "mappa_level": 2, "registered": True, "risk_level": "low", "lead_agency": "police",
        "team": "north", "offender_manager": "PC0001", "area": "N01", "on_licence": False,
        "no_fixed_abode": False, "last_notification_on": None, "markers": [],
    }
    NominalUpsert.model_validate(base)
    accepting: set[str] = set()
    for name, kind in FIELDS.items():
        if kind not in (Kind.TEXT, Kind.LIST):
            continue  # dates, codes, numbers, markers: never text with a line break
        try:
            NominalUpsert.model_validate({**base, name: ["a\nb"] if kind is Kind.LIST else "a\nb"})
        except ValidationError:
            continue
        accepting.add(name)
    LevelChanged.model_validate({"from_level": 1, "to_level": 2, "rationale": "a\nb"})
    assert accepting | {RATIONALE} == MULTILINE


def test_a_stray_quote_before_long_lines_stops_at_the_record_size_not_the_csv_field_limit(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 40 KB lines (an unmapped notes column): a stray quote made the csv module swallow rows up to
    # its 131,072-character field limit, then all of them were "missing" from the full extract.
    header = [*HEADER, "Notes"]
    rows = [person(n, Notes="n" * 40_000) for n in range(1, 11)]
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", rows, header=header)
    assert snapshot(config, extract) == 0
    capsys.readouterr()
    with_stray_quote(extract, 2)  # line 3
    assert snapshot(config, extract, at=NIGHT[1]) == 1
    out, err = capsys.readouterr()
    assert "lines 3-6: a row across lines (a quoted cell) is longer than 131072 bytes (a stray quote?)" in err
    assert "field limit" not in err
    assert "10 row(s): 0 new, 0 changed, 9 unchanged, 1 bad" in out
    assert alerts(db_url, "feed.nominal_missing") == []


def test_unreadable_bytes_skip_the_missing_nominal_check(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, sqlite_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1), person(2), person(3)])
    assert snapshot(config, extract) == 0
    capsys.readouterr()
    extract.write_bytes(extract.read_bytes().replace(b"Number 2", b"Num\xff 2"))
    assert snapshot(config, extract, at=NIGHT[1]) == 1
    out, err = capsys.readouterr()
    assert 'line 3: column "Forenames": not valid utf-8 text' in err
    assert "missing-nominal check skipped: 1 line(s) could not be read as rows" in out
    assert alerts(sqlite_url, "feed.nominal_missing") == []


def test_the_limits_that_fire_are_the_documented_ones(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extract = write_extract(tmp_path / "extract.csv", [
        person(1, Forenames="x" * 32_769),  # line 2: a cell over 32,768 characters
        person(2, Forenames="y" * 140_000),  # line 3: over the csv field limit; a line over 131,072 bytes
        person(3, Forenames="z" * 32_768),  # line 4: at the cell limit (then the field's own length rule)
        person(4),  # line 5
    ])
    assert snapshot(config_for(tmp_path, sqlite_url), extract) == 1
    out, err = capsys.readouterr()
    assert 'line 2: column "Forenames": longer than 32768 characters' in err
    assert "line 3: a line is longer than 131072 bytes" in err
    assert "line 4" in err and "longer than 32768" not in err.split("line 4")[1]
    assert "field limit" not in err
    assert "1 new, 0 changed, 0 unchanged, 3 bad" in out


# --- the extract's time --------------------------------------------------------------------------


def test_an_extract_time_in_the_future_is_refused_and_writes_nothing(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1)])
    assert snapshot(config, extract, at="2099-01-01T00:00:00Z") == 2
    err = capsys.readouterr().err
    assert "2099-01-01T00:00:00Z (from --extracted-at)" in err
    assert "[ingest] max_clock_skew_seconds" in err and "Give --extracted-at" in err
    assert count(db_url, Event) == 0
    # Within the allowed skew (a clock a minute fast): taken.
    soon = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    assert snapshot(config, extract, at=soon) == 0
    assert count(db_url, Event) == 1


def test_a_file_time_in_the_future_is_refused_naming_the_file_time(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extract = write_extract(tmp_path / "extract.csv", [person(1)])
    ahead = datetime(2099, 1, 1, tzinfo=UTC).timestamp()
    os.utime(extract, (ahead, ahead))
    args = argparse.Namespace(
        config=str(config_for(tmp_path, sqlite_url)), snapshot=str(extract), mapping=str(MAPPING),
        full=False, partial=False, dry_run=False, no_progress=True, extracted_at=None,
    )
    assert command.run(args) == 2
    err = capsys.readouterr().err
    assert "(from the file's modification time)" in err and "Give --extracted-at" in err
    assert count(sqlite_url, Event) == 0


# --- an extract older than the stored state -------------------------------------------------------


def test_an_extract_older_than_the_stored_level_sends_no_level_change_and_a_rerun_changes_nothing(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1), person(2)])
    assert snapshot(config, extract, at=NIGHT[1]) == 0  # level 2, as of NIGHT[1]
    capsys.readouterr()
    write_extract(extract, [person(1, **{"MAPPA Level": "L1", "Risk": "High"}), person(2)])
    for _ in range(2):  # the old extract, and a re-run of it
        assert snapshot(config, extract, at="2026-01-01T00:00:00Z") == 0
        out = capsys.readouterr().out
        assert "2 row(s): 0 new, 0 changed, 1 unchanged, 0 bad" in out
        assert "events: 0 accepted, 0 duplicate(s)" in out
        assert (
            "1 row(s) not applied: casewatch holds a newer state than the extract "
            "(taken 2026-01-01T00:00:00Z) (VS-T000001)"
        ) in out
    assert query(db_url, select(LevelChange.from_level, LevelChange.to_level)) == []
    one = nominal(db_url, "VS-T000001")
    assert (one.mappa_level, one.risk_level) == (2, "medium")
    assert count(db_url, Event) == 2
    # A newer extract with the same rows is applied.
    assert snapshot(config, extract, at=NIGHT[2]) == 0
    assert "0 new, 1 changed, 1 unchanged" in capsys.readouterr().out
    assert query(db_url, select(LevelChange.from_level, LevelChange.to_level)) == [(2, 1)]


def test_a_level_set_after_the_extract_holds_while_the_extracts_other_changes_go_in(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1)])
    assert snapshot(config, extract) == 0  # level 2 as of NIGHT[0]
    # The MAPP meeting raised the level after the next extract was taken (NIGHT[1]).
    level_rationale = "Raised at the MAPP meeting (fictional)"
    write_extract(extract, [person(1, **{"MAPPA Level": "L3", "Level Change Rationale": level_rationale})])
    assert snapshot(config, extract, at=NIGHT[2]) == 0
    write_extract(extract, [person(1, Risk="High")])  # still level 2 in it, a newer risk
    capsys.readouterr()
    assert snapshot(config, extract, at=NIGHT[1]) == 0
    out = capsys.readouterr().out
    assert "1 row(s): 0 new, 1 changed, 0 unchanged, 0 bad" in out and "1 accepted" in out
    one = nominal(db_url, "VS-T000001")
    assert (one.mappa_level, one.risk_level) == (3, "high")
    assert query(db_url, select(LevelChange.from_level, LevelChange.to_level)) == [(2, 3)]


# --- bad rows in memory ------------------------------------------------------------------------------


def test_bad_rows_beyond_the_kept_cap_are_reported_but_not_held(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = 4096
    monkeypatch.setattr(importer, "MAX_KEPT_BYTES", cap)
    held: list[int] = []
    keep_bad = importer._Run.keep_bad

    async def spy(self: importer._Run, header: bytes, sha256: str) -> None:
        held.append(sum(len(raw) for _, raw in self.bad_rows))
        await keep_bad(self, header, sha256)

    monkeypatch.setattr(importer._Run, "keep_bad", spy)
    rows = [person(n, DOB="not a date") for n in range(1, 201)] + [person(201)]
    extract = write_extract(tmp_path / "extract.csv", rows)
    assert snapshot(config_for(tmp_path, sqlite_url), extract, "--partial") == 1
    out, err = capsys.readouterr()
    assert err.count('column "DOB": not a date') == 200 and "line 201:" in err
    assert "1 new, 0 changed, 0 unchanged, 200 bad" in out
    assert held and held[0] <= cap
    assert "only the first 4096 bytes of them" in out
    [(content,)] = query(sqlite_url, select(InboundItem.content))
    lines = content.decode("utf-8").splitlines()
    assert len(content) <= cap + 1000 and lines[1].startswith("VS-T000001,")  # the first bad rows


# --- a closed stdout ------------------------------------------------------------------------------------


def run_with_closed(config: Path, extract: Path, *, stderr_closed: bool = False) -> tuple[int, str]:
    """The real command in a process whose stdout (and stderr, if asked) is a pipe nobody reads."""
    readable, writable = os.pipe()
    os.close(readable)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "casewatch.cli", "import", "--config", str(config), "--no-progress",
             "--snapshot", str(extract), "--mapping", str(MAPPING), "--extracted-at", NIGHT[0]],
            cwd=ROOT, stdout=writable, stderr=writable if stderr_closed else subprocess.PIPE,
            text=True, timeout=120, check=False,
        )
    finally:
        os.close(writable)
    return done.returncode, done.stderr or ""


def test_a_closed_stdout_ends_quietly_with_the_imports_exit_code(db_url: str, tmp_path: Path) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1), person(2)])
    code, err = run_with_closed(config, extract)
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err
    assert nominal(db_url, "VS-T000002") is not None
    # Bad rows reported on a closed stderr too: the import still finishes, exit 1.
    write_extract(extract, [person(3), person(4, DOB="never")])
    code, _ = run_with_closed(config, extract, stderr_closed=True)
    assert code == 1
    assert nominal(db_url, "VS-T000003") is not None
    assert count(db_url, InboundItem) == 1
    refs = {r[0] for r in query(db_url, select(Nominal.visor_ref))}
    assert refs == {"VS-T000001", "VS-T000002", "VS-T000003"}
