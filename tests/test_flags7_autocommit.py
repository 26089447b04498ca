"""/flags on PostgreSQL reads through the service's readers (store.make_reader_engine: a pool of its
own in autocommit, without SQLAlchemy's three-trip pre-ping) and writes its audit entry last, in
a statement that commits on its own (bot.commands._read_then_record; issue 17: no BEGIN, COMMIT
or ping trips). The same requests through it and through one ordinary transaction give the same
answers and the same audit entries, request by request, on both databases (on SQLite the
readers' path is the group commit's, compared here too). A pooled connection the server closed is
replaced as the pre-ping would have; work that fails writes no entry; an entry that fails is no
answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, select, text

import bot.commands as commands
import casewatch.audit as audit
from bot import render
from casewatch.store import direct_read
from casewatch.store.engine import commits_each_statement, found_connection_gone
from casewatch.store.models import AuditEntry
from casewatch.wiring import bot_deps
from tests.test_bot import (
    ALPHA,
    NOW_TS,
    PC,
    SGT,
    Bot,
    command_body,
    running_bot,
    shown,
    slack_headers,
    slash,
)
from tests.test_flags_alone import REQUESTS

AUDIT_COLUMNS = ("at", "actor", "action", "subject", "purpose", "details", "nominals", "content_hash")


@pytest.fixture
async def pg_bot(pg_url: str) -> AsyncIterator[Bot]:
    async with running_bot(pg_url) as b:
        yield b


@pytest.fixture
async def any_bot(db_url: str) -> AsyncIterator[Bot]:
    async with running_bot(db_url) as b:
        yield b


async def _entries_after(bot: Bot, last_id: int) -> tuple[int, list[tuple[Any, ...]]]:
    async with bot.service.sessions() as session:
        rows = list((await session.execute(
            select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id)
        )).scalars())
    return (rows[-1].id if rows else last_id), [tuple(getattr(e, c) for c in AUDIT_COLUMNS) for e in rows]


async def _nominal_index(bot: Bot) -> list[tuple[str, int]]:
    async with bot.service.engine.connect() as conn:
        index = text("SELECT visor_ref, audit_id FROM audit_nominals ORDER BY audit_id, visor_ref")
        rows = await conn.execute(index)
        return [(str(r[0]), int(r[1])) for r in rows]


def _plain(monkeypatch: pytest.MonkeyPatch, bot: Bot) -> None:
    """Send every read-only answer through one ordinary transaction (the plain path)."""
    deps = bot_deps(bot.service)

    async def record_path(_deps: Any, _readers: Any, *args: Any) -> Any:
        return await commands._in_one_transaction(deps, *args)

    async def audit_path(_readers: Any, _audit: Any, *args: Any) -> Any:
        return await commands._in_one_transaction(deps, *args)

    async def writer_path(_deps: Any, _writer: Any, *args: Any) -> Any:
        return await commands._in_one_transaction(deps, *args)

    monkeypatch.setattr(commands, "_read_then_record", record_path)
    monkeypatch.setattr(commands, "_read_then_audit", audit_path)
    monkeypatch.setattr(commands, "_alone_on_the_writer", writer_path)


async def test_postgres_lookups_read_and_audit_in_autocommit_on_the_readers(pg_bot: Bot) -> None:
    service = pg_bot.service
    assert service.reader_engine is not None and service.audit_batcher is None
    assert commits_each_statement(service.reader_engine) and not commits_each_statement(service.engine)
    on_writer: list[str] = []
    on_readers: list[tuple[str, bool]] = []

    def note_writer(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        on_writer.append(statement.split(None, 1)[0].upper())

    def note_reader(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # Whether the server-side connection was inside a transaction block when it ran.
        in_block = conn.connection.driver_connection.is_in_transaction()
        on_readers.append((statement.split(None, 1)[0].upper(), in_block))

    send = audit._send_pg

    async def note_direct(connection: Any, driver: Any, *args: Any) -> None:
        # The entry sent by asyncpg itself (audit.record(direct=True), tenth session).
        on_readers.append(("WITH (direct)", driver.driver_connection.is_in_transaction()))
        await send(connection, driver, *args)

    pick = direct_read._asyncpg

    def note_read(connection: Any) -> Any:
        # The read sent by asyncpg itself (store.direct_read, eleventh session).
        driver = pick(connection)
        if driver is not None:
            on_readers.append(("SELECT (direct)", driver.driver_connection.is_in_transaction()))
        return driver

    last, _ = await _entries_after(pg_bot, 0)
    index_before = await _nominal_index(pg_bot)
    audit._send_pg = note_direct  # type: ignore[assignment]
    direct_read._asyncpg = note_read  # type: ignore[assignment]
    event.listen(service.engine.sync_engine, "before_cursor_execute", note_writer)
    event.listen(service.reader_engine.sync_engine, "before_cursor_execute", note_reader)
    try:
        answer = await slash(pg_bot, "/flags", ALPHA, user=SGT)
    finally:
        audit._send_pg = send
        direct_read._asyncpg = pick
        event.remove(service.engine.sync_engine, "before_cursor_execute", note_writer)
        event.remove(service.reader_engine.sync_engine, "before_cursor_execute", note_reader)
    assert ALPHA in shown(answer)
    # The requester with the view (one statement since the ninth session, sent by asyncpg since the
    # eleventh), then the entry with its nominal index (one statement, sent by asyncpg since the
    # tenth session); no transaction block around them, nothing on the writer.
    assert on_readers == [("SELECT (direct)", False), ("WITH (direct)", False)]
    assert on_writer == []
    _, entries = await _entries_after(pg_bot, last)
    assert [e[2] for e in entries] == ["flags.lookup"]
    new_index = [row for row in await _nominal_index(pg_bot) if row not in index_before]
    assert [ref for ref, _ in new_index] == [ALPHA] and new_index[0][1] > last


@pytest.mark.parametrize("writer_alone", [False, True], ids=["readers", "writer_alone"])
async def test_the_same_answers_and_entries_as_one_transaction(
    any_bot: Bot, monkeypatch: pytest.MonkeyPatch, writer_alone: bool
) -> None:
    """Request by request: through the lookups' connections (store.lookup_connections: on SQLite
    the readers and the shared commit, or the writer's connection alone), then through one
    ordinary transaction in a session."""
    bot = any_bot
    assert bot.service.lookup_readers is not None
    batcher = bot.service.audit_batcher
    if writer_alone and batcher is None:
        pytest.skip("the writer alone is SQLite's (the group commit's) path")
    last, _ = await _entries_after(bot, 0)
    compared = 0
    used: list[str] = []
    paths = [
        _noted(used, name, getattr(commands, name))
        for name in ("_read_then_record", "_read_then_audit", "_alone_on_the_writer")
    ]
    for command, query, user in REQUESTS:
        body = command_body(command, query, user)
        monkeypatch.setattr(commands, "_read_then_record", paths[0])
        monkeypatch.setattr(commands, "_read_then_audit", paths[1])
        monkeypatch.setattr(commands, "_alone_on_the_writer", paths[2])
        if batcher is not None and not writer_alone:  # SQLite: the readers and the shared commit
            monkeypatch.setattr(batcher, "alone", _never_alone)
        fast = await bot.client.post("/slack/events", data=body, headers=slack_headers(body))
        fast_answer = (fast.status, fast.headers.get("Content-Type"), await fast.read())
        last, fast_entries = await _entries_after(bot, last)
        _plain(monkeypatch, bot)
        plain = await bot.client.post(
            "/slack/events", data=body, headers=slack_headers(body, ts=NOW_TS + 1)
        )  # signed a second later: the same request again would be a replay (bot.http.ReplayGuard)
        plain_answer = (plain.status, plain.headers.get("Content-Type"), await plain.read())
        last, plain_entries = await _entries_after(bot, last)
        assert fast_answer == plain_answer, body
        assert fast_entries == plain_entries, body
        compared += len(fast_entries)
    assert compared >= 12
    expected = "_alone_on_the_writer" if writer_alone else (
        "_read_then_audit" if batcher is not None else "_read_then_record"
    )
    assert set(used) == {expected}
    # Each entry about a nominal has its index rows, on both paths alike.
    index = await _nominal_index(bot)
    async with bot.service.sessions() as session:
        entries = list((await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())
    assert sorted(index) == sorted((ref, e.id) for e in entries for ref in e.nominals)


def _noted(used: list[str], name: str, path: Any) -> Any:
    async def noted(*args: Any) -> Any:
        used.append(name)
        return await path(*args)

    return noted


class _NeverAlone:
    def __enter__(self) -> bool:
        return False

    def __exit__(self, *_: Any) -> None:
        return None


def _never_alone() -> _NeverAlone:
    return _NeverAlone()


async def test_a_pooled_connection_the_server_closed_is_replaced(
    pg_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the pre-ping would: the server ends the readers' idle connections (a restart, an idle
    timeout); the next lookup answers and audits on a new one."""
    service = pg_bot.service
    gone: list[bool] = []
    judge = found_connection_gone

    def noted(exc: BaseException) -> bool:
        gone.append(judge(exc))
        return gone[-1]

    monkeypatch.setattr(commands, "found_connection_gone", noted)
    assert service.reader_engine is not None
    first = await slash(pg_bot, "/flags", ALPHA, user=SGT)
    async with service.reader_engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    async with service.engine.connect() as admin:
        others = text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert any((await admin.execute(others)).scalars())
    last, _ = await _entries_after(pg_bot, 0)
    again = await slash(pg_bot, "/flags", ALPHA, user=SGT)
    assert gone == [True]  # the first read found it gone, and the lookup ran again
    assert again == first
    _, entries = await _entries_after(pg_bot, last)
    assert [e[2] for e in entries] == ["flags.lookup"]
    async with service.reader_engine.connect() as conn:
        assert (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid


async def test_work_that_fails_writes_no_entry_and_an_entry_that_fails_is_no_answer(
    pg_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    last, _ = await _entries_after(pg_bot, 0)

    def broken_render(*_: Any, **__: Any) -> Any:
        raise RuntimeError("render failed")

    with monkeypatch.context() as patched:
        patched.setattr(render, "flags_message", broken_render)
        answer = await slash(pg_bot, "/flags", ALPHA, user=PC)
    assert answer["text"] == render.FAILURE
    last, entries = await _entries_after(pg_bot, last)
    assert entries == []

    import casewatch.audit as audit

    async def refused(*_: Any, **__: Any) -> None:
        raise RuntimeError("the database refused the entry")

    with monkeypatch.context() as patched:
        patched.setattr(audit, "_write", refused)  # what record writes with, in a session or on a connection
        answer = await slash(pg_bot, "/flags", ALPHA, user=PC)
    assert answer["text"] == render.FAILURE and ALPHA not in shown(answer)
    _, entries = await _entries_after(pg_bot, last)
    assert entries == []
