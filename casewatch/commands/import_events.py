"""`casewatch import PATH|-`: ingest an NDJSON file (one event envelope a line) or stdin.

Each line is validated on its own, exactly as the events API validates an envelope; valid lines
are ingested in batches through the same pipeline (so the same idempotency: a line whose event
id was seen before is a duplicate and changes nothing). A bad line is reported with its line
number and reason and never costs the good lines around it. The file is streamed, never read
whole. Blank lines are skipped.

Exit codes: 0 every line was accepted or a duplicate; 1 some lines were rejected (the rest are
stored); 2 the import could not run (configuration, unreadable input, database not ready or lost
mid-way: the batches reported as stored are stored, nothing after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tqdm import tqdm

from casewatch.clock import Clock, SystemClock
from casewatch.commands._support import configure_logging, directory_problem, schema_problem, seal_audit
from casewatch.config import Settings, load_config
from casewatch.context import Context
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.model.events import Envelope
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.errors import is_unavailable

MAX_LINE_BYTES = 1024 * 1024  # the events API's body limit: one envelope can be no larger
MAX_BATCH = 1000  # the events API's batch limit
SOURCE = "import"
_SHOWN_LINE_NUMBERS = 20


class ImportAborted(Exception):
    """The input cannot be read further or the database cannot take more events; what was
    stored before stays stored."""


class InputUnreadable(ImportAborted):
    """Reading the input failed part-way: the lines read before are still stored."""


def _database_away(exc: Exception) -> ImportAborted:
    # Stop rather than take every later line for a bad one (store.errors.is_unavailable decides).
    return ImportAborted(f"the database is unavailable ({type(exc).__name__})")


@dataclass
class Tally:
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected_lines: list[int] = field(default_factory=list)
    alerts: int = 0

    def summary(self) -> str:
        text = (
            f"import: {self.accepted} accepted, {self.duplicates} duplicate(s), "
            f"{len(self.rejected_lines)} rejected, {self.alerts} alert(s) opened"
        )
        if self.rejected_lines:
            shown = ", ".join(str(n) for n in self.rejected_lines[:_SHOWN_LINE_NUMBERS])
            more = len(self.rejected_lines) - _SHOWN_LINE_NUMBERS
            text += f" (rejected line(s): {shown}{f', and {more} more' if more > 0 else ''})"
        return text


@dataclass(frozen=True)
class Line:
    number: int
    size: int  # bytes read, for the progress bar
    envelope: Envelope | None = None
    problems: tuple[str, ...] = ()
    blank: bool = False


def run(args: argparse.Namespace) -> int:
    if getattr(args, "snapshot", None) is not None or getattr(args, "mapping", None) is not None:
        if args.path is not None or not (args.snapshot and args.mapping):
            print(
                "casewatch import: give either PATH (NDJSON events) or --snapshot PATH.csv "
                "--mapping PATH.toml (a case-system extract)", file=sys.stderr,
            )
            return 2
        from casewatch.wiring import run_snapshot_import

        return run_snapshot_import(args)
    if args.path is None:
        print("casewatch import: PATH is required (an NDJSON file, or - for stdin)", file=sys.stderr)
        return 2
    if args.full or args.partial or args.dry_run or args.extracted_at is not None:
        print("casewatch import: --full, --partial, --dry-run and --extracted-at go with --snapshot",
              file=sys.stderr)
        return 2
    settings = load_config(args.config)
    configure_logging(settings)
    if refused := directory_problem(settings, "import"):
        print(refused, file=sys.stderr)
        return 2
    if not 1 <= args.batch_size <= MAX_BATCH:
        print(f"casewatch import: --batch-size must be between 1 and {MAX_BATCH}", file=sys.stderr)
        return 2
    try:
        stream, total = _open(args.path)
    except OSError as exc:
        print(f"casewatch import: cannot read {args.path}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        progress = tqdm(
            total=total, unit="B", unit_scale=True, desc="import", file=sys.stderr, leave=False,
            disable=args.no_progress or not sys.stderr.isatty(),
        )
        with progress:
            return asyncio.run(_import(settings, stream, args, progress))
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _open(path: str) -> tuple[IO[bytes], int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    stream = open(path, "rb")  # closed by run()
    info = os.fstat(stream.fileno())
    return stream, info.st_size if stat.S_ISREG(info.st_mode) else None


async def _import(settings: Settings, stream: IO[bytes], args: argparse.Namespace, progress: Any) -> int:
    engine = make_engine(settings.database.url, pool_size=settings.database.pool_size)
    tally = Tally()
    try:
        problem = await schema_problem(engine, args.config or "")
        if problem:
            print(f"casewatch import: {problem}", file=sys.stderr)
            return 2
        sessions = make_sessionmaker(engine)
        ctx = Context(settings, SystemClock())
        batch: list[Line] = []
        try:
            skew = settings.ingest.max_clock_skew_seconds
            for line in read_lines(stream, ctx.clock, skew):
                progress.update(line.size)
                if line.blank:
                    continue
                tally.lines += 1
                if line.envelope is None:
                    _reject(tally, line.number, line.problems, progress)
                    continue
                batch.append(line)
                if len(batch) >= args.batch_size:
                    await _flush(sessions, batch, ctx, tally, progress)
                    batch = []
        except InputUnreadable:
            await _flush(sessions, batch, ctx, tally, progress)  # the lines read before it count
            raise
        await _flush(sessions, batch, ctx, tally, progress)
        try:
            await seal_audit(sessions, ctx)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            raise _database_away(exc) from None  # every batch is stored; the service seals the rest
    except ImportAborted as exc:
        progress.close()
        print(tally.summary())
        print(f"casewatch import: stopped: {exc}", file=sys.stderr)
        return 2
    finally:
        await engine.dispose()
    progress.close()
    print(tally.summary())
    return 1 if tally.rejected_lines else 0


def read_lines(stream: IO[bytes], clock: Clock | None = None, max_ahead_seconds: int = 300) -> Iterator[Line]:
    """Parse and validate the stream line by line, holding at most one line in memory. With a
    `clock`, an event stamped more than `max_ahead_seconds` after it is refused."""
    number = 0
    while True:
        raw = _readline(stream, MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        size = len(raw)
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the over-long line
                raw = _readline(stream, MAX_LINE_BYTES)
                size += len(raw)
            yield Line(number, size, problems=(f"line is longer than {MAX_LINE_BYTES} bytes",))
            continue
        yield parse_line(number, raw, size, clock, max_ahead_seconds)


def _readline(stream: IO[bytes], limit: int) -> bytes:
    try:
        return stream.readline(limit)
    except OSError as exc:
        raise InputUnreadable(f"cannot read the input ({exc.strerror or type(exc).__name__})") from None


def parse_line(
    number: int, raw: bytes, size: int | None = None, clock: Clock | None = None, max_ahead_seconds: int = 300
) -> Line:
    size = len(raw) if size is None else size
    if not raw.strip():
        return Line(number, size, blank=True)
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        return Line(number, size, problems=(f"not UTF-8 text (byte {exc.start + 1})",))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return Line(number, size, problems=(f"not valid JSON: {exc.msg} (column {exc.colno})",))
    except RecursionError:
        return Line(number, size, problems=("not valid JSON: nested too deeply",))
    if not isinstance(value, dict):
        return Line(number, size, problems=("expected one JSON object (an event envelope) per line",))
    now = clock.now() if clock is not None else None
    envelopes, errors = parse_envelopes(value, now=now, max_ahead_seconds=max_ahead_seconds)
    if errors:
        return Line(number, size, problems=tuple(f"{e.field or '(envelope)'}: {e.message}" for e in errors))
    return Line(number, size, envelope=envelopes[0])


def _reject(tally: Tally, number: int, problems: tuple[str, ...], progress: Any) -> None:
    tally.rejected_lines.append(number)
    for problem in problems:
        progress.write(f"line {number}: {problem}", file=sys.stderr)


async def _flush(
    sessions: async_sessionmaker[AsyncSession], batch: list[Line], ctx: Context, tally: Tally, progress: Any
) -> None:
    if not batch:
        return
    envelopes = [line.envelope for line in batch if line.envelope is not None]
    try:
        result = await ingest(sessions, envelopes, ctx, source=SOURCE)
    except Exception as exc:
        if is_unavailable(exc):
            raise _database_away(exc) from None
        if len(batch) == 1:
            # Only the type: the message of a database error can quote the data.
            _reject(tally, batch[0].number, (f"could not be stored ({type(exc).__name__})",), progress)
            return
        for line in batch:  # find the line the batch failed on; store the others
            await _flush(sessions, [line], ctx, tally, progress)
        return
    tally.accepted += result.accepted
    tally.duplicates += result.duplicates
    tally.alerts += len(result.alerts)
