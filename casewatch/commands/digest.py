"""`casewatch digest [--team ID] [--at ISO8601] [--config PATH]`: build the daily digest of every
team (or of one) as of now or `--at`, queue it through the outbox (email to the supervisors, the
short version to the team channel), and deliver it: while it waits (at most
schedules.digest_command_wait_seconds) this process runs the delivery workers like any
`casewatch serve`, printing progress, so the digest goes out even when no service is running.
With a wait of 0 it only builds and queues (no workers are started; a running service sends).
The scheduled daily run is not affected (an on-demand digest does not use its run key).

Exit 0 when every message was sent; 1 when some failed for good or were still waiting when time
ran out (a running service will go on retrying those); 2 when it cannot run at all.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime

from sqlalchemy import select

from casewatch import wiring
from casewatch.clock import SystemClock
from casewatch.commands._support import configure_logging, schema_problem
from casewatch.config import Settings, load_config
from casewatch.context import Context
from casewatch.digest.send import QueuedDigest, send_digests
from casewatch.directory import sync_directory
from casewatch.store.models import Delivery

POLL_SECONDS = 0.2


def run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    configure_logging(settings)
    team = getattr(args, "team", None)
    if team is not None and settings.team(team) is None:
        known = ", ".join(t.id for t in settings.teams) or "none configured"
        print(f"casewatch digest: unknown team {team!r} (known: {known})", file=sys.stderr)
        return 2
    if not settings.teams:
        print("casewatch digest: no teams are configured; nothing to send", file=sys.stderr)
        return 2
    return asyncio.run(_digest(settings, args.config or "", team, getattr(args, "at", None)))


def _without_scheduler(settings: Settings) -> Settings:
    return settings.model_copy(update={"schedules": settings.schedules.model_copy(update={"enabled": False})})


async def _digest(settings: Settings, config_hint: str, team: str | None, at: datetime | None) -> int:
    service = await wiring.create_service(_without_scheduler(settings), SystemClock())
    try:
        problem = await schema_problem(service.engine, config_hint)
        if problem:
            print(f"casewatch digest: {problem}", file=sys.stderr)
            return 2
        async with service.sessions.begin() as session:
            await sync_directory(session, settings)
        ctx = Context(service.settings, service.ctx.clock)
        queued = await send_digests(service.sessions, ctx, at, [team] if team else None)
        for q in queued:
            print(_queued_line(q))
        ids = [i for q in queued for i in q.delivery_ids]
        if not ids:
            print("nothing to deliver (no supervisor addresses or team channels configured)")
            return 0
        wait_seconds = settings.schedules.digest_command_wait_seconds
        if wait_seconds > 0:  # with no time to deliver in, starting the workers only delays the exit
            await wiring.start_background(service)
        return await _wait(service, ids, wait_seconds)
    finally:
        await wiring.stop(service)


def _queued_line(q: QueuedDigest) -> str:
    d = q.digest
    state = (
        "nothing to report"
        if d.nothing_to_report
        else (
            f"{d.new_total} new, {len(d.unacknowledged)} unacknowledged, {d.overdue_total} overdue actions, "
            f"{len(d.missed_notifications)} missed notifications, {len(d.recalls)} outstanding recalls"
        )
    )
    queued = len(q.delivery_ids)
    return f"{q.team_id}: digest for {d.local_day.isoformat()} ({state}); {queued} message(s) queued"


async def _wait(service: wiring.Service, ids: list[int], wait_seconds: float) -> int:
    deadline = time.monotonic() + wait_seconds
    shown = ""
    while True:
        async with service.sessions() as session:
            rows = (
                await session.execute(
                    select(
                        Delivery.id, Delivery.channel, Delivery.target, Delivery.state, Delivery.last_error
                    ).where(Delivery.id.in_(ids))
                )
            ).all()
        sent = sum(1 for r in rows if r.state == "sent")
        dead = [r for r in rows if r.state == "dead"]
        progress = f"delivered {sent} of {len(ids)}" + (f", {len(dead)} failed" if dead else "")
        if progress != shown:
            print(progress, flush=True)
            shown = progress
        if sent + len(dead) == len(ids):
            for r in dead:
                print(f"  failed: {r.channel} to {r.target}: {r.last_error}", file=sys.stderr)
            return 0 if not dead else 1
        if time.monotonic() >= deadline:
            waiting = [r for r in rows if r.state not in ("sent", "dead")]
            for r in waiting:
                print(
                    f"  still waiting: {r.channel} to {r.target}: {r.last_error or 'not sent yet'}",
                    file=sys.stderr,
                )
            print(
                f"casewatch digest: {len(waiting)} message(s) not delivered within {wait_seconds:g}s; "
                "they stay in the outbox and a running service keeps retrying them",
                file=sys.stderr,
            )
            return 1
        await asyncio.sleep(POLL_SECONDS)
