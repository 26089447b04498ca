"""A synthetic, obviously fictional, national-scale case store for the benchmarks.

Teams `bench-t01`..; officers `BPC00001`..; nominals `VS-B0000001`.. named "Benchperson" + N in letters;
actions `BACT-0000001`... Everything is generated from a fixed seed and written with bulk inserts (COPY on
PostgreSQL, multi-row executemany on SQLite), not through the events API: the base data set is
the stage, not the thing measured.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.config import Settings, load_config
from casewatch.directory import sync_directory
from casewatch.model.names import name_key
from casewatch.store.engine import make_sessionmaker
from casewatch.store.models import Action, Base, Marker, Nominal, NotificationReceived

SEED = 20261123
# The bench's "today": fixed, so runs compare. Scans and clocks use it too.
TODAY = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
INGEST_SECRET = "bench-ingest-secret-not-real"  # noqa: S105 (fictional, loopback only)
SIGNING_SECRET = "bench-signing-secret-not-real"  # noqa: S105
BOT_TOKEN = "xoxb-bench-not-real"  # noqa: S105
_CHUNK = 5000


@dataclass(frozen=True)
class Sizes:
    nominals: int = 100_000
    actions: int = 1_000_000
    officers: int = 2_000
    teams: int = 50

    @classmethod
    def quick(cls) -> Sizes:
        return cls(nominals=5_000, actions=20_000, officers=200, teams=10)

    @classmethod
    def tiny(cls) -> Sizes:
        return cls(nominals=200, actions=500, officers=20, teams=4)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """--nominals, --actions, --officers and --teams on a probe's parser, these sizes their
        defaults (of_arguments reads them back)."""
        for name, value in asdict(self).items():
            parser.add_argument(f"--{name}", type=int, default=value)

    @classmethod
    def of_arguments(cls, args: argparse.Namespace) -> Sizes:
        return cls(nominals=args.nominals, actions=args.actions, officers=args.officers, teams=args.teams)


# The probes' data set (bench.group_probe, ingest_probe, ingest9_probe): the whole bench's sizes.
PROBE_SIZES = Sizes(nominals=10_000, actions=50_000, officers=200, teams=10)


def surname_of(n: int) -> str:
    """A fictional surname, one per nominal, in letters only ("Benchpersonbcd" for 123): a
    query with digits in it is read by /flags as a reference, not as a surname."""
    return "Benchperson" + "".join("abcdefghij"[int(d)] for d in str(n))


def team_id(n: int) -> str:
    return f"bench-t{n:02d}"


def officer_id(n: int) -> str:
    return f"BPC{n:05d}"


def visor_ref(n: int) -> str:
    return f"VS-B{n:07d}"


def teams_config(sizes: Sizes) -> list[dict[str, Any]]:
    return [
        {
            "id": team_id(t), "name": f"Bench Team {t:02d} (fictional)", "channel": f"CB{t:05d}",
            "spoc_email": f"{team_id(t)}.spoc@force.example",
            "supervisor_emails": [f"{team_id(t)}.sgt@force.example"],
        }
        for t in range(1, sizes.teams + 1)
    ]


def officers_config(sizes: Sizes) -> list[dict[str, Any]]:
    out = []
    for n in range(1, sizes.officers + 1):
        roles = ["officer"]
        if n % 40 == 1:
            roles.append("supervisor")
        if n == 1:
            roles.append("control_room")
        out.append({
            "id": officer_id(n), "name": f"PC Bench {n} (fictional)",
            "email": f"{officer_id(n).lower()}@force.example", "slack_user_id": f"UB{n:07d}",
            "team": team_id((n - 1) % sizes.teams + 1), "roles": roles,
        })
    return out


def settings_dict(db_url: str, sizes: Sizes, **sections: dict[str, Any]) -> dict[str, Any]:
    """The bench service's configuration, as the nested dict load_config takes (and TOML holds)."""
    base: dict[str, Any] = {
        "database": {"url": db_url, "pool_size": 20},
        "ingest": {"secret": INGEST_SECRET},
        "slack": {"mode": "off"},
        "service": {"log_level": "WARNING"},
        # No background schedule: its start-up catch-up (a scan, the digests) would run inside
        # the other benchmarks. `casewatch digest` only builds and queues (no waiting to send).
        "schedules": {"enabled": False, "digest_command_wait_seconds": 0},
        "teams": teams_config(sizes),
        "officers": officers_config(sizes),
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return base


def make_settings(db_url: str, sizes: Sizes, **sections: dict[str, Any]) -> Settings:
    return load_config("/dev/null", environ={}, overrides=settings_dict(db_url, sizes, **sections))


def write_toml(path: Path, data: dict[str, Any]) -> None:
    """Just enough TOML for the settings above (tables, arrays of tables, strings, numbers)."""
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {_toml(v)}" for k, v in value.items()]
    for key, value in data.items():
        if isinstance(value, list):
            for item in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # strings and lists of strings: JSON's syntax is TOML's here


# --- rows -------------------------------------------------------------------------------------


def nominal_rows(sizes: Sizes, rng: random.Random) -> Iterator[dict[str, Any]]:
    for n in range(1, sizes.nominals + 1):
        surname = surname_of(n)
        registered = rng.random() < 0.95
        # Most notified within the year; a few percent overdue, so the scan has work.
        last = TODAY - timedelta(days=rng.randint(1, 330) if rng.random() < 0.96 else rng.randint(366, 500))
        yield {
            "visor_ref": visor_ref(n), "surname": surname, "surname_key": name_key(surname),
            "forenames": "Test Sample", "date_of_birth": date(1950, 1, 1) + timedelta(days=n % 18000),
            "pnc_id": f"90/{n:07d}B", "category": rng.choice("1234"),
            "mappa_level": rng.choice([None, 1, 1, 1, 2, 3]), "registered": registered,
            "risk_level": rng.choice(["low", "medium", "high", "very_high"]),
            "lead_agency": rng.choice(["police", "probation"]),
            "team": team_id((n - 1) % sizes.teams + 1),
            "offender_manager": officer_id(rng.randint(1, sizes.officers)),
            "area": f"A{rng.randint(1, 20):02d}", "on_licence": rng.random() < 0.3,
            "no_fixed_abode": rng.random() < 0.05, "last_notification_on": last,
            "release_date": None, "licence_expiry": None, "aliases": [],
            "state_as_of": NOW - timedelta(days=30), "level_as_of": None, "updated_at": NOW,
        }


def marker_rows(sizes: Sizes, rng: random.Random) -> Iterator[dict[str, Any]]:
    for n in range(1, sizes.nominals + 1):
        yield {"visor_ref": visor_ref(n), "code": "VIO", "label": "Violence (fictional)",
               "restricted": False}
        if rng.random() < 0.1:
            yield {"visor_ref": visor_ref(n), "code": "XRS", "label": "Restricted (fictional)",
                   "restricted": True}


def notification_rows(sizes: Sizes, rng: random.Random) -> Iterator[dict[str, Any]]:
    for n in range(1, sizes.nominals + 1):
        yield {"visor_ref": visor_ref(n), "kind": "periodic",
               "notified_on": TODAY - timedelta(days=rng.randint(1, 330)),
               "event_id": f"bench-notification-{n}"}


def action_rows(sizes: Sizes, rng: random.Random) -> Iterator[dict[str, Any]]:
    for n in range(1, sizes.actions + 1):
        is_open = rng.random() < 0.1
        yield {
            "action_id": f"BACT-{n:07d}", "visor_ref": visor_ref(rng.randint(1, sizes.nominals)),
            "summary": "Fictional action: review the plan",
            "owner": officer_id(rng.randint(1, sizes.officers)),
            "due_on": TODAY + timedelta(days=rng.randint(-40, 320)),
            "status": "open" if is_open else "done", "source": "mapp_meeting",
            "state_as_of": NOW - timedelta(days=40), "done_at": None if is_open else NOW - timedelta(days=1),
        }


# --- writing ------------------------------------------------------------------------------------


async def generate(engine: AsyncEngine, sizes: Sizes, settings: Settings) -> dict[str, int]:
    """Fill a migrated, empty database; return the row counts written."""
    rng = random.Random(SEED)
    sessions = make_sessionmaker(engine)
    async with sessions.begin() as session:
        await sync_directory(session, settings)
    counts: dict[str, int] = {}
    for model, rows in (
        (Nominal, nominal_rows(sizes, rng)),
        (Marker, marker_rows(sizes, rng)),
        (NotificationReceived, notification_rows(sizes, rng)),
        (Action, action_rows(sizes, rng)),
    ):
        table = Base.metadata.tables[model.__tablename__]
        counts[table.name] = await bulk_insert(engine, table, rows)
    if engine.dialect.name == "postgresql":
        # What autovacuum does to a live database in time: statistics for the planner, and
        # hint bits and the visibility map set, so the first benchmark does not pay for them.
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.exec_driver_sql("VACUUM ANALYZE")
    return counts


async def bulk_insert(engine: AsyncEngine, table: Table, rows: Iterator[dict[str, Any]]) -> int:
    if engine.dialect.name == "postgresql":
        return await _copy(engine, table, rows)
    total = 0
    async with engine.begin() as conn:
        for chunk in _chunks(rows):
            await conn.execute(insert(table), chunk)
            total += len(chunk)
    return total


async def _copy(engine: AsyncEngine, table: Table, rows: Iterator[dict[str, Any]]) -> int:
    total = 0
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        for chunk in _chunks(rows):
            columns = list(chunk[0])
            records = [
                tuple(json.dumps(r[c]) if isinstance(r[c], list | dict) else r[c] for c in columns)
                for r in chunk
            ]
            await driver.copy_records_to_table(table.name, records=records, columns=columns)
            total += len(chunk)
        await conn.commit()
    return total


def _chunks(rows: Iterator[dict[str, Any]], size: int = _CHUNK) -> Iterator[Sequence[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
