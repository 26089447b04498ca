"""`casewatch outbox dead|requeue`: list dead-lettered deliveries, and send them again once the
cause is fixed (the running service's delivery workers pick requeued rows up at their next poll).

dead: one line per dead delivery (never its payload), then a count. Exit 0, 2 if it cannot run.
requeue: needs --id, --target or --all. Exit 0: every selected row requeued; 1: some skipped
(not dead, unknown, or an address no longer configured), each said on stderr; 2: cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.clock import SystemClock
from casewatch.commands._support import configure_logging, on_database, seal_audit
from casewatch.config import Settings, load_config
from casewatch.context import Context
from casewatch.delivery.dead_letters import DeadLetter, Selector, list_dead, requeue
from casewatch.store.engine import make_sessionmaker

ERROR_WIDTH = 120


def run(args: argparse.Namespace) -> int:
    if args.outbox_command == "requeue":
        selector = Selector(ids=tuple(args.id or ()), target=args.target, everything=args.all)
        if selector.empty:
            print(
                "casewatch outbox requeue: say which dead deliveries to send again: "
                "--id N (repeatable), --target ADDRESS or --all (see `casewatch outbox dead`)",
                file=sys.stderr,
            )
            return 2
        return _with_database(args, lambda sessions, settings: _requeue(sessions, settings, selector))
    return _with_database(args, lambda sessions, _settings: _list(sessions))


def _with_database(
    args: argparse.Namespace,
    body: Callable[[async_sessionmaker[AsyncSession], Settings], Awaitable[int]],
) -> int:
    settings = load_config(args.config)
    configure_logging(settings)

    async def go(engine: AsyncEngine) -> int:
        sessions = make_sessionmaker(engine)
        code = await body(sessions, settings)
        await seal_audit(sessions, Context(settings, SystemClock()))
        return code

    return asyncio.run(on_database(settings, args.config or "", f"outbox {args.outbox_command}", go))


def _one_line(text: str, width: int = ERROR_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def dead_line(d: DeadLetter) -> str:
    about = f"alert {d.alert_id}" if d.alert_id else d.purpose
    died = d.died_at.isoformat(timespec="seconds") if d.died_at else "-"
    return (
        f"{d.id}  {about}  {d.channel} {d.target}  {d.receiver}  attempts {d.attempts}  "
        f"died {died}  error: {_one_line(d.last_error) or '-'}"
    )


async def _list(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        dead = await list_dead(session)
    for d in dead:
        print(dead_line(d))
    print(f"{len(dead)} dead deliver{'y' if len(dead) == 1 else 'ies'}")
    return 0


async def _requeue(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, selector: Selector
) -> int:
    async with sessions.begin() as session:
        result = await requeue(session, Context(settings, SystemClock()), selector)
    for skipped in result.skipped:
        print(f"casewatch outbox requeue: delivery {skipped.delivery_id} skipped: {skipped.reason}",
              file=sys.stderr)
    print(
        f"requeued {len(result.requeued)}"
        + (f" ({', '.join(map(str, result.requeued))})" if result.requeued else "")
        + f"; skipped {len(result.skipped)}"
    )
    if not result.requeued and not result.skipped:
        print("casewatch outbox requeue: no dead deliveries matched", file=sys.stderr)
    if result.requeued:
        print("the running service's delivery workers send them at their next poll")
    return 1 if result.skipped else 0
