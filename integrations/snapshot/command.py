"""`casewatch import --snapshot PATH.csv --mapping PATH.toml [--full|--partial] [--dry-run]
[--extracted-at ISO8601] [--no-progress] [--config PATH]` (casewatch.wiring.run_snapshot_import).

Exit codes: 0 every row read (changed, new or unchanged); 1 some rows were bad (reported on stderr
by line and column, kept as one inbound item with a feed.unreadable alert; the good rows are in);
2 it could not run (configuration, mapping, unreadable file or header, the extract's time more than
[ingest] max_clock_skew_seconds in the future, database not ready or lost mid-way: the chunks
reported as stored are stored, nothing after).

A closed stdout or stderr (`... | head -2`) ends no import and prints no traceback: what is left
to say is dropped, and the exit code is the import's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
from datetime import UTC, datetime
from typing import IO, Any

from tqdm import tqdm

from casewatch.clock import SystemClock
from casewatch.commands._support import (
    configure_logging,
    directory_problem,
    quietly,
    schema_problem,
    seal_audit,
)
from casewatch.config import Settings, load_config
from casewatch.context import Context
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.errors import is_unavailable
from integrations.snapshot.importer import ImportStopped, Options, Summary, extract_name, import_snapshot
from integrations.snapshot.mapping import Mapping, MappingError, load_mapping
from integrations.snapshot.reader import ExtractError

PROG = "casewatch import --snapshot"


def run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    configure_logging(settings)
    if refused := directory_problem(settings, "import"):
        print(refused, file=sys.stderr)
        return 2
    if not args.mapping:
        print(f"{PROG}: --mapping PATH.toml is required (see docs/feeds/snapshot.md)", file=sys.stderr)
        return 2
    try:
        mapping = load_mapping(args.mapping)
    except MappingError as exc:
        print(f"{PROG}: the mapping {args.mapping} cannot be used:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    try:
        stream = open(args.snapshot, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        print(f"{PROG}: cannot read {args.snapshot}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        info = os.fstat(stream.fileno())
        given = getattr(args, "extracted_at", None)
        options = Options(
            name=extract_name(args.snapshot),
            full=_full(args, mapping),
            dry_run=bool(getattr(args, "dry_run", False)),
            extracted_at=_extracted_at(given, info.st_mtime),
            extracted_at_from="--extracted-at" if given else "the file's modification time",
        )
        progress = tqdm(
            total=info.st_size if stat.S_ISREG(info.st_mode) else None, unit="B", unit_scale=True,
            desc="snapshot", file=sys.stderr, leave=False,
            disable=bool(getattr(args, "no_progress", False)) or not sys.stderr.isatty(),
        )
        with progress:
            return asyncio.run(_run(settings, args.config or "", stream, mapping, options, progress))
    finally:
        stream.close()


def _full(args: argparse.Namespace, mapping: Mapping) -> bool:
    if getattr(args, "partial", False):
        return False
    return bool(getattr(args, "full", False)) or mapping.full


def _extracted_at(given: Any, mtime: float) -> datetime:
    if isinstance(given, datetime):
        return given.astimezone(UTC) if given.tzinfo is not None else given.replace(tzinfo=UTC)
    if isinstance(given, str) and given:
        parsed = datetime.fromisoformat(given)
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return datetime.fromtimestamp(mtime, UTC)


async def _run(
    settings: Settings, config_hint: str, stream: IO[bytes], mapping: Mapping, options: Options, progress: Any
) -> int:
    engine = make_engine(settings.database.url, pool_size=settings.database.pool_size)
    try:
        if problem := await schema_problem(engine, config_hint):
            print(f"{PROG}: {problem}", file=sys.stderr)
            return 2
        sessions = make_sessionmaker(engine)
        ctx = Context(settings, SystemClock())

        def say(message: str) -> None:
            quietly(lambda: progress.write(message, file=sys.stderr), sys.stderr)

        try:
            summary = await import_snapshot(
                sessions, ctx, stream, mapping, options, say=say, progress=progress.update
            )
        except ExtractError as exc:
            print(f"{PROG}: {options.name}: {exc}", file=sys.stderr)
            return 2
        except ImportStopped as exc:
            print(f"{PROG}: stopped: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            print(f"{PROG}: cannot read {options.name}: {why}", file=sys.stderr)
            return 2
        if not options.dry_run:
            try:
                await seal_audit(sessions, ctx)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # Every row is stored: the summary stands; the service (or the next run) seals.
                _print(summary, options)
                print(
                    f"{PROG}: stopped: the database is unavailable ({type(exc).__name__}) while "
                    "sealing the audit; every row above is stored. Run the import again to seal it",
                    file=sys.stderr,
                )
                return 2
    finally:
        await engine.dispose()
    progress.close()
    _print(summary, options)
    return 1 if summary.bad_lines else 0


def _print(summary: Summary, options: Options) -> None:
    quietly(lambda: print("\n".join(summary.lines(options)), flush=True), sys.stdout)

