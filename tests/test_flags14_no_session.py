"""/flags holds a pooled connection, without an ORM session around it
(store.lookup_connections.LookupConnections; issue 17, fourteenth session: on PostgreSQL the session
was about a quarter of an answer's CPU, on SQLite ~0.3 ms of a lone answer's). PostgreSQL: a
connection of the autocommit readers. SQLite: a read-only reader's (its entry through the group
commit), or the writer's when the lookup has it alone (reads and entry in one transaction). What
the sessions' events did is still done: the lookup counts as work in flight while it holds its
connection (audit.quiet, which the sealer waits on; a Socket Mode answer has no HTTP request to
count it), and the sealer's bell rings once its entry is committed. A nominal whose notification
clocks need more facts (a border check on record) is read on the same connection
(triggers.load.history in a session bound to it) and answered as one transaction answers it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

import bot.commands as commands
import casewatch.audit as audit
import casewatch.lookup.flags as flags
from casewatch.audit import connection_sink
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.lookup import look_up_flags
from casewatch.lookup.access import Requester
from casewatch.store.lookup_connections import LookupConnections
from casewatch.store.models import AuditEntry
from casewatch.wiring import bot_deps
from tests.support import envelope
from tests.test_bot import ALPHA, PC, SGT, STRANGER, Bot, running_bot, shown, slash


@pytest.fixture
async def pg_bot(pg_url: str) -> AsyncIterator[Bot]:
    async with running_bot(pg_url) as b:
        yield b


@pytest.fixture
async def sqlite_bot(sqlite_url: str) -> AsyncIterator[Bot]:
    async with running_bot(sqlite_url) as b:
        yield b


async def _lookup_entries(bot: Bot) -> list[tuple[str, str, list[str]]]:
    async with bot.service.sessions() as session:
        rows = await session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.nominals)
            .where(AuditEntry.action.in_(("flags.lookup", "slack.refused"))).order_by(AuditEntry.id)
        )
        return [(actor, action, list(nominals)) for actor, action, nominals in rows]


async def test_a_lookup_makes_no_session_counts_in_flight_and_rings_the_sealer_after_its_entry(
    pg_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = pg_bot.service
    readers = service.lookup_readers
    assert readers is not None and service.readers is not None
    deps = bot_deps(service)
    assert deps.lookup_readers is readers
    before = await _lookup_entries(pg_bot)
    happened: list[Any] = []
    read = flags.requester_and_reference

    async def noting_read(*args: Any, **kw: Any) -> Any:
        happened.append(("read", service.quiet.in_flight))
        return await read(*args, **kw)

    send = audit._send_pg

    async def noting_send(*args: Any) -> None:
        await send(*args)
        happened.append("entry committed")  # autocommit: the statement's own commit is done

    monkeypatch.setattr(commands, "requester_and_reference", noting_read)
    monkeypatch.setattr(audit, "_send_pg", noting_send)
    monkeypatch.setattr(AsyncSession, "__init__", _noting(AsyncSession.__init__, happened))
    try:
        with _bell_noted(readers, happened):
            # Straight to the command, as Socket Mode calls it: no HTTP request counts it in flight.
            message = await commands.flags_reply(deps, SGT, ALPHA)
    finally:
        monkeypatch.undo()
    assert ALPHA in shown(message)
    # No session made; in flight while reading; the bell only once the entry is committed.
    assert happened == [("read", 1), "entry committed", "bell"]
    assert service.quiet.in_flight == 0
    assert (await _lookup_entries(pg_bot))[len(before):] == [("SGT0001", "flags.lookup", [ALPHA])]


@contextmanager
def _bell_noted(connections: LookupConnections, happened: list[Any]) -> Iterator[None]:
    """The sealer's bell of `connections`, noted in `happened` when it rings."""
    ring = connections.after_audit
    assert ring is not None

    def noting() -> None:
        happened.append("bell")
        ring()

    object.__setattr__(connections, "after_audit", noting)
    try:
        yield
    finally:
        object.__setattr__(connections, "after_audit", ring)


