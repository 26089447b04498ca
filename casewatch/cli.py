"""`casewatch` command line. Each subcommand lives in casewatch.commands.<name> as run(args)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime

from casewatch import logs
from casewatch.config import ConfigError


def _iso(value: str) -> datetime:
    """An --at argument: an ISO 8601 instant with an offset, as an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time, for example 2026-11-23T07:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} has no UTC offset; add Z or +00:00 (for example 2026-11-23T07:00:00Z)"
        )
    return parsed.astimezone(UTC)


def _day_or_instant(value: str) -> date | datetime:
    """A --since/--until argument: a date (a whole day in the service's time zone) or an ISO 8601
    instant with an offset."""
    if len(value) == 10:
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a date, for example 2026-11-23") from None
    return _iso(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="casewatch",
        description="Watches ViSOR case data for triggers and routes alerts to the people who must act.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *, config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config:
            p.add_argument(
                "--config", metavar="PATH",
                help="TOML configuration file (default ./casewatch.toml if present, else built-in defaults)",
            )
        return p

    def nested_config(*children: argparse.ArgumentParser) -> None:
        """--config on a command of subcommands (db, inbound, outbox, audit): before the
        subcommand (`casewatch inbound --config X list`) or after it, either. The subcommand's own
        leaves the parent's value alone when not given (SUPPRESS: argparse would copy its None
        over it)."""
        for child in children:
            child.add_argument(
                "--config", metavar="PATH", default=argparse.SUPPRESS, help="TOML configuration file"
            )

    command("serve", "run the service: HTTP server, Slack app, schedules, delivery workers")
    demo = command("demo", "run the service on embedded defaults with fictional demo data", config=False)
    demo.add_argument(
        "--dir", default=".casewatch-demo", help="where the demo keeps its files (default .casewatch-demo)"
    )
    demo.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0 picks a free one)")
    demo.add_argument("--nominals", type=int, default=200, help="how many fictional nominals (default 200)")
    demo.add_argument(
        "--exit-after", type=float, metavar="SECONDS", help="stop after this long (for scripts and tests)"
    )

    db = command("db", "database commands")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    up = db_sub.add_parser("upgrade", help="apply database migrations (Alembic)")

    imp = command(
        "import",
        "ingest events from an NDJSON file (one envelope a line), or - for stdin; or, with "
        "--snapshot, compare a case-system extract (CSV) with the stored state",
    )
    imp.add_argument("path", metavar="PATH", nargs="?", help="the NDJSON file, or - for stdin")
    imp.add_argument("--batch-size", type=int, default=500, help="events per transaction (default 500)")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    imp.add_argument(
        "--snapshot", metavar="PATH.csv", help="a nightly extract, one row a nominal (docs/feeds/snapshot.md)"
    )
    imp.add_argument("--mapping", metavar="PATH.toml", help="with --snapshot: the extract's column mapping")
    extent = imp.add_mutually_exclusive_group()
    extent.add_argument(
        "--full", action="store_true",
        help="with --snapshot: the extract lists every nominal of the teams it covers "
        "(missing ones are reported)",
    )
    extent.add_argument(
        "--partial", action="store_true", help="with --snapshot: only some nominals (none reported missing)"
    )
    imp.add_argument(
        "--dry-run", action="store_true", help="with --snapshot: report what would change, write nothing"
    )
    imp.add_argument(
        "--extracted-at", type=_iso, metavar="ISO8601",
        help="with --snapshot: when the extract was taken (default: the file's modification time)",
    )

    mail = command("mail-ingest", "read border-alert emails (IMAP or LMTP, per [inbound_mail]) into events")
    mail.add_argument("--once", action="store_true", help="IMAP: read what is waiting, then exit")

    inbound = command("inbound", "items a feed kept because it could not read them")
    inbound_sub = inbound.add_subparsers(dest="inbound_command", required=True, metavar="INBOUND_COMMAND")
    listing = inbound_sub.add_parser("list", help="the kept items not yet dealt with (--all: every one)")
    listing.add_argument("--all", action="store_true", help="also the items already dealt with")
    show = inbound_sub.add_parser("show", help="print one kept item as received (audited)")
    show.add_argument("id", type=int, metavar="ID")
    show.add_argument(
        "--raw", metavar="FILE", help="write the exact bytes to this new file instead (mode 0600)"
    )
    done = inbound_sub.add_parser("done", help="record that a kept item was dealt with (audited)")
    done.add_argument("id", type=int, metavar="ID")

    scan = command("scan", "evaluate every time-based trigger once, as of now or --at")
    scan.add_argument("--at", type=_iso, metavar="ISO8601", help="evaluate as of this instant")
    scan.add_argument(
        "--act", action="store_true",
        help="with an --at more than 5 minutes from now: act on the database as of it all the same "
        "(opens, raises and resolves alerts, and sends them); for a test or demo database",
    )

    digest = command("digest", "build and send the daily digest(s) now")
    digest.add_argument("--team", metavar="ID", help="only this team (default: every team)")
    digest.add_argument("--at", type=_iso, metavar="ISO8601", help="as of this instant")

    outbox = command("outbox", "dead-lettered deliveries: list them, send them again")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="OUTBOX_COMMAND")
    dead = outbox_sub.add_parser("dead", help="list the dead-lettered deliveries (never their content)")
    requeue = outbox_sub.add_parser(
        "requeue", help="send dead deliveries again once the cause is fixed (needs --id, --target or --all)"
    )
    requeue.add_argument("--id", type=int, action="append", metavar="N", help="this delivery (repeatable)")
    requeue.add_argument("--target", metavar="ADDRESS", help="dead deliveries to this Slack id or email")
    requeue.add_argument("--all", action="store_true", help="every dead delivery")

    audit = command("audit", "the audit log: check its hash chain, export entries")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")
    verify = audit_sub.add_parser(
        "verify", help="check the audit log's hash chain: exit 0 intact, 1 broken, 2 could not run"
    )
    export = audit_sub.add_parser(
        "export", help="the audit entries asked for, as CSV or JSON, for a disclosure log or a review"
    )
    export.add_argument("--subject", metavar="REF", help="entries about this nominal (ViSOR reference)")
    export.add_argument("--actor", metavar="ID", help="entries by this officer id (or system, cli:<user>)")
    export.add_argument("--since", type=_day_or_instant, metavar="DATE", help="from this day or instant")
    export.add_argument(
        "--until", type=_day_or_instant, metavar="DATE", help="up to the end of this day, or this instant"
    )
    export.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")

    chronology = command(
        "chronology", "one nominal's timeline for a review: events, alerts, who was told, lookups"
    )
    chronology.add_argument("ref", metavar="REF", help="the nominal's ViSOR reference")
    chronology.add_argument("--since", type=_day_or_instant, metavar="DATE", help="from this day or instant")
    chronology.add_argument(
        "--format", choices=("text", "json"), default="text", help="text (default) or json"
    )
    nested_config(up, listing, show, done, dead, requeue, verify, export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(logging.INFO)  # one escaped, bounded line per record (casewatch.logs)
    name = "db_upgrade" if args.command == "db" else args.command.replace("-", "_")
    if name == "import":
        name = "import_events"
    module = importlib.import_module(f"casewatch.commands.{name}")
    try:
        code: int = module.run(args)
    except ConfigError as exc:
        print(f"casewatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
