"""`casewatch demo`: the real service on embedded defaults, loaded with fictional data.

What it sets up in its folder (default .casewatch-demo/):
  casewatch.toml       the configuration it runs with (a working example of a config file)
  casewatch.db         the SQLite case store
  ingest-secret        the demo's events-API key (made once, kept, so re-runs keep working)
  demo-events.ndjson   the demo events, to try `casewatch import` with
  mail/*.eml           every email the service sends, caught by a local SMTP sink on loopback
  chat.log             every chat message (Slack is off in the demo)

The real feeds run too (issue 18): a nightly extract of the east team's nominals, with a few
differences, through `casewatch import --snapshot` (snapshot-extract.csv, the sample mapping of
integrations/snapshot/samples), a sample border-alert email through the LMTP listener of
`casewatch mail-ingest`, and a few HMPPS probation domain events posted, signed, to the running
service's /api/v1/probation/events, as a queue bridge would.

Running it again in the same folder is safe: the demo events have fixed ids, so the second load
finds them all duplicates; the time-based scan only opens what is not open already.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch import wiring
from casewatch.config import Settings, load_config
from casewatch.context import Context
from casewatch.demo.data import DEFAULT_SEED, DemoData, build_demo
from casewatch.directory import sync_directory
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.migrate import upgrade
from casewatch.store.models import Alert
from casewatch.triggers.scan import run_scan
from integrations.mail_ingest.demo import send_sample_border_alert
from integrations.mail_sink import MailSink
from integrations.probation.demo import post_demo_events
from integrations.snapshot.demo import run_demo_snapshot

log = logging.getLogger(__name__)

BATCH = 250
# A demo nominal nothing else in the demo uses (the scenarios of casewatch.demo.data use 1 to 26,
# the snapshot demo east nominals from 27 (every third), the probation demo 40, 41 and 43): the
# border-alert email is about this one.
MAIL_NOMINAL = 44


@dataclass(frozen=True)
class DemoOptions:
    folder: Path
    port: int = 8080
    nominals: int = 200
    exit_after: float | None = None
    seed: int = DEFAULT_SEED


@dataclass
class LoadResult:
    accepted: int = 0
    duplicates: int = 0
    opened_on_ingest: int = 0
    opened_by_scan: int = 0

    def add(self, other: LoadResult) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.opened_on_ingest += other.opened_on_ingest


@dataclass
class FeedLines:
    """What each real feed did in this run, for the banner."""

    lines: list[str] = field(default_factory=list)


class DemoError(Exception):
    """The demo cannot run; the message says why."""


def demo_secret(folder: Path) -> str:
    path = folder / "ingest-secret"
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    value = secrets.token_hex(24)
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return value


def demo_config(options: DemoOptions, smtp_port: int, secret: str, data: DemoData) -> dict[str, Any]:
    folder = options.folder
    return {
        "database": {"url": f"sqlite+aiosqlite:///{folder / 'casewatch.db'}"},
        "http": {"host": "127.0.0.1", "port": options.port},
        "ingest": {"secret": secret},
        "slack": {"mode": "off"},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "sender": "casewatch-demo@force.example"},
        "routing": {"control_room_channel": "C0DEMOCONTROL"},
        # The probation feed's endpoint, for the demo's domain events.
        "probation": {"enabled": True},
        # A border check for an unknown reference still reaches a SPOC: North's, in the demo.
        "triggers": {"unmatched_team": "north"},
        # Chat goes to a file in the demo: no Slack rate limit to respect.
        "delivery": {"chat_log_path": str(folder / "chat.log"), "chat_interval_seconds": 0.0},
        "teams": data.teams,
        "officers": data.officers,
    }


def to_toml(config: dict[str, Any]) -> str:
    """Enough TOML for the demo's configuration (tables of scalars and lists, arrays of tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a valid TOML basic string
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"cannot write {type(v).__name__} as TOML")

    lines = [
        "# Written by `casewatch demo` on each run: the configuration the demo ran with.",
        "# smtp.port is the demo's local mail sink of the last run. Fictional data only.",
        "",
    ]
    for section, body in config.items():
        if isinstance(body, list):
            for row in body:
                lines.append(f"[[{section}]]")
                lines.extend(f"{k} = {value(v)}" for k, v in row.items())
                lines.append("")
        else:
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {value(v)}" for k, v in body.items())
            lines.append("")
    return "\n".join(lines)


async def load_events(
    sessions: async_sessionmaker[AsyncSession], events: Sequence[dict[str, Any]], ctx: Context
) -> LoadResult:
    """Ingest the demo events through the real pipeline (validation included), in batches."""
    result = LoadResult()
    for start in range(0, len(events), BATCH):
        envelopes, errors = parse_envelopes(list(events[start : start + BATCH]), now=ctx.clock.now())
        if errors:
            where = "; ".join(f"event {start + e.index} {e.field}: {e.message}" for e in errors[:5])
            raise DemoError(f"the demo data does not validate (a bug in casewatch.demo.data): {where}")
        outcome = await ingest(sessions, envelopes, ctx, source="demo")
        result.accepted += outcome.accepted
        result.duplicates += outcome.duplicates
        result.opened_on_ingest += len(outcome.alerts)
    return result


