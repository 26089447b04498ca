"""`casewatch chronology REF`: one nominal's timeline for a review, as text or JSON.

The view is audited (`chronology.viewed`, nominals [REF]) and committed before it is printed, so
it is in the next chronology, not in this one. A REF casewatch has nothing on (no nominal, event
or audit entry) is refused with exit 1 and not audited: nothing was shown, and an entry would
make the REF known. Exit 2: a bad REF, no database or not migrated.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.audit import record
from casewatch.audit.chronology import TimelineItem, known, render_json, render_text, timeline
from casewatch.audit.export import day_start, iso_utc
from casewatch.clock import SystemClock
from casewatch.commands._support import configure_logging, on_database, seal_audit
from casewatch.commands.audit_export import ArgumentProblem, checked_ref, cli_actor
from casewatch.config import Settings, load_config
from casewatch.context import Context
from casewatch.store.engine import make_sessionmaker

ACTION = "chronology.viewed"
PURPOSE = "chronology for a case review"


def run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    configure_logging(settings)
    try:
        ref = checked_ref(args.ref, "REF")
    except ArgumentProblem as exc:
        print(f"casewatch chronology: {exc}", file=sys.stderr)
        return 2
    ctx = Context(settings, SystemClock())
    return asyncio.run(_chronology(ctx, args, ref, sys.stdout))


async def _chronology(ctx: Context, args: argparse.Namespace, ref: str, out: TextIO) -> int:
    settings: Settings = ctx.settings
    tz = ZoneInfo(settings.service.timezone)
    since = day_start(args.since, tz) if args.since is not None else None
    items: list[TimelineItem] = []

    async def read_and_audit(engine: AsyncEngine) -> int:
        sessions = make_sessionmaker(engine)
        try:
            async with sessions.begin() as session:
                if not await known(session, ref):
                    print(f"casewatch chronology: nothing on record for {ref}", file=sys.stderr)
                    return 1
                items.extend(await timeline(session, ref, since))
                details = {"items": len(items), "format": args.format}
                if since is not None:
                    details["since"] = iso_utc(since)
                await record(
                    session, ctx, actor=cli_actor(), action=ACTION, subject=ref, purpose=PURPOSE,
                    details=details, nominals=[ref],
                )
            await seal_audit(sessions, ctx)
        except SQLAlchemyError as exc:
            print(f"casewatch chronology: database failed ({type(exc).__name__})", file=sys.stderr)
            return 2
        return 0

    code = await on_database(settings, args.config or "", "chronology", read_and_audit)
    if code:
        return code
    now = ctx.clock.now()
    out.write(render_text(ref, items, tz, now) if args.format == "text" else render_json(ref, items, now))
    return 0
