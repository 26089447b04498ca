"""The snapshot import (`python -m bench.feeds --only snapshot`).

For each database, with the real import path (integrations.snapshot.importer.import_snapshot, the
same code `casewatch import --snapshot` runs) and the shipped sample mapping, on a generated
extract of N fictional nominals (default 100,000; --quick 2,000):
- (a) "first": the first import into an empty store (N new nominals: N upserts);
- (b) "rerun": the same file again (nothing changed: no event);
- (c) "night": a night where 5% of the rows changed (risk, forenames, markers; a fifth of them a
  MAPPA level change with a rationale);
each as rows/s. In the same run, beside them, the least-work baseline: the csv module parsing the
same file plus one bulk INSERT of its rows into a plain table, one transaction, same database
and the same engine settings (durability included). Timings on a shared 2-core machine are
noisy: compare the ratio within a run, not figures across runs.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, func, insert, select

from bench import harness
from casewatch.clock import SystemClock
from casewatch.config import Settings, load_config
from casewatch.context import Context
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.migrate import upgrade
from casewatch.store.models import Event
from integrations.snapshot.importer import Options, Summary, import_snapshot
from integrations.snapshot.mapping import load_mapping

ROOT = Path(__file__).resolve().parent.parent.parent
MAPPING = ROOT / "integrations" / "snapshot" / "samples" / "mapping.toml"
HEADER = next(csv.reader(io.StringIO((MAPPING.parent / "extract.csv").read_text(encoding="utf-8"))))
DEFAULT_ROWS = 100_000
QUICK_ROWS = 2_000
CHANGED_SHARE = 0.05
TEAMS = (
    ("NTH", "north", "N01", "PC0001"), ("STH", "south", "S01", "PC0004"), ("EST", "east", "E01", "PC0007"),
)
RISKS = ("Low", "Medium", "High", "Very High")


def _settings(url: str) -> Settings:
    teams = [
        {"id": tid, "name": f"{tid.title()} MOSOVO (bench)", "spoc_email": f"{tid}.spoc@force.example",
         "channel": f"C0{tid.upper()}",
         "supervisor_emails": [f"sgt.{tid}@force.example"]}
        for _, tid, _, _ in TEAMS
    ]
    officers = [
        {"id": manager, "name": f"PC Bench {manager}", "email": f"{manager.lower()}@force.example",
         "slack_user_id": f"U0{manager}", "team": tid, "roles": ["officer"]}
        for _, tid, _, manager in TEAMS
    ]
    return load_config("/dev/null", environ={}, overrides={
        "database": {"url": url}, "slack": {"mode": "off"}, "teams": teams, "officers": officers,
    })


def _row(n: int, changed: bool) -> list[str]:
    code, _, area, manager = TEAMS[n % len(TEAMS)]
    level = "L2" if n % 7 == 0 else "L1"
    risk = RISKS[n % 3]
    forenames, markers, rationale = f"Bench {n}", "VIOL" if n % 2 else "", ""
    if changed:
        forenames, risk, markers = f"Bench {n} (changed)", RISKS[(n % 3) + 1], "VIOL;WEAP"
        if n % 100 == 0:  # a fifth of the changed rows (every 20th)
            level, rationale = ("L1" if level == "L2" else "L2"), "Reviewed at the MAPP meeting (fictional)"
    values = {
        "ViSOR Ref": f"VS-B{n:07d}", "Surname": "Testperson", "Forenames": forenames,
        "DOB": f"{1 + n % 28:02d}/{1 + n % 12:02d}/{1950 + n % 50}", "MAPPA Category": "Cat 1",
        "MAPPA Level": level, "Level Change Rationale": rationale, "Registered": "Y", "Risk": risk,
        "Lead Agency": "Police", "Team": code, "Offender Manager": manager, "Area": area,
        "On Licence": "N", "NFA": "N", "Last Notification": "2026-06-01", "Warning Markers": markers,
        "Aliases": "", "PNC ID": f"00/{n:06d}X", "CRN": f"X{n % 1_000_000:06d}", "NOMS Number": "",
        "Release Date": "", "Licence Expiry": "", "Visit Every (days)": "90",
    }
    return [values[column] for column in HEADER]


def write_extract(path: Path, rows: int, changed_every: int | None) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(HEADER)
        for n in range(rows):
            writer.writerow(_row(n, changed_every is not None and n % changed_every == 0))


async def _import(url: str, path: Path, at: datetime, full: bool) -> tuple[float, Summary]:
    engine = make_engine(url)
    try:
        sessions = make_sessionmaker(engine)
        ctx = Context(_settings(url), SystemClock())
        options = Options(name=path.name, full=full, dry_run=False, extracted_at=at)
        mapping = load_mapping(MAPPING)
        problems: list[str] = []
        started = time.perf_counter()
        with path.open("rb") as stream:
            summary = await import_snapshot(sessions, ctx, stream, mapping, options, say=problems.append)
        elapsed = time.perf_counter() - started
        assert not problems, problems[:5]
        return elapsed, summary
    finally:
        await engine.dispose()


async def _baseline(url: str, path: Path) -> float:
    """csv parse of the file and one bulk INSERT of its rows into a plain table, one transaction."""
    engine = make_engine(url)
    table = Table(
        "bench_snapshot_baseline", MetaData(), *(Column(f"c{i}", String(200)) for i in range(len(HEADER)))
    )
    try:
        async with engine.begin() as conn:
            await conn.run_sync(table.drop, checkfirst=True)
            await conn.run_sync(table.create)
        started = time.perf_counter()
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            rows = [{f"c{i}": cell for i, cell in enumerate(cells)} for cells in reader]
        async with engine.begin() as conn:
            await conn.execute(insert(table), rows)
        return time.perf_counter() - started
    finally:
        await engine.dispose()


def _rate(rows: int, seconds: float) -> float:
    return round(rows / seconds, 1) if seconds > 0 else 0.0


async def _one_database(kind: str, rows: int, work: Path, pg_url: str) -> dict[str, Any]:
    first, night = work / f"extract-{kind}.csv", work / f"extract-{kind}-night.csv"
    write_extract(first, rows, None)
    write_extract(night, rows, round(1 / CHANGED_SHARE))
    out: dict[str, Any] = {"rows": rows, "file_mb": round(first.stat().st_size / 1e6, 1)}
    async with harness.database(kind, harness.Options(pg_url=pg_url)) as url:
        engine = make_engine(url)
        await upgrade(engine)
        await engine.dispose()
        at = datetime.now(UTC) - timedelta(days=2)
        for what, path, when in (("first", first, at), ("rerun", first, at + timedelta(hours=1)),
                                 ("night", night, at + timedelta(days=1))):
            seconds, summary = await _import(url, path, when, full=what != "first")
            base = await _baseline(url, path)
            out[what] = {
                "seconds": round(seconds, 2), "rows_per_s": _rate(rows, seconds),
                "new": summary.new, "changed": summary.changed, "unchanged": summary.unchanged,
                "events": summary.accepted, "alerts": summary.alerts,
                "baseline_seconds": round(base, 2), "baseline_rows_per_s": _rate(rows, base),
                "x_baseline": round(seconds / base, 1) if base > 0 else None,
            }
            print(
                f"  {kind:8} {what:6} {out[what]['rows_per_s']:>9} rows/s ({seconds:6.1f} s; "
                f"{summary.new} new, {summary.changed} changed, {summary.accepted} events, "
                f"{summary.alerts} alerts)   baseline {out[what]['baseline_rows_per_s']:>9} rows/s "
                f"({base:5.1f} s)   x{out[what]['x_baseline']}",
                flush=True,
            )
        check = make_engine(url)
        async with check.connect() as conn:
            stored = await conn.execute(select(func.count()).select_from(Event))
            out["events_stored"] = int(stored.scalar_one())
        await check.dispose()
    return out


async def run(options: Any) -> dict[str, Any]:
    """options: bench.feeds.FeedOptions (databases, quick, work_dir, pg_url, rows), or a plain
    string: one database URL's kind is read from it (sqlite+aiosqlite:// or postgresql+asyncpg://)."""
    logging.getLogger("casewatch").setLevel(logging.WARNING)
    if isinstance(options, str):
        kind = "sqlite" if options.startswith("sqlite") else "postgres"
        return {kind: await _one_database(kind, DEFAULT_ROWS, Path("."), "" if kind == "sqlite" else options)}
    rows = options.rows or (QUICK_ROWS if options.quick else DEFAULT_ROWS)
    results: dict[str, Any] = {}
    for kind in options.databases:
        results[kind] = await _one_database(kind, rows, Path(options.work_dir), options.pg_url)
    return results
