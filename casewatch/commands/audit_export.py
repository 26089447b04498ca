"""`casewatch audit export`: the audit entries asked for, as CSV or JSON on stdout.

For a disclosure log or a subject-access request: filtered by nominal (--subject), actor and time
(a date is a whole day in the service's time zone), streamed so that a year of entries never sits
in memory. The export is itself audited (`audit.exported`, with its filters) and committed before
the first entry is written, so it lists itself when its filters match it. Exit 0 done, 2 could
not run (bad argument, no database, not migrated, or the database failed part-way).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import json
import re
import sys
from collections.abc import Callable
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from casewatch.audit import record
from casewatch.audit.export import COLUMNS, ExportFilter, day_end, day_start, entries
from casewatch.clock import SystemClock
from casewatch.commands._support import configure_logging, drop_output, on_database, seal_audit
from casewatch.config import Settings, load_config
from casewatch.context import Context
from casewatch.model.events import VISOR_REF_PATTERN, canonical_ref
from casewatch.model.text_rules import TextKind, text_problem
from casewatch.store.engine import make_sessionmaker, reader

ACTION = "audit.exported"
PURPOSE = "disclosure export"
PROGRESS_EVERY = 1000
_VISOR_REF = re.compile(VISOR_REF_PATTERN)
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ArgumentProblem(ValueError):
    pass


def cli_actor() -> str:
    return f"cli:{getpass.getuser()}"


def checked_ref(value: str, what: str) -> str:
    if not _VISOR_REF.fullmatch(value):
        raise ArgumentProblem(
            f"{what} must be a ViSOR reference: 1 to 32 letters, digits, '-' or '/', "
            "starting with a letter or digit"
        )
    return canonical_ref(value)


def _checked_actor(value: str) -> str:
    if not value or len(value) > 100 or text_problem(value, TextKind.IDENTIFIER) is not None:
        raise ArgumentProblem(
            "--actor must be an officer id, system or cli:<user> (1 to 100 plain characters)"
        )
    return value


def export_filter(args: argparse.Namespace, settings: Settings) -> ExportFilter:
    tz = ZoneInfo(settings.service.timezone)
    found = ExportFilter(
        subject=checked_ref(args.subject, "--subject") if args.subject is not None else None,
        actor=_checked_actor(args.actor) if args.actor is not None else None,
        since=day_start(args.since, tz) if args.since is not None else None,
        until=day_end(args.until, tz) if args.until is not None else None,
    )
    if found.since is not None and found.until is not None and found.since > found.until:
        # An empty export with exit 0 reads as "nothing happened" in a disclosure log.
        raise ArgumentProblem("--since is after --until: no entry could be in both")
    return found


def csv_cell(value: Any) -> str:
    """One CSV cell: JSON for lists and objects, '' for None, and a leading ' for text a
    spreadsheet would otherwise run as a formula."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


class CsvWriter:
    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out)
        self._writer.writerow(COLUMNS)

    def write(self, entry: dict[str, Any]) -> None:
        self._writer.writerow([csv_cell(entry[name]) for name in COLUMNS])

    def close(self) -> None:
        pass


class JsonWriter:
    """A JSON array, one entry a line, written as the entries come."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._first = True
        out.write("[")

    def write(self, entry: dict[str, Any]) -> None:
        self._out.write("\n" if self._first else ",\n")
        self._out.write(json.dumps(entry, sort_keys=False, ensure_ascii=True))
        self._first = False

    def close(self) -> None:
        self._out.write("\n]\n")


def run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    configure_logging(settings)
    try:
        f = export_filter(args, settings)
    except ArgumentProblem as exc:
        print(f"casewatch audit export: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_export(settings, args.config or "", f, args.format, sys.stdout))


async def _export(settings: Settings, config_hint: str, f: ExportFilter, fmt: str, out: TextIO) -> int:
    async def export(engine: AsyncEngine) -> int:
        sessions = make_sessionmaker(engine)
        ctx = Context(settings, SystemClock())
        try:
            async with sessions.begin() as session:
                await record(
                    session, ctx, actor=cli_actor(), action=ACTION, subject=f.subject or "",
                    purpose=PURPOSE, details=f.as_details(), nominals=[f.subject] if f.subject else [],
                )
            await seal_audit(sessions, ctx)
            writer = CsvWriter(out) if fmt == "csv" else JsonWriter(out)
            async with make_sessionmaker(reader(engine))() as session:
                count = await _stream(session, f, writer, _progress())
            writer.close()
            out.flush()
        except BrokenPipeError:
            # The reader has gone (`... | head -5`): what it did not take is dropped, quietly; the
            # export is in the audit log all the same.
            drop_output(out)
            return 0
        except SQLAlchemyError as exc:
            print(f"casewatch audit export: database failed ({type(exc).__name__}); output incomplete",
                  file=sys.stderr)
            return 2
        if sys.stderr.isatty():
            print(f"\r{count:,} entries exported", file=sys.stderr)
        return 0

    return await on_database(settings, config_hint, "audit export", export)


def _progress() -> Callable[[int], None]:
    show = sys.stderr.isatty()

    def progress(count: int) -> None:
        if show and count % PROGRESS_EVERY == 0:
            print(f"\r{count:,} entries exported", end="", file=sys.stderr, flush=True)

    return progress


async def _stream(
    session: AsyncSession, f: ExportFilter, writer: CsvWriter | JsonWriter, progress: Callable[[int], None]
) -> int:
    count = 0
    async for entry in entries(session, f):
        writer.write(entry)
        count += 1
        progress(count)
    return count
