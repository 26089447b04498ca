"""`python -m bench.flags_probe --db-url URL [--prepare] --concurrency 32 --requests 2000 [--rounds N]`

/flags alone against a running service, for profiling (py-spy on this process: the requesters
are a child process) and for counting what an answer costs: its statements, transactions and pool
checkouts, server CPU per answer and throughput, service and least-work floor alternated round by
round (`--plain-too`: and the service without the requester's read-ahead, the lookup's
statements as before the ninth session; `--sqlalchemy-too`: and the service with its reads through
SQLAlchemy's execution, store.direct_read off; `--session-too`: and the service with each
lookup's connection taken through an ORM session of the readers, and on SQLite a lookup alone on
the writer in a session's transaction, as before the fourteenth session). Not part of
`python -m bench`: the figures that count are that bench's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

import bot.commands as commands
from bench import harness
from bench.cases import flags_body, least_work_app, serve, slack_signed
from bench.dataset import BOT_TOKEN, SIGNING_SECRET, Sizes, make_settings, surname_of, visor_ref
from bench.loadgen import Request, closed_loop_remote, shutdown
from casewatch.clock import SystemClock
from casewatch.lookup import ReadAhead, Requester, requester_and_reference, requester_by_slack_user
from casewatch.store import direct_read
from casewatch.wiring import create_service, settle_heap, stop
from tests.slack_standin import SlackStandIn


class Counts:
    """Statements (by first word), transaction begins and pool checkouts on an engine."""

    def __init__(self, engine: Any) -> None:
        self.counter: Counter[str] = Counter()
        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._statement)
        event.listen(sync, "begin", lambda _c: self.counter.update(["<begin>"]))
        event.listen(sync, "commit", lambda _c: self.counter.update(["<commit>"]))
        event.listen(sync.pool, "checkout", lambda *_a: self.counter.update(["<checkout>"]))

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.counter.update([statement.split(None, 1)[0].upper()])

    def per(self, n: int) -> dict[str, float]:
        return {k: round(v / n, 3) for k, v in sorted(self.counter.items())}


async def _plain_read(
    session: AsyncSession, slack_user_id: str, _text: str, _cleared_roles: Collection[str] = ()
) -> tuple[Requester | None, ReadAhead | None]:
    """The lookup as before the ninth session: the requester, then the view, two statements."""
    return await requester_by_slack_user(session, slack_user_id), None


def _through_a_session(
    sessions: async_sessionmaker[AsyncSession],
) -> Callable[[], AbstractAsyncContextManager[AsyncConnection]]:
    """store.lookup_connections.LookupConnections.connect as the lookups had it before the fourteenth
    session: the connection of a readers' session, made, begun and closed around each lookup."""

    @asynccontextmanager
    async def connect() -> AsyncIterator[AsyncConnection]:
        async with sessions() as session, session.begin():
            yield await session.connection()

    return connect


async def _alone_in_a_session(deps: Any, _writer: Any, *args: Any) -> Any:
    """A lookup alone on SQLite's writer as before the fourteenth session: in a session's
    transaction."""
    return await commands._in_one_transaction(deps, *args)


async def main(args: argparse.Namespace) -> None:
    sizes = Sizes(nominals=10_000, actions=50_000, officers=200, teams=10)
    if args.prepare:
        print("prepared", await harness.prepare(args.db_url, sizes))
    rng = random.Random(7)
    refs = [visor_ref(rng.randint(1, sizes.nominals)) for _ in range(args.requests)]
    users = [f"UB{rng.randint(1, sizes.officers):07d}" for _ in range(args.requests)]
    async with SlackStandIn(token=BOT_TOKEN) as slack:
        settings = make_settings(
            args.db_url, sizes, database={"pool_size": 32},
            slack={"mode": "http", "signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN,
                   "api_url": slack.url},
        )
        service = await create_service(settings, SystemClock())
        if args.settle:
            settle_heap(service)  # as run_service (casewatch serve) does once started
        least_app, least_engine = await least_work_app(args.db_url, 32)
        counts = Counts(service.engine)
        reader_counts = Counts(service.reader_engine) if service.reader_engine is not None and \
            service.reader_engine.pool is not service.engine.pool else None
        try:
            async with serve(service.app) as url, serve(least_app) as least_url:

                def requests(to: str) -> list[Request]:
                    out = []
                    for i, (ref, user) in enumerate(zip(refs, users, strict=True)):
                        by_surname = args.surnames and not i % 5 and to == url
                        query = surname_of(int(ref[4:])).lower() if by_surname else ref
                        body = flags_body(query, user)
                        headers = tuple(slack_signed(body).items())
                        out.append(Request("POST", f"{to}/slack/events", body, headers))
                    return out

                fast_read = requester_and_reference
                kinds = [("service", url), ("least", least_url)]
                if args.no_least:
                    kinds = kinds[:1]
                if args.plain_too:  # the same service reading the requester and the view apart
                    kinds.insert(1, ("plain", url))
                if args.sqlalchemy_too:  # the same service, its reads through SQLAlchemy's execution
                    kinds.insert(1, ("sqlalchemy", url))
                if args.session_too:  # the same service, each lookup's connection through a session
                    kinds.insert(1, ("session", url))
                readers = service.lookup_readers
                if args.session_too and (readers is None or service.readers is None):
                    raise SystemExit("--session-too: the service has no lookup readers")
                own_connect = readers.connect if readers is not None else None
                as_before = _through_a_session(service.readers) if service.readers is not None else None
                own_alone = commands._alone_on_the_writer
                for round_ in range(args.rounds):
                    for name, to in kinds:
                        read = _plain_read if name == "plain" else fast_read
                        setattr(commands, "requester_and_reference", read)  # noqa: B010 - a stand-in
                        direct_read.ENABLED = name != "sqlalchemy"
                        if readers is not None:  # the instance's connect, or the session's in its place
                            connect = as_before if name == "session" else own_connect
                            object.__setattr__(readers, "connect", connect)
                        alone = _alone_in_a_session if name == "session" else own_alone
                        setattr(commands, "_alone_on_the_writer", alone)  # noqa: B010 - a stand-in
                        batch = requests(to)
                        warm = batch[: max(2 * args.concurrency, 50)]
                        counts.counter.clear()
                        if reader_counts is not None:
                            reader_counts.counter.clear()
                        cpu = time.process_time()
                        result = await closed_loop_remote(batch, args.concurrency, warmup=warm)
                        cpu_ms = (time.process_time() - cpu) * 1000 / (len(batch) + len(warm))
                        line: dict[str, Any] = {
                            "round": round_, "name": name, "per_s": result["per_s"], "p50": result["p50_ms"],
                            "p99": result["p99_ms"], "cpu_ms": round(cpu_ms, 3), "errors": result["errors"],
                        }
                        if name != "least":
                            line["writer"] = counts.per(len(batch) + len(warm))
                            if reader_counts is not None:
                                line["readers"] = reader_counts.per(len(batch) + len(warm))
                        print(json.dumps(line), flush=True)
        finally:
            await stop(service)
            await least_engine.dispose()
            shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--surnames", action="store_true")
    parser.add_argument("--no-least", action="store_true")
    parser.add_argument("--settle", action="store_true")
    parser.add_argument("--plain-too", action="store_true", help="also without the read-ahead (A/B)")
    parser.add_argument("--sqlalchemy-too", action="store_true", help="also reads through SQLAlchemy (A/B)")
    parser.add_argument("--session-too", action="store_true", help="also each lookup through a session (A/B)")
    asyncio.run(main(parser.parse_args()))
