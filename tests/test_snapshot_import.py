"""`casewatch import --snapshot`: a case-system extract compared with the stored state, through the
real command (casewatch.cli.main and integrations.snapshot.command.run), on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from casewatch.cli import main
from casewatch.store.engine import make_engine
from casewatch.store.models import Alert, Event, InboundItem, LevelChange, Marker, Nominal
from integrations.snapshot import command, importer

SAMPLES = Path(__file__).resolve().parent.parent / "integrations" / "snapshot" / "samples"
MAPPING = SAMPLES / "mapping.toml"
HEADER = next(csv.reader(io.StringIO((SAMPLES / "extract.csv").read_text(encoding="utf-8"))))
NIGHT = ["2026-11-20T02:00:00Z", "2026-11-21T02:00:00Z", "2026-11-22T02:00:00Z", "2026-11-23T02:00:00Z"]


def person(n: int, **changes: str) -> dict[str, str]:
    row = {
        "ViSOR Ref": f"VS-T{n:06d}", "Surname": "Testperson", "Forenames": f"Number {n}",
        "DOB": "01/02/1970", "MAPPA Category": "Cat 1", "MAPPA Level": "L2", "Level Change Rationale": "",
        "Registered": "Y", "Risk": "Medium", "Lead Agency": "Police", "Team": "NTH",
        "Offender Manager": "PC0001", "Area": "N01", "On Licence": "N", "NFA": "N",
        "Last Notification": "2026-06-01", "Warning Markers": "VIOL", "Aliases": "", "PNC ID": "",
        "CRN": "", "NOMS Number": "", "Release Date": "", "Licence Expiry": "", "Visit Every (days)": "",
    }
    row.update(changes)
    return row


def write_extract(path: Path, rows: list[dict[str, str]], *, header: list[str] | None = None) -> Path:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header or HEADER)
    for row in rows:
        writer.writerow([row.get(column, "") for column in header or HEADER])
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def config_for(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "casewatch.toml"
    teams = "".join(
        f'[[teams]]\nid = "{t}"\nname = "{t.title()} MOSOVO"\nspoc_email = "{t}.spoc@force.example"\n'
        f'supervisor_emails = ["sgt.{t}@force.example"]\n\n'
        for t in ("north", "south")
    )
    path.write_text(f'[database]\nurl = "{url}"\n\n{teams}', encoding="utf-8")
    return path


def snapshot(
    config: Path, extract: Path, *extra: str, mapping: Path = MAPPING, at: str | None = NIGHT[0]
) -> int:
    argv = ["import", "--config", str(config), "--no-progress", "--snapshot", str(extract)]
    argv += ["--mapping", str(mapping)]
    if at is not None:
        argv += ["--extracted-at", at]
    return main([*argv, *extra])


def query(url: str, stmt: Any) -> list[Any]:
    async def run() -> list[Any]:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(stmt)).all())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def count(url: str, model: Any, **where: Any) -> int:
    stmt = select(func.count()).select_from(model)
    for column, value in where.items():
        stmt = stmt.where(getattr(model, column) == value)
    return int(query(url, stmt)[0][0])


def nominal(url: str, ref: str) -> Any:
    rows = query(url, select(Nominal).where(Nominal.visor_ref == ref))
    return rows[0] if rows else None


def alerts(url: str, kind: str) -> list[Any]:
    return query(url, select(Alert.kind, Alert.visor_ref, Alert.subject, Alert.details, Alert.owner)
                 .where(Alert.kind == kind))


# --- the shipped sample ---------------------------------------------------------------------------


def test_the_sample_extract_is_imported_and_a_rerun_changes_nothing(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    assert snapshot(config, SAMPLES / "extract.csv") == 0
    out = capsys.readouterr().out
    assert "3 new, 0 changed, 0 unchanged, 0 bad" in out
    assert "3 accepted" in out
    two = nominal(db_url, "VS-S000002")
    assert (two.mappa_level, two.category, two.risk_level) == (2, "1", "high")
    assert (two.lead_agency, two.team) == ("probation", "north")
    assert (two.crn, two.noms_number, two.pnc_id) == ("X100002", "A1234BC", "00/200002X")
    assert two.date_of_birth.isoformat() == "1985-11-15" and two.licence_expiry.isoformat() == "2027-09-01"
    assert two.aliases == ["Exampleton", "B. Example"] and two.on_licence is True
    codes = {row[0] for row in query(db_url, select(Marker.code).where(Marker.visor_ref == "VS-S000002"))}
    assert codes == {"VIOL", "CHLD"}
    three = nominal(db_url, "VS-S000003")
    assert three.mappa_level is None and three.last_notification_on is None and three.team == "south"
    assert count(db_url, Event, source="snapshot") == 3

    # The same file again (a re-run of last night's cron job): nothing to change.
    assert snapshot(config, SAMPLES / "extract.csv", at=NIGHT[1]) == 0
    out = capsys.readouterr().out
    assert "0 new, 0 changed, 3 unchanged, 0 bad" in out and "0 accepted" in out
    assert count(db_url, Event) == 3


# --- differences ------------------------------------------------------------------------------------


def test_a_changed_field_is_one_upsert_keeping_what_the_mapping_does_not_cover(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1), person(2)])
    assert snapshot(config, extract) == 0
    # Something the extract has no column for, sent by another feed (home_address).
    set_home_address(db_url, "VS-T000001", "1 Fictional Road (fictional)")
    write_extract(extract, [person(1, Forenames="Renamed", **{"Warning Markers": "VIOL;WEAP"}), person(2)])
    assert snapshot(config, extract, at=NIGHT[1]) == 0
    out = capsys.readouterr().out
    assert "0 new, 1 changed, 1 unchanged" in out and "1 accepted" in out
    upserts = query(db_url, select(Event.id, Event.data).where(Event.type == "nominal.upsert",
                                                                 Event.visor_ref == "VS-T000001"))
    assert len(upserts) == 3  # the first import, the address, the change
    changed = [data for event_id, data in upserts if event_id.startswith("snapshot-") and
               data["data"]["forenames"] == "Renamed"]
    assert len(changed) == 1
    assert changed[0]["data"]["home_address"] == "1 Fictional Road (fictional)"
    one = nominal(db_url, "VS-T000001")
    assert one.forenames == "Renamed" and one.home_address == "1 Fictional Road (fictional)"
    codes = {row[0] for row in query(db_url, select(Marker.code).where(Marker.visor_ref == "VS-T000001"))}
    assert codes == {"VIOL", "WEAP"}


def set_home_address(url: str, ref: str, address: str) -> None:
    from casewatch.clock import SystemClock
    from casewatch.config import load_config
    from casewatch.context import Context
    from casewatch.ingest.pipeline import ingest
    from casewatch.ingest.schema import parse_envelopes
    from casewatch.store.engine import make_sessionmaker

    async def run() -> None:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                row = (await conn.execute(select(Nominal).where(Nominal.visor_ref == ref))).one()
            data = {
                name: getattr(row, name) for name in (
                    "surname", "forenames", "category", "mappa_level", "registered", "risk_level",
                    "lead_agency", "team", "offender_manager", "area", "on_licence", "no_fixed_abode",
                )
            }
            data |= {"date_of_birth": row.date_of_birth.isoformat(), "last_notification_on":
                     row.last_notification_on.isoformat(), "home_address": address,
                     "markers": [{"code": "VIOL", "label": "Violence", "restricted": False}]}
            envelopes, errors = parse_envelopes({
                "id": f"api-{ref}-address", "type": "nominal.upsert", "occurred_at": "2026-11-20T12:00:00Z",
                "visor_ref": ref, "data": data,
            })
            assert not errors, errors
            settings = load_config(None).model_copy(update={"teams": []})
            await ingest(make_sessionmaker(engine), envelopes, Context(settings, SystemClock()), source="api")
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_a_level_change_with_a_rationale_opens_exactly_one_level_change_alert(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1), person(2)])
    assert snapshot(config, extract) == 0
    rationale = "Reduced at the MAPP meeting: stable for a year (fictional)"
    write_extract(extract, [
        person(1, **{"MAPPA Level": "Level 1", "Level Change Rationale": rationale}),
        person(2, **{"MAPPA Level": "L3", "Risk": "High"}),  # up, no rationale column value, and riskier
    ])
    assert snapshot(config, extract, at=NIGHT[1]) == 0
    capsys.readouterr()
    down = [a for a in alerts(db_url, "mappa.level_changed") if a.visor_ref == "VS-T000001"]
    assert len(down) == 1
    assert down[0].details["rationale_given"] is True and down[0].details["direction"] == "decrease"
    changes = query(db_url, select(LevelChange.from_level, LevelChange.to_level, LevelChange.rationale)
                    .where(LevelChange.visor_ref == "VS-T000001"))
    assert changes == [(2, 1, rationale)]
    # A decrease that came with its rationale is not flagged as one without.
    assert alerts(db_url, "mappa.decrease_without_rationale") == []
    up = [a for a in alerts(db_url, "mappa.level_changed") if a.visor_ref == "VS-T000002"]
    assert len(up) == 1 and up[0].details["to_level"] == 3
    assert nominal(db_url, "VS-T000001").mappa_level == 1 and nominal(db_url, "VS-T000002").mappa_level == 3
    # The risk change of the same row went in as the upsert after the level change.
    risk = alerts(db_url, "risk.changed")
    assert [a.visor_ref for a in risk] == ["VS-T000002"]
    assert nominal(db_url, "VS-T000002").risk_level == "high"
    types = sorted(row[0] for row in query(
        db_url, select(Event.type).where(Event.visor_ref == "VS-T000002", Event.occurred_at > datetime(
            2026, 11, 20, 12, tzinfo=UTC))
    ))
    assert types == ["mappa.level_changed", "nominal.upsert"]


def test_a_risk_change_alone_is_an_upsert_that_raises_risk_changed(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1)])
    assert snapshot(config, extract) == 0
    write_extract(extract, [person(1, Risk="Very High")])
    assert snapshot(config, extract, at=NIGHT[1]) == 0
    assert "1 changed" in capsys.readouterr().out
    risk = alerts(db_url, "risk.changed")
    assert len(risk) == 1 and risk[0].visor_ref == "VS-T000001"
    assert alerts(db_url, "mappa.level_changed") == []


def test_a_value_going_back_and_forth_is_a_new_event_each_night(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    extract = tmp_path / "extract.csv"
    for night, area in enumerate(("N01", "N02", "N01", "N02")):
        write_extract(extract, [person(1, Area=area)])
        assert snapshot(config, extract, at=NIGHT[night]) == 0
        assert "1 accepted" in capsys.readouterr().out, night
        assert nominal(db_url, "VS-T000001").area == area
        # The same file again that night: nothing new.
        assert snapshot(config, extract, at=NIGHT[night]) == 0
        assert "0 accepted" in capsys.readouterr().out
    assert count(db_url, Event, source="snapshot") == 4


# --- full and partial extracts ------------------------------------------------------------------------


def test_a_full_extract_reports_a_nominal_it_no_longer_lists_and_deletes_nothing(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1), person(2), person(3, Team="STH")])
    assert snapshot(config, extract) == 0
    capsys.readouterr()
    # Partial: the missing one is not reported (--partial overrides the mapping's full = true).
    write_extract(extract, [person(1)])
    assert snapshot(config, extract, "--partial", at=NIGHT[1]) == 0
    assert "missing" not in capsys.readouterr().out
    assert alerts(db_url, "feed.nominal_missing") == []
    # Full, covering north only (the teams its rows name): VS-T000002 is missing, VS-T000003 (south) not.
    assert snapshot(config, extract, "--full", at=NIGHT[1]) == 0
    out = capsys.readouterr().out
    assert "missing from the full extract: 1 nominal(s) (VS-T000002)" in out
    missing = alerts(db_url, "feed.nominal_missing")
    assert [(a.visor_ref, a.subject, a.owner) for a in missing] == [("VS-T000002", "extract.csv", "PC0001")]
    assert nominal(db_url, "VS-T000002") is not None
    # Again: still reported, no second alert while the first is live.
    assert snapshot(config, extract, "--full", at=NIGHT[2]) == 0
    assert "0 feed.nominal_missing alert(s) opened" in capsys.readouterr().out
    assert len(alerts(db_url, "feed.nominal_missing")) == 1


# --- bad rows -----------------------------------------------------------------------------------------


def test_bad_rows_are_reported_by_line_and_column_kept_and_the_good_rows_go_in(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    rows = [
        person(1),
        person(2, DOB="31/02/1970"),  # line 3: not a date
        person(3, Risk="Extreme"),  # line 4: unknown code
        person(4, Surname="Test\u202eperson"),  # line 5: a bidi override
        person(1, Forenames="Again"),  # line 6: the same reference twice
        person(6, **{"Warning Markers": "VIOL;XXXX"}),  # line 7: a marker code not in the table
        person(7),
    ]
    extract = write_extract(tmp_path / "extract.csv", rows)
    with extract.open("a", encoding="utf-8") as f:
        f.write("VS-T000008,Testperson,too,few,cells\r\n")  # line 9
    assert snapshot(config, extract) == 1
    out, err = capsys.readouterr()
    assert 'line 3: column "DOB": not a date in format %d/%m/%Y' in err
    assert 'line 4: column "Risk": not a known code (see [values.risk_level] in the mapping)' in err
    assert 'line 5: column "Surname":' in err and "U+202E" in err
    assert 'line 6: column "ViSOR Ref": the same ViSOR reference as line 2' in err
    assert 'line 7: column "Warning Markers": a marker code not in the mapping' in err
    assert "line 9: has 5 cells, the header has 24" in err
    assert "Extreme" not in err and "31/02/1970" not in err and "Again" not in err
    assert "2 new, 0 changed, 0 unchanged, 6 bad" in out
    assert {r[0] for r in query(db_url, select(Nominal.visor_ref))} == {"VS-T000001", "VS-T000007"}
    [item] = query(db_url, select(InboundItem.source, InboundItem.content, InboundItem.external_id,
                                  InboundItem.alert_id, InboundItem.reason))
    assert item.source == "snapshot" and item.external_id.startswith("sha256:")
    kept = item.content.decode("utf-8").splitlines()
    assert kept[0].startswith("ViSOR Ref,Surname") and len(kept) == 7
    assert kept[2].startswith("VS-T000003,") and kept[-1].startswith("VS-T000008,")
    assert "Testperson" not in item.reason and "line(s) 3, 4, 5, 6, 7, 9" in item.reason
    # The first rows' problems too (the nineteenth session's trial: `inbound show` said which lines,
    # not why), within the column; never a cell's content.
    assert 'line 3: column "DOB": not a date in format %d/%m/%Y' in item.reason
    assert 'line 4: column "Risk": not a known code' in item.reason and len(item.reason) <= 300
    assert "31/02/1970" not in item.reason and "Extreme" not in item.reason
    unreadable = alerts(db_url, "feed.unreadable")
    assert len(unreadable) == 1
    assert f"inbound item {query(db_url, select(InboundItem.id))[0][0]}" in out
    # The same file again: the bad rows are not kept twice.
    assert snapshot(config, extract) == 1
    assert count(db_url, InboundItem) == 1 and len(alerts(db_url, "feed.unreadable")) == 1


def test_a_new_nominal_needs_every_required_field_mapped(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    write_extract(tmp_path / "full.csv", [person(1)])
    assert snapshot(config, tmp_path / "full.csv") == 0
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        '[columns]\nvisor_ref = "ViSOR Ref"\nrisk_level = "Risk"\n[values.risk_level]\n"High" = "high"\n'
        '"Medium" = "medium"\n', encoding="utf-8",
    )
    header = ["ViSOR Ref", "Risk"]
    extract = write_extract(tmp_path / "risk.csv", [person(1, Risk="High"), person(2)], header=header)
    assert snapshot(config, extract, mapping=mapping, at=NIGHT[1]) == 1
    out, err = capsys.readouterr()
    assert "line 3: a nominal not stored yet needs the field(s) surname, forenames" in err
    assert "0 new, 1 changed" in out
    assert nominal(db_url, "VS-T000001").risk_level == "high"
    assert nominal(db_url, "VS-T000002") is None


# --- the mapping and the header ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('[columns]\nsurname = "Surname"\n', "columns.visor_ref: required"),
        ('[columns]\nvisor_ref = "Ref"\nshoe_size = "Shoes"\n', "columns.shoe_size: not a nominal.upsert"),
        ('[columns]\nvisor_ref = "Ref"\n[values.risk_level]\n"VH" = "extreme"\n',
         'values.risk_level."VH": must be one of low, medium, high, very_high'),
        ('[columns]\nvisor_ref = "Ref"\n[values.mappa_level]\n"L4" = 4\n', 'mappa_level."L4": must be 1'),
        ('[extract]\ndate_format = "%d/%m"\n[columns]\nvisor_ref = "Ref"\n', "extract.date_format: must be"),
        ('[extract]\nencoding = "utf-16"\n[columns]\nvisor_ref = "Ref"\n', "extract.encoding: must be ASCII"),
        ('[extract]\ndelimiter = ",,"\n[columns]\nvisor_ref = "Ref"\n', "extract.delimiter:"),
        ('[extract]\nfull = "yes"\n[columns]\nvisor_ref = "Ref"\n', "extract.full: must be true or false"),
        ('[columns]\nvisor_ref = "Ref"\nmarkers = "M"\n[markers.V]\nlabel = ""\n', 'markers."V".label'),
        ('[columns]\nvisor_ref = "Ref"\nsurname = "Ref"\n', "columns.surname: the column is already mapped"),
        ('[colums]\nvisor_ref = "Ref"\n', "colums: not a known section"),
        ("[columns\n", "not valid TOML"),
    ],
)
def test_a_bad_mapping_is_refused_naming_the_key_before_any_row_is_read(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, named: str
) -> None:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(toml, encoding="utf-8")
    extract = write_extract(tmp_path / "extract.csv", [person(1)])
    assert snapshot(config_for(tmp_path, sqlite_url), extract, mapping=mapping) == 2
    assert named in capsys.readouterr().err
    assert count(sqlite_url, Event) == 0


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"", "the file is empty"),
        (b"ViSOR Ref;Surname\nVS-1;Testperson\n", "is the delimiter right?"),
        (b"ViSOR Ref,Surname,Surname\nVS-1,A,B\n", 'the header has the column "Surname" 2 times'),
        (b"Surname\nTestperson\n", 'columns.visor_ref: the header has no column "ViSOR Ref"'),
    ],
)
def test_a_header_that_does_not_fit_the_mapping_stops_the_import(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, named: str
) -> None:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[columns]\nvisor_ref = "ViSOR Ref"\nsurname = "Surname"\n', encoding="utf-8")
    extract = tmp_path / "extract.csv"
    extract.write_bytes(content)
    assert snapshot(config_for(tmp_path, sqlite_url), extract, mapping=mapping) == 2
    assert named in capsys.readouterr().err
    assert count(sqlite_url, Event) == 0


def test_an_unreadable_file_is_exit_2(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert snapshot(config_for(tmp_path, sqlite_url), tmp_path / "nowhere.csv") == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_database_not_migrated_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    assert snapshot(config, SAMPLES / "extract.csv") == 2
    assert "casewatch db upgrade" in capsys.readouterr().err


# --- dry run, defaults, hostile input ----------------------------------------------------------------------


def test_a_dry_run_reports_what_would_change_and_writes_nothing(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1), person(2)])
    assert snapshot(config, extract) == 0
    capsys.readouterr()
    tables = (Event, Nominal, Alert, InboundItem, LevelChange)
    before = {model.__name__: count(db_url, model) for model in tables}
    write_extract(extract, [person(1, **{"MAPPA Level": "L3"}), person(3), person(4, DOB="yesterday")])
    assert snapshot(config, extract, "--dry-run", "--full", at=NIGHT[1]) == 1
    out, err = capsys.readouterr()
    assert "dry run: nothing written" in out
    assert "1 new, 1 changed, 0 unchanged, 1 bad" in out
    assert "events: 2 would be sent, 2 new, 0 seen before" in out
    assert "missing from the full extract: 1 nominal(s) (VS-T000002)" in out
    assert 'line 4: column "DOB": not a date' in err
    after = {model.__name__: count(db_url, model) for model in tables}
    assert after == before


def test_the_command_function_defaults_occurred_at_to_the_file_time(db_url: str, tmp_path: Path) -> None:
    extract = write_extract(tmp_path / "extract.csv", [person(1)])
    taken = datetime(2026, 11, 19, 23, 30, tzinfo=UTC)
    os.utime(extract, (taken.timestamp(), taken.timestamp()))
    args = argparse.Namespace(
        config=str(config_for(tmp_path, db_url)), snapshot=str(extract), mapping=str(MAPPING), full=False,
        partial=False, dry_run=False, no_progress=True, extracted_at=None,
    )
    assert command.run(args) == 0
    [(occurred,)] = query(db_url, select(Event.occurred_at))
    assert occurred == taken


def test_hostile_cells_go_through_the_events_validation(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, db_url)
    rows = [
        person(1, Surname="=HYPERLINK(\"http://example.invalid\")"),  # text as the API takes it
        person(2, Forenames="Zero\u200bwidth"),  # line 3: a format character
        person(3, Area="N\x0701"),  # line 4: a control character
        person(4, Forenames="x" * 40_000),  # line 5: oversized cell
        person(5, **{"ViSOR Ref": "VS T 5"}),  # line 6: not a reference
        person(6, **{"Visit Every (days)": "99999999"}),  # line 7: not a whole number of days
    ]
    extract = write_extract(tmp_path / "extract.csv", rows)
    extract.write_bytes(b"\xef\xbb\xbf" + extract.read_bytes())  # a BOM before the header
    assert snapshot(config, extract) == 1
    out, err = capsys.readouterr()
    assert 'line 3: column "Forenames":' in err and "U+200B" in err
    assert 'line 4: column "Area":' in err and "U+0007" in err
    assert 'line 5: column "Forenames": longer than 32768 characters' in err
    assert 'line 6: column "ViSOR Ref":' in err
    assert 'line 7: column "Visit Every (days)": not a whole number' in err
    assert "xxxxxxxx" not in err and "HYPERLINK" not in err
    assert "1 new" in out and "5 bad" in out
    assert nominal(db_url, "VS-T000001").surname.startswith("=HYPERLINK")


def test_a_cp1252_extract_with_semicolons_reads_and_bad_bytes_are_reported(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(
        MAPPING.read_text(encoding="utf-8").replace('encoding = "utf-8"', 'encoding = "cp1252"')
        .replace('delimiter = ","', 'delimiter = ";"'),
        encoding="utf-8",
    )
    text = ";".join(HEADER) + "\r\n" + ";".join(person(1, Surname="Testpersön").values()) + "\r\n"
    second = ";".join(person(2).values()).encode("cp1252").replace(b"Number", b"Num\x81")
    data = text.encode("cp1252") + second + b"\r\n"
    extract = tmp_path / "extract.csv"
    extract.write_bytes(data)
    assert snapshot(config_for(tmp_path, sqlite_url), extract, mapping=mapping) == 1
    err = capsys.readouterr().err
    assert 'line 3: column "Forenames": not valid cp1252 text' in err
    assert nominal(sqlite_url, "VS-T000001").surname == "Testpersön"


def test_an_oversized_line_and_a_cell_across_lines_keep_the_line_numbers_right(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extract = write_extract(tmp_path / "extract.csv", [
        person(1, Forenames="Two\nlines"),  # lines 2-3: a line break in a column that cannot hold one
        person(2, Surname="y" * 300_000),  # line 4: longer than a line may be
        person(3),  # line 5
    ])
    assert snapshot(config_for(tmp_path, sqlite_url), extract) == 1
    out, err = capsys.readouterr()
    assert 'lines 2-3: a line break in column "Forenames", which cannot hold one (a stray quote?)' in err
    assert "line 3: has 22 cells, the header has 24" in err  # read again as a row
    assert "line 4: a line is longer than 131072 bytes" in err
    assert "1 new, 0 changed, 0 unchanged, 3 bad" in out
    assert nominal(sqlite_url, "VS-T000003") is not None
    [(content,)] = query(sqlite_url, select(InboundItem.content))
    assert content.count(b"\n") == 4 and len(content) < 140_000  # header, lines 2, 3, the long line's start


# --- the planner's statistics after a first import ----------------------------------------------


def _analyzed(url: str) -> dict[str, bool]:
    stmt = select(text("relname"), text("last_analyze IS NOT NULL")).select_from(
        text("pg_stat_user_tables")
    ).where(text("relname IN ('nominals', 'markers', 'nominal_aliases')"))
    return {name: bool(done) for name, done in query(url, stmt)}


@pytest.mark.postgres
def test_a_first_import_of_many_new_nominals_refreshes_the_planners_statistics(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Until the statistics know the filled tables, the next import's keyed reads are planned for
    nearly empty ones (~3x slower at 100,000 nominals): after ANALYZE_AFTER_NEW new nominals the
    import runs ANALYZE itself; after fewer it leaves them to autovacuum."""
    monkeypatch.setattr(importer, "ANALYZE_AFTER_NEW", 4)
    config = config_for(tmp_path, pg_url)
    assert snapshot(config, write_extract(tmp_path / "few.csv", [person(n) for n in range(1, 4)])) == 0
    assert "3 new" in capsys.readouterr().out
    assert not any(_analyzed(pg_url).values())
    many = write_extract(tmp_path / "many.csv", [person(n) for n in range(1, 9)])
    assert snapshot(config, many, "--partial", at=NIGHT[1]) == 0
    assert "5 new, 0 changed, 3 unchanged" in capsys.readouterr().out
    assert _analyzed(pg_url) == {"nominals": True, "markers": True, "nominal_aliases": True}