async def alert_counts(sessions: async_sessionmaker[AsyncSession]) -> dict[tuple[str, str], int]:
    """(kind, state) -> how many alerts."""
    async with sessions() as session:
        rows = await session.execute(
            select(Alert.kind, Alert.state, func.count()).group_by(Alert.kind, Alert.state)
        )
        return {(kind, state): int(n) for kind, state, n in rows.all()}


def prepare(options: DemoOptions) -> tuple[Settings, MailSink, DemoData]:
    folder = options.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chat.log").touch()
    secret = demo_secret(folder)
    sink = MailSink(folder=folder / "mail").start()
    try:
        today = datetime.now(ZoneInfo("Europe/London")).date()
        data = build_demo(today, options.nominals, options.seed)
        config_path = folder / "casewatch.toml"
        config_path.write_text(to_toml(demo_config(options, sink.port, secret, data)), encoding="utf-8")
        config_path.chmod(0o600)  # it holds the demo's ingest secret
        with (folder / "demo-events.ndjson").open("w", encoding="utf-8") as out:
            for event in data.all_events:
                out.write(json.dumps(event) + "\n")
        # The demo runs on its own embedded configuration only: no CASEWATCH_* variable applies.
        settings = load_config(config_path, environ={})
    except BaseException:
        sink.stop()
        raise
    return settings, sink, data


async def mail_feed(service: wiring.Service, nominals: int, feeds: FeedLines) -> None:
    """A sample border-alert report through the real LMTP listener of `casewatch mail-ingest`.
    Its time is the last 06:30 (local), so a second run the same day is a duplicate."""
    visor_ref = f"VS-D{MAIL_NOMINAL:06d}"
    tz = ZoneInfo(service.settings.service.timezone)
    now = service.ctx.clock.now().astimezone(tz)
    checked_at = now.replace(hour=6, minute=30, second=0, microsecond=0)
    if checked_at > now:  # before 06:30: yesterday's (a check cannot be in the future)
        checked_at = (now - timedelta(days=1)).replace(hour=6, minute=30, second=0, microsecond=0)
    outcome = await send_sample_border_alert(service.sessions, service.ctx, visor_ref, checked_at=checked_at)
    known = "" if MAIL_NOMINAL <= nominals else " (not a demo nominal with --nominals this low)"
    feeds.lines.append(
        f"mail       a border-alert email about {visor_ref}{known} through the LMTP listener: "
        f"{outcome.kind}, {len(outcome.alerts)} alert(s) opened"
    )


async def snapshot_feed(
    service: wiring.Service, options: DemoOptions, data: DemoData, feeds: FeedLines
) -> None:
    """The east team's nominals as a case system's full nightly extract would list them, with a
    few differences, through the real snapshot import."""
    try:
        snap = await run_demo_snapshot(service.sessions, service.ctx, options.folder, data)
    except ValueError as exc:  # too few demo nominals for its scenarios
        feeds.lines.append(f"snapshot   skipped: {exc}")
        return
    s = snap.summary
    kept = f"; bad rows kept as inbound item {s.kept.item_id}" if s.kept is not None else ""
    feeds.lines.append(
        f"snapshot   {snap.extract.name} (full extract, east team) through casewatch import --snapshot: "
        f"{s.rows} rows, {s.new} new, {s.changed} changed, {len(s.bad_lines)} bad, {len(s.missing)} "
        f"missing; {s.accepted} event(s) accepted, {s.alerts + s.missing_alerts} alert(s) opened{kept}"
    )
    for scenario in snap.scenarios:
        feeds.lines.append(f"           {scenario.visor_ref}  {scenario.shows}")


async def probation_feed(port: int, settings: Settings, now: datetime, feeds: FeedLines) -> None:
    """The demo's domain events, posted signed to the running service as a queue bridge would."""
    replies = await post_demo_events(port, settings.ingest.secret.get_secret_value(), now=now)
    for shows, reply in replies:
        outcome = reply["items"][0]["outcome"] if reply.get("items") else "?"
        feeds.lines.append(f"probation  {shows}: {outcome}, {len(reply.get('alerts', []))} alert(s) opened")


