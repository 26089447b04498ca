"""The demo's nightly extract: written from the demo's nominals (casewatch.demo.data, as the demo
stored them: a case system's extract reflects every change made since) in the sample mapping's
format (samples/mapping.toml), with a few differences, and run through the real import path
(integrations.snapshot.importer).

The extract is a full one for the east team: every east nominal is listed except one (a
feed.nominal_missing alert), one has a MAPPA level change with a rationale (one
mappa.level_changed alert), one a higher risk level (risk.changed), one is new, and one row is
bad (a date that is not a date: kept, with a feed.unreadable alert). Everything is fictional.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.context import Context
from casewatch.demo.data import DemoData, Scenario
from casewatch.store.models import Nominal
from integrations.snapshot.diff import load_stored
from integrations.snapshot.importer import Options, Summary, import_snapshot
from integrations.snapshot.mapping import load_mapping

SAMPLES = Path(__file__).resolve().parent / "samples"
MAPPING = SAMPLES / "mapping.toml"
TEAM = "east"
TEAM_CODES = {"north": "NTH", "south": "STH", "east": "EST"}
FIRST_ORDINARY = 27  # the demo's scenarios use VS-D000001 to VS-D000026: leave them as they are
NEW_REF = "VS-D900001"
RATIONALE = "Raised at the MAPP meeting: new intelligence (fictional)"
_RISKS = {"low": "Low", "medium": "Medium", "high": "High", "very_high": "Very High"}
_AGENCIES = {"police": "Police", "probation": "Probation", "prison": "Prison", "yot": "YOT"}
_LEVELS = {None: "N/A", 1: "L1", 2: "L2", 3: "L3"}


@dataclass
class DemoSnapshot:
    extract: Path
    summary: Summary
    scenarios: list[Scenario] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what the import said about the bad row


def _header() -> list[str]:
    with (SAMPLES / "extract.csv").open(encoding="utf-8", newline="") as f:
        return next(csv.reader(f))


def _dmy(value: str | None) -> str:
    return date.fromisoformat(value).strftime("%d/%m/%Y") if value else ""


def _row(ref: str, data: dict[str, Any]) -> dict[str, str]:
    return {
        "ViSOR Ref": ref, "Surname": data["surname"], "Forenames": data["forenames"],
        "DOB": _dmy(data["date_of_birth"]), "MAPPA Category": f"Cat {data['category']}",
        "MAPPA Level": _LEVELS[data["mappa_level"]], "Level Change Rationale": "",
        "Registered": "Y" if data["registered"] else "N", "Risk": _RISKS[data["risk_level"]],
        "Lead Agency": _AGENCIES[data["lead_agency"]], "Team": TEAM_CODES[data["team"]],
        "Offender Manager": data["offender_manager"], "Area": data["area"],
        "On Licence": "Y" if data["on_licence"] else "N", "NFA": "Y" if data["no_fixed_abode"] else "N",
        "Last Notification": data.get("last_notification_on") or "",
        "Warning Markers": ";".join(m["code"] for m in data.get("markers", [])),
        "Aliases": "|".join(data.get("aliases", [])), "PNC ID": data.get("pnc_id") or "",
        "CRN": data.get("crn") or "", "NOMS Number": data.get("noms_number") or "",
        "Release Date": _dmy(data.get("release_date")), "Licence Expiry": _dmy(data.get("licence_expiry")),
        "Visit Every (days)": str(data["visit_every_days"]) if data.get("visit_every_days") else "",
    }


def write_demo_extract(path: Path, stored: dict[str, dict[str, Any]], data: DemoData) -> list[Scenario]:
    """Write the demo's extract to `path`: the stored nominals (reference -> state as an upsert
    carries it) as they are, and the differences, fixed from the demo's own data (so a second run
    finds them in place). Returns what each different row shows."""
    upserts = {e["visor_ref"]: e["data"] for e in data.events if e["type"] == "nominal.upsert"}
    refs = sorted(ref for ref in stored if ref in upserts and int(ref[4:]) >= FIRST_ORDINARY)
    if len(refs) < 4:
        raise ValueError("the demo's extract needs at least 4 ordinary east nominals (--nominals 40 or more)")
    rows = {ref: _row(ref, state) for ref, state in stored.items() if ref != NEW_REF}
    raised, riskier, missing, bad = refs[:4]
    level = upserts[raised]["mappa_level"] or 1
    rows[raised]["MAPPA Level"] = _LEVELS[min(level + 1, 3) if level < 3 else 2]
    rows[raised]["Level Change Rationale"] = RATIONALE
    rows[riskier]["Risk"] = "Very High" if upserts[riskier]["risk_level"] != "very_high" else "High"
    del rows[missing]
    rows[bad]["DOB"] = "31/02/1970"
    rows[NEW_REF] = {
        **_row(NEW_REF, {**upserts[riskier], "surname": "Snapshotperson", "forenames": "Newly Listed",
                         "markers": [], "aliases": [], "crn": None, "noms_number": None, "pnc_id": None}),
    }
    header = _header()
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(header)
        for ref in sorted(rows):
            writer.writerow([rows[ref][column] for column in header])
    return [
        Scenario(raised, "snapshot extract: MAPPA level change with its rationale (mappa.level_changed)"),
        Scenario(riskier, "snapshot extract: risk level raised (risk.changed)"),
        Scenario(missing, "snapshot extract: no longer in the full extract (feed.nominal_missing)"),
        Scenario(bad, "snapshot extract: a bad row, kept for a person (feed.unreadable)"),
        Scenario(NEW_REF, "snapshot extract: a nominal new in the extract (nominal.upsert)"),
    ]


async def run_demo_snapshot(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, folder: Path, data: DemoData,
    *, extracted_at: datetime | None = None,
) -> DemoSnapshot:
    """Write the demo's extract of the stored east nominals (`data`: the demo's data set, as loaded)
    into `folder` (snapshot-extract.csv) and import it as a full extract with the sample mapping,
    through the real import path. Run it after the demo's events are loaded. Running it again
    changes nothing."""
    async with sessions() as session:
        refs = (await session.execute(select(Nominal.visor_ref).where(Nominal.team == TEAM))).scalars().all()
        stored = await load_stored(session, refs)
    path = folder / "snapshot-extract.csv"
    scenarios = write_demo_extract(path, {ref: s.state for ref, s in stored.items()}, data)
    at = extracted_at or datetime.fromtimestamp(path.stat().st_mtime, UTC)
    options = Options(name=path.name, full=True, dry_run=False, extracted_at=at)
    problems: list[str] = []
    with path.open("rb") as stream:
        summary = await import_snapshot(
            sessions, ctx, stream, load_mapping(MAPPING), options, say=problems.append
        )
    return DemoSnapshot(path, summary, scenarios, problems)
