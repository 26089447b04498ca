"""The snapshot import itself: stream the extract in chunks of rows, compare each chunk with the
stored state (read in one transaction a chunk), validate what changed exactly as the events API
does, ingest it through the pipeline (one transaction a chunk), then report the nominals a full
extract no longer lists and keep the bad rows for a person.

Nothing here prints: what a person should see goes to `say` (a bad row, by line and column) and
into the Summary.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import open_alerts
from casewatch.context import Context
from casewatch.ingest.inbound import Kept, keep
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import FieldError, parse_envelopes
from casewatch.model.alerts import AlertSpec
from casewatch.model.events import Envelope
from casewatch.safe_text import printable
from casewatch.store.errors import is_unavailable
from casewatch.store.models import Event, Nominal
from integrations.snapshot.convert import Converted, column_label, convert
from integrations.snapshot.diff import Plan, Stored, load_stored, plan
from integrations.snapshot.fields import FIELDS, VISOR_REF
from integrations.snapshot.mapping import Mapping
from integrations.snapshot.reader import Extract, ExtractError, Row

SOURCE = "snapshot"
NOMINAL_MISSING = "feed.nominal_missing"
ROWS_PER_CHUNK = 1000  # compared with the stored state in one read
MAX_ENVELOPES = 1000  # a transaction's events at most (the events API's batch limit)
ANALYZE_AFTER_NEW = 10_000  # new nominals after which the import refreshes the planner's statistics
MAX_KEPT_BYTES = 16 * 1024 * 1024
_SHOWN = 20
# The kept item's reason: the first KEPT_PROBLEMS bad rows' first problem after the lines, within the
# column's 300 characters (InboundItem.reason).
KEPT_PROBLEMS = 3
REASON_LIMIT = 300

log = logging.getLogger(__name__)


class ImportStopped(Exception):
    """The database went away mid-way: the chunks reported as stored are stored, nothing after."""


@dataclass(frozen=True)
class Options:
    name: str  # the extract's file name (the feed.nominal_missing alerts' subject)
    full: bool
    dry_run: bool
    extracted_at: datetime
    rows_per_chunk: int = ROWS_PER_CHUNK
    extracted_at_from: str = "--extracted-at"  # where extracted_at came from (for a refusal)


@dataclass
class Summary:
    rows: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    older: int = 0  # rows not applied: casewatch holds a newer state of their nominal
    older_refs: list[str] = field(default_factory=list)  # the first _SHOWN of them
    bad_lines: array[int] = field(default_factory=lambda: array("q"))  # each bad row's first line
    unreadable: int = 0  # rows that could not be read as rows (no cells, or no reference)
    events: int = 0  # events the changes became (in a dry run: would become)
    accepted: int = 0
    duplicates: int = 0
    alerts: int = 0  # alerts the events opened
    missing: list[str] = field(default_factory=list)  # references a full extract no longer lists
    missing_alerts: int = 0
    kept: Kept | None = None
    kept_truncated: bool = False

    def lines(self, options: Options) -> list[str]:
        verb = "would be" if options.dry_run else "were"
        out = [
            f"snapshot {printable(options.name)}{' (dry run: nothing written)' if options.dry_run else ''}: "
            f"{self.rows} row(s): {self.new} new, {self.changed} changed, {self.unchanged} unchanged, "
            f"{len(self.bad_lines)} bad",
        ]
        if options.dry_run:
            out.append(
                f"events: {self.events} {verb} sent, {self.accepted} new, {self.duplicates} seen before"
            )
        else:
            out.append(
                f"events: {self.accepted} accepted, {self.duplicates} duplicate(s); "
                f"{self.alerts} alert(s) opened"
            )
        if self.older:
            out.append(
                f"{self.older} row(s) not applied: casewatch holds a newer state than the extract "
                f"(taken {_instant(options.extracted_at)}) ({_listed(self.older_refs, self.older)})"
            )
        if options.full and self.unreadable:
            # A row that could not be read may list a nominal: reporting it missing would be false.
            out.append(f"missing-nominal check skipped: {self.unreadable} line(s) could not be read as rows")
        elif options.full:
            shown = _listed(self.missing)
            out.append(
                f"missing from the full extract: {len(self.missing)} nominal(s)"
                + (f" ({shown})" if self.missing else "")
                + ("" if options.dry_run else f"; {self.missing_alerts} feed.nominal_missing alert(s) opened")
            )
        if self.bad_lines:
            shown = ", ".join(str(n) for n in sorted(self.bad_lines)[:_SHOWN])
            more = len(self.bad_lines) - _SHOWN
            out.append(f"bad row(s) on line(s) {shown}{f', and {more} more' if more > 0 else ''}")
        if self.kept is not None:
            state = "kept before" if self.kept.duplicate else "kept"
            out.append(
                f"the bad rows are {state} as inbound item {self.kept.item_id} "
                f"(casewatch inbound show {self.kept.item_id})"
                + (f"; alert {self.kept.alert_id}" if self.kept.alert_id else "")
                + (f"; only the first {_size(MAX_KEPT_BYTES)} of them" if self.kept_truncated else "")
            )
        return out


def _listed(refs: Sequence[str], total: int | None = None) -> str:
    more = (len(refs) if total is None else total) - _SHOWN
    return ", ".join(refs[:_SHOWN]) + (f", and {more} more" if more > 0 else "")


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n} bytes"


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def future_problem(options: Options, now: datetime, max_ahead_seconds: int) -> str | None:
    """Why the extract's time cannot be used: more than the allowed clock skew after now. Every
    event would carry it, and the ingest keeps the newest state: each later night's changes would
    be older than it and never applied."""
    if options.extracted_at <= now + timedelta(seconds=max_ahead_seconds):
        return None
    return (
        f"the extract's time {_instant(options.extracted_at)} (from {options.extracted_at_from}) is "
        f"more than {max_ahead_seconds} seconds after this machine's clock ({_instant(now)}; "
        "[ingest] max_clock_skew_seconds): its events would hold every later night's changes back. "
        "Give --extracted-at with when the extract was taken (ISO 8601 with an offset, e.g. "
        f"{_instant(now.replace(microsecond=0))})"
    )


Say = Callable[[str], None]
Progress = Callable[[int], None]


async def import_snapshot(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    stream: IO[bytes],
    mapping: Mapping,
    options: Options,
    *,
    say: Say,
    progress: Progress = lambda _: None,
) -> Summary:
    """Run the import on an open stream. Raises reader.ExtractError before anything is written when
    the header does not fit the mapping or the extract's time is in the future, ImportStopped when
    the database goes away."""
    if problem := future_problem(options, ctx.clock.now(), ctx.settings.ingest.max_clock_skew_seconds):
        raise ExtractError(problem)
    extract = Extract(stream, mapping)
    run = _Run(sessions, ctx, mapping, options, say)
    chunk: list[Row] = []
    done = extract.bytes_read
    for row in extract.rows():
        chunk.append(row)
        if len(chunk) >= options.rows_per_chunk:
            await run.chunk(chunk)
            chunk = []
            progress(extract.bytes_read - done)
            done = extract.bytes_read
    await run.chunk(chunk)
    progress(extract.bytes_read - done)
    if run.summary.new >= ANALYZE_AFTER_NEW and not options.dry_run:
        with run.on_database():
            await run.analyze()
    if options.full and not run.summary.unreadable:
        with run.on_database():
            await run.missing()
    if run.bad_rows and not options.dry_run:
        with run.on_database():
            await run.keep_bad(extract.header_raw, extract.sha256())
    return run.summary


@dataclass
class _Run:
    sessions: async_sessionmaker[AsyncSession]
    ctx: Context
    mapping: Mapping
    options: Options
    say: Say
    summary: Summary = field(default_factory=Summary)
    seen: dict[str, int] = field(default_factory=dict)  # reference -> its line
    teams: set[str] = field(default_factory=set)  # the teams the rows name (a full extract's cover)
    bad_rows: list[tuple[int, bytes]] = field(default_factory=list)  # (line, bytes as in the file)
    kept_size: int = 0  # of bad_rows: at most MAX_KEPT_BYTES are held
    chunk_bad: list[tuple[int, bytes]] = field(default_factory=list)  # this chunk's, not yet held
    pending_reports: list[tuple[int, str]] = field(default_factory=list)
    first_problems: list[str] = field(default_factory=list)  # the first bad rows' first problem

    @property
    def occurred_at(self) -> str:
        return self.options.extracted_at.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def bad(self, row: Row, problems: Sequence[str]) -> None:
        if len(self.first_problems) < KEPT_PROBLEMS:
            # Named with the kept item (inbound show), as on stderr: the person handed it sees why.
            self.first_problems.append(f"{row.where}: {printable(problems[0])}")
        self.summary.bad_lines.append(row.line)
        self.chunk_bad.append((row.line, row.raw))
        self.pending_reports.extend((row.line, f"{row.where}: {printable(problem)}") for problem in problems)

    def report(self) -> None:
        """Say this chunk's bad rows, in line order, and hold their bytes while under the cap."""
        for _, message in sorted(self.pending_reports, key=lambda pair: pair[0]):
            self.say(message)
        self.pending_reports.clear()
        for line, raw in sorted(self.chunk_bad, key=lambda pair: pair[0]):
            size = len(raw) + (not raw.endswith(b"\n"))
            if self.summary.kept_truncated or self.kept_size + size > MAX_KEPT_BYTES:
                self.summary.kept_truncated = True  # the rest are reported, not kept
                break
            self.bad_rows.append((line, raw))
            self.kept_size += size
        self.chunk_bad.clear()

    @contextmanager
    def on_database(self) -> Iterator[None]:
        """A database that is away (store.errors.is_unavailable) stops the import at once, saying
        what was stored before: taking the rows it was given for bad ones would lose them."""
        try:
            yield
        except ImportStopped:
            raise
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            raise ImportStopped(
                f"the database is unavailable ({type(exc).__name__}); before it: "
                f"{self.summary.accepted} event(s) stored, {self.summary.duplicates} seen before. "
                "Run the import again to finish: what is stored counts as unchanged"
            ) from None

    async def chunk(self, rows: Sequence[Row]) -> None:
        try:
            await self._chunk(rows)
        finally:
            self.report()

    async def _chunk(self, rows: Sequence[Row]) -> None:
        good: list[tuple[Row, Converted]] = []
        for row in rows:
            self.summary.rows += 1
            if row.problem is not None:
                self.summary.unreadable += 1
                self.bad(row, [row.problem])
                continue
            converted = convert(row, self.mapping)
            if not converted.visor_ref:
                self.summary.unreadable += 1  # whose row it is cannot be told
            if converted.visor_ref and converted.visor_ref in self.seen:
                column = column_label(self.mapping, VISOR_REF)
                self.bad(row, [
                    f"{column}: the same ViSOR reference as line {self.seen[converted.visor_ref]}"
                ])
                continue
            if converted.visor_ref:
                self.seen[converted.visor_ref] = row.line
            if converted.problems:
                self.bad(row, converted.problems)
                continue
            good.append((row, converted))
        if not good:
            return
        with self.on_database():
            async with self.sessions() as session:
                stored = await load_stored(session, [c.visor_ref for _, c in good])
        ready: list[tuple[Row, list[Envelope]]] = []
        for row, converted in good:
            before = stored.get(converted.visor_ref)
            self._note_team(converted, before)
            planned = plan(converted, before, self.options.extracted_at, self.occurred_at)
            if planned.outcome == "bad":
                self.bad(row, planned.problems)
                continue
            if planned.outcome == "older":
                self.summary.older += 1
                if len(self.summary.older_refs) < _SHOWN:
                    self.summary.older_refs.append(converted.visor_ref)
                continue
            envelopes = self._validate(row, planned)
            if envelopes is None:
                continue
            if planned.outcome == "unchanged":
                self.summary.unchanged += 1
                continue
            setattr(self.summary, planned.outcome, getattr(self.summary, planned.outcome) + 1)
            self.summary.events += len(envelopes)
            ready.append((row, envelopes))
        if self.options.dry_run:
            with self.on_database():
                await self._count_seen(ready)
            return
        # Storing one chunk while the next is read was measured: no faster (the work is CPU-bound
        # in one process), so chunks go in turn.
        group: list[tuple[Row, list[Envelope]]] = []
        size = 0
        for item in ready:  # a row's events stay together, in one transaction
            if size + len(item[1]) > MAX_ENVELOPES:
                await self._ingest(group)
                group, size = [], 0
            group.append(item)
            size += len(item[1])
        await self._ingest(group)

    def _note_team(self, converted: Converted, stored: Stored | None) -> None:
        team = converted.values.get("team") or (stored.team if stored is not None else None)
        if isinstance(team, str):
            self.teams.add(team)

    def _validate(self, row: Row, planned: Plan) -> list[Envelope] | None:
        if not planned.envelopes:
            return []
        raw = planned.envelopes
        envelopes, errors = parse_envelopes(
            raw if len(raw) > 1 else raw[0], now=self.ctx.clock.now(),
            max_ahead_seconds=self.ctx.settings.ingest.max_clock_skew_seconds,
        )
        if errors:
            self.bad(row, [self._where(e) for e in errors])
            return None
        return envelopes

    def _where(self, error: FieldError) -> str:
        parts = error.field.split(".")
        name = parts[1] if parts[0] == "data" and len(parts) > 1 else parts[0]
        if name in ("from_level", "to_level"):
            name = "mappa_level"
        elif name == "rationale":
            name = "mappa_rationale"
        if name in FIELDS or name in (VISOR_REF, "mappa_rationale"):
            where = column_label(self.mapping, name)
            if name not in self.mapping.columns:
                where += " (stored value)"
        else:
            where = f"field {error.field or '(event)'}"
        return f"{where}: {error.message}"

    async def _ingest(self, ready: Sequence[tuple[Row, list[Envelope]]]) -> None:
        if not ready:
            return
        envelopes = [e for _, row_envelopes in ready for e in row_envelopes]
        try:
            with self.on_database():
                result = await ingest(self.sessions, envelopes, self.ctx, source=SOURCE)
        except ImportStopped:
            raise
        except Exception as exc:
            if len(ready) == 1:
                # Only the type: a database error's message can quote the data.
                self.bad(ready[0][0], [f"could not be stored ({type(exc).__name__})"])
                return
            for one in ready:  # find the row the chunk failed on; store the others
                await self._ingest([one])
            return
        self.summary.accepted += result.accepted
        self.summary.duplicates += result.duplicates
        self.summary.alerts += len(result.alerts)

    async def _count_seen(self, ready: Sequence[tuple[Row, list[Envelope]]]) -> None:
        ids = [e.id for _, row_envelopes in ready for e in row_envelopes]
        if not ids:
            return
        async with self.sessions() as session:
            seen = set((await session.execute(select(Event.id).where(Event.id.in_(ids)))).scalars())
        self.summary.duplicates += len(seen)
        self.summary.accepted += len(ids) - len(seen)

    async def analyze(self) -> None:
        """Refresh PostgreSQL's statistics of the tables a first import filled. Until autovacuum
        does (within a minute or so), the next import's keyed reads are planned for the table as
        it was, nearly empty, and run ~3x slower (bench/README.md, "Feeds", fifth session)."""
        async with self.sessions.begin() as session:
            if (await session.connection()).dialect.name == "postgresql":
                await session.execute(text("ANALYZE nominals, markers, nominal_aliases"))

    async def missing(self) -> None:
        """The stored nominals of the covered teams this full extract does not list: reported, one
        feed.nominal_missing alert each (never deleted)."""
        teams = sorted(self.mapping.teams or self.teams)
        if not teams:
            return
        gone: list[tuple[str, str, str]] = []
        async with self.sessions() as session:
            listed = select(Nominal.visor_ref, Nominal.team, Nominal.offender_manager).where(
                Nominal.team.in_(teams)
            )
            rows = await session.stream(listed.order_by(Nominal.visor_ref))
            async for ref, team, manager in rows:
                if ref not in self.seen:
                    gone.append((ref, team, manager))
        self.summary.missing = [ref for ref, _, _ in gone]
        if self.options.dry_run or not gone:
            return
        subject = printable(self.options.name)[:200]
        for start in range(0, len(gone), 500):
            specs = [
                AlertSpec(
                    kind=NOMINAL_MISSING, severity="medium", visor_ref=ref, team=team, subject=subject,
                    owner=manager or None,
                    summary=f"Not in the full extract {subject}: {ref} (transferred out? deleted?)",
                    details={"extract": subject, "extracted_at": self.occurred_at},
                )
                for ref, team, manager in gone[start : start + 500]
            ]
            async with self.sessions() as session, session.begin():
                opened = await open_alerts(session, specs, self.ctx)
            self.summary.missing_alerts += sum(1 for alert in opened if alert is not None)

    async def keep_bad(self, header: bytes, sha256: str) -> None:
        parts = [header]
        for _, raw in sorted(self.bad_rows):
            parts.append(raw if raw.endswith(b"\n") else raw + b"\n")
        content = b"".join(parts)
        lines = sorted(self.summary.bad_lines)
        shown = ", ".join(str(n) for n in lines[:10]) + (", ..." if len(lines) > 10 else "")
        name = printable(self.options.name)[:80]
        reason = f"{len(lines)} bad row(s) in snapshot extract {name} (line(s) {shown})"
        if self.first_problems:  # each names a line and a column, never a cell's content
            reason += ": " + "; ".join(self.first_problems)
        if len(reason) > REASON_LIMIT:
            reason = reason[: REASON_LIMIT - 1] + "\u2026"
        async with self.sessions() as session, session.begin():
            self.summary.kept = await keep(
                session, self.ctx, source=SOURCE, external_id=f"sha256:{sha256}", reason=reason,
                content=content, media_type="text/csv",
            )


def extract_name(path: str | Path) -> str:
    return Path(path).name