def banner(
    out: TextIO, options: DemoOptions, settings: Settings, port: int, data: DemoData,
    loaded: LoadResult, counts: dict[tuple[str, str], int], sink_port: int, feeds: FeedLines,
) -> None:
    folder = options.folder
    base = f"http://127.0.0.1:{port}"
    secret = settings.ingest.secret.get_secret_value()
    nominals = len({e["visor_ref"] for e in data.all_events if e["type"] == "nominal.upsert"})
    live: dict[str, int] = {}
    for (kind, state), n in counts.items():
        if state != "resolved":
            live[kind] = live.get(kind, 0) + n
    resolved = sum(n for (_, state), n in counts.items() if state == "resolved")
    w = out.write
    w("\n" + "=" * 78 + "\n")
    w("casewatch demo is running: FICTIONAL DATA ONLY\n\n")
    w(f"  health     {base}/healthz      readiness {base}/readyz\n")
    w(f"  metrics    {base}/metrics\n")
    w(f"  alerts     {base}/api/v1/alerts   (signed requests: see below)\n\n")
    w(f"  data       {len(data.teams)} teams, {len(data.officers)} officers, {nominals} nominals; "
      f"{len(data.all_events)} events: {loaded.accepted} new, {loaded.duplicates} already loaded\n")
    w(f"             alerts opened now: {loaded.opened_on_ingest} by the events, "
      f"{loaded.opened_by_scan} by the time-based scan\n")
    w(f"  mail       {folder / 'mail'}/*.eml  (SPOC and officer email; SMTP sink on 127.0.0.1:{sink_port})\n")
    w(f"  chat       {folder / 'chat.log'}  (team channel messages; Slack is off in the demo)\n")
    w(f"  config     {folder / 'casewatch.toml'}\n")
    w(f"  import     casewatch import --config {folder / 'casewatch.toml'} "
      f"{folder / 'demo-events.ndjson'}\n\n")
    w("  the real feeds (docs/feeds/):\n")
    for line in feeds.lines:
        w(f"    {line}\n")
    w(f"    kept for a person: casewatch inbound list --config {folder / 'casewatch.toml'}\n\n")
    w(f"  alerts not resolved, by kind ({resolved} resolved):\n")
    for kind in sorted(live):
        w(f"    {kind:<36} {live[kind]:>4}\n")
    if not live:
        w("    (none)\n")
    w("\n  what each demo nominal shows:\n")
    for scenario in data.scenarios:
        w(f"    {scenario.visor_ref}  {scenario.shows}\n")
    w(f"\n  demo ingest secret (this demo only; also in {folder / 'ingest-secret'}):\n    {secret}\n")
    w("  list the alerts with a signed request (paste into a shell; signature v2 covers the\n"
      "  method and the path with its query exactly as sent, so change P, not the URL):\n")
    w(f"    SECRET={secret}; P='/api/v1/alerts?state=open'; TS=$(date +%s); "
      "SIG=$(printf 'v2:%s:GET:%s:' \"$TS\" \"$P\" "
      "| openssl dgst -sha256 -hmac \"$SECRET\" | sed 's/^.*= //'); "
      "curl -s -H \"X-Casewatch-Timestamp: $TS\" -H \"X-Casewatch-Signature: v2=$SIG\" "
      f"\"{base}$P\"\n")
    stopping = "Ctrl-C stops it" if options.exit_after is None else f"it stops after {options.exit_after:g} s"
    w(f"\n  {stopping}")
    w("\n" + "=" * 78 + "\n")
    out.flush()


async def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    options = DemoOptions(
        options.folder.resolve(), options.port, options.nominals, options.exit_after, options.seed
    )
    settings, sink, data = prepare(options)
    try:
        service = await wiring.create_service(settings)
        try:
            await upgrade(service.engine)
            async with service.sessions.begin() as session:
                await sync_directory(session, settings)
            loaded = await load_events(service.sessions, data.events, service.ctx)
            later = await load_events(service.sessions, data.follow_ups, service.ctx)
            loaded.add(later)
            feeds = FeedLines()
            await snapshot_feed(service, options, data, feeds)
            scanned = await run_scan(service.sessions, service.ctx)
            loaded.opened_by_scan = len(scanned.tally.opened_ids)
            await mail_feed(service, options.nominals, feeds)
        except BaseException:
            await wiring.stop(service)
            raise
        stop_event = asyncio.Event()
        wiring.stop_on_signals(stop_event)
        started: set[asyncio.Task[None]] = set()
        failed: list[str] = []

        async def after_start(port: int) -> None:
            try:
                await probation_feed(port, settings, service.ctx.clock.now(), feeds)
                # The feeds came after the scan above: their time-based alerts (a recall's nominal
                # still at large, a release's notification due) open now, not at the scheduler's
                # next scan, which raced this one: a second run then found them and said so.
                scanned = await run_scan(service.sessions, service.ctx)
                loaded.opened_by_scan += len(scanned.tally.opened_ids)
                counts = await alert_counts(service.sessions)
            except Exception as exc:
                failed.append(f"the probation feed failed ({type(exc).__name__})")
                stop_event.set()
                return
            banner(out, options, settings, port, data, loaded, counts, sink.port, feeds)
            if options.exit_after is not None:
                asyncio.get_running_loop().call_later(options.exit_after, stop_event.set)

        def ready(port: int) -> None:
            task = asyncio.get_running_loop().create_task(after_start(port))
            started.add(task)
            task.add_done_callback(started.discard)

        try:
            await wiring.run_service(service, stop_event=stop_event, on_ready=ready)
        except OSError as exc:
            raise DemoError(
                f"cannot listen on 127.0.0.1:{options.port}: {exc.strerror or exc}; "
                "--port 0 picks any free port"
            ) from None
        if failed:
            raise DemoError("; ".join(failed))
        out.write(f"casewatch demo stopped; {len(sink.messages)} email(s) caught in this run.\n")
        out.flush()
        return 0
    finally:
        sink.stop()