def _noting(init: Any, made: list[Any]) -> Any:
    def noted(self: Any, *args: Any, **kw: Any) -> None:
        made.append("session made")
        init(self, *args, **kw)

    return noted


async def test_a_refusal_is_recorded_and_rings_and_work_that_fails_rings_nothing(
    pg_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers = pg_bot.service.lookup_readers
    assert readers is not None
    rang: list[int] = []
    ring = readers.after_audit
    object.__setattr__(readers, "after_audit", lambda: rang.append(1))
    try:
        before = await _lookup_entries(pg_bot)
        refused = await slash(pg_bot, "/flags", ALPHA, user=STRANGER)
        assert ALPHA not in shown(refused)
        assert rang == [1]
        assert (await _lookup_entries(pg_bot))[len(before):] == [
            (f"slack:{STRANGER}", "slack.refused", [])
        ]

        def broken(*_: Any, **__: Any) -> Any:
            raise RuntimeError("render failed")

        monkeypatch.setattr(commands.render, "flags_message", broken)
        failed = await slash(pg_bot, "/flags", ALPHA, user=PC)
        assert failed["text"] == commands.render.FAILURE
        assert rang == [1]  # nothing written, nothing to seal
    finally:
        object.__setattr__(readers, "after_audit", ring)
    assert pg_bot.service.quiet.in_flight == 0


async def test_a_nominal_with_more_facts_reads_them_on_the_same_connection_as_one_transaction_does(
    pg_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ALPHA is registered; a border check on record makes its notification clocks need the rest
    of its facts (lookup.flags: triggers.load.history), read here in a session bound to the
    lookup's connection. The answer is the one a single transaction gives."""
    service = pg_bot.service
    at = "2026-11-20T09:00:00Z"
    check = envelope(
        "travel.border_alert", {"port": "Dover", "direction": "outbound", "checked_at": at},
        id="bc-flags14", visor_ref=ALPHA, occurred_at=at,
    )
    envelopes, errors = parse_envelopes([check])
    assert errors == []
    await ingest(service.sessions, envelopes, service.ctx, source="test")
    histories: list[tuple[bool, int]] = []
    history = flags.load.history

    async def noting_history(session: AsyncSession, *args: Any) -> Any:
        conn = await session.connection()
        pid = await conn.scalar(text("SELECT pg_backend_pid()"))
        histories.append((isinstance(session.bind, AsyncConnection), pid))
        return await history(session, *args)

    pids: list[int] = []
    read = flags.requester_and_reference

    async def noting_read(reads: Any, *args: Any) -> Any:
        pids.append(await reads.scalar(text("SELECT pg_backend_pid()")))
        return await read(reads, *args)

    monkeypatch.setattr(flags.load, "history", noting_history)
    monkeypatch.setattr(commands, "requester_and_reference", noting_read)
    deps = bot_deps(service)
    fast = await commands.flags_reply(deps, SGT, ALPHA)
    one = await commands._in_one_transaction(
        deps, SGT, "/flags", _flags_work(deps, ALPHA), commands.requester_by_slack_user
    )
    assert fast == one and ALPHA in shown(fast)
    # Read on the lookup's own connection (a session bound to it), then in the one transaction.
    assert len(pids) == 1 and histories[0] == (True, pids[0])
    assert len(histories) == 2 and histories[1][0] is False


def _flags_work(deps: Any, text_: str) -> Any:
    async def work(reads: Any, requester: Requester, audit: Any) -> Any:
        outcome = await look_up_flags(reads, requester, text_, deps.ctx, audit_sink=audit)
        assert isinstance(outcome, flags.Found)
        return commands.render.flags_message(outcome.view, deps.zone, outcome.reason)

    return work


async def test_a_lookup_on_a_connection_needs_an_audit_sink(
    pg_bot: Bot,
) -> None:
    service = pg_bot.service
    requester = Requester("SGT0001", "Sgt Example", "north", frozenset({"supervisor"}))
    assert service.lookup_readers is not None
    async with service.lookup_readers.connect() as connection:
        with pytest.raises(TypeError):
            await look_up_flags(connection, requester, ALPHA, service.ctx)
        found = await look_up_flags(
            connection, requester, ALPHA, service.ctx, audit_sink=connection_sink(connection, service.ctx)
        )
    assert isinstance(found, flags.Found)
    # The writer's engine commits with its transactions; the readers', statement by statement.
    assert service.lookup_readers.each_statement_commits
    assert not LookupConnections(service.engine).each_statement_commits


# --- SQLite ---------------------------------------------------------------------------------------


async def test_sqlite_a_lone_lookup_is_one_transaction_on_the_writer_without_a_session(
    sqlite_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone (AuditBatcher.alone): BEGIN IMMEDIATE, the read, the entry with the COMMIT, on the
    writer's connection; in flight while held; the bell once committed."""
    service = sqlite_bot.service
    writer = service.lookup_writer
    assert writer is not None and service.lookup_readers is not None
    assert not writer.each_statement_commits and writer.engine is service.engine
    before = await _lookup_entries(sqlite_bot)
    happened: list[Any] = []
    read = flags.requester_and_reference

    async def noting_read(reads: Any, *args: Any) -> Any:
        assert isinstance(reads, AsyncConnection) and reads.engine is service.engine
        happened.append(("read", service.quiet.in_flight))
        return await read(reads, *args)

    def committed(_conn: Any) -> None:
        happened.append("commit")

    monkeypatch.setattr(commands, "requester_and_reference", noting_read)
    monkeypatch.setattr(AsyncSession, "__init__", _noting(AsyncSession.__init__, happened))
    event.listen(service.engine.sync_engine, "commit", committed)
    try:
        with _bell_noted(writer, happened):
            message = await commands.flags_reply(bot_deps(service), SGT, ALPHA)
    finally:
        event.remove(service.engine.sync_engine, "commit", committed)
        monkeypatch.undo()
    assert ALPHA in shown(message)
    assert happened == [("read", 1), "commit", "bell"]
    assert service.quiet.in_flight == 0
    assert (await _lookup_entries(sqlite_bot))[len(before):] == [("SGT0001", "flags.lookup", [ALPHA])]


async def test_sqlite_lookups_beside_the_writer_read_without_a_session_and_share_a_commit(
    sqlite_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not alone: each reads in a DEFERRED transaction on a read-only connection of its own, no
    session on the readers; the entries go through the group commit (its session, the writer's)."""
    service = sqlite_bot.service
    readers, batcher = service.lookup_readers, service.audit_batcher
    assert readers is not None and batcher is not None and readers.engine is service.reader_engine
    sessions_on: list[Any] = []
    init = AsyncSession.__init__

    def noting_init(self: Any, *args: Any, **kw: Any) -> None:
        init(self, *args, **kw)
        sessions_on.append(self.bind)

    in_flight: list[int] = []
    read = flags.requester_and_reference

    async def noting_read(reads: Any, *args: Any) -> Any:
        assert isinstance(reads, AsyncConnection) and reads.engine is service.reader_engine
        assert reads.in_transaction()
        in_flight.append(service.quiet.in_flight)
        return await read(reads, *args)

    class NeverAlone:
        def __enter__(self) -> bool:
            return False

        def __exit__(self, *_: Any) -> None:
            return None

    before = await _lookup_entries(sqlite_bot)
    monkeypatch.setattr(commands, "requester_and_reference", noting_read)
    monkeypatch.setattr(AsyncSession, "__init__", noting_init)
    monkeypatch.setattr(batcher, "alone", NeverAlone)
    deps = bot_deps(service)
    answers = await asyncio.gather(*(commands.flags_reply(deps, user, ALPHA) for user in (SGT, PC)))
    monkeypatch.undo()
    assert all(ALPHA in shown(a) for a in answers) and len(in_flight) == 2
    assert all(count >= 1 for count in in_flight)
    assert sessions_on and all(bind is service.engine for bind in sessions_on)  # the batcher's only
    new = (await _lookup_entries(sqlite_bot))[len(before):]
    assert sorted(new) == sorted([("SGT0001", "flags.lookup", [ALPHA]), ("PC1234", "flags.lookup", [ALPHA])])
    assert service.quiet.in_flight == 0
