"""A /flags lookup on SQLite that finds the writer idle (nothing being committed or waiting,
casewatch.audit.batch.AuditBatcher.alone) reads and audits on it in one transaction, instead of a
read transaction on a reader and a shared commit (issue 17: one transaction fewer at 1 requester).
The same requests through both paths give the same answers and the same audit entries, request
by request; concurrent lookups still share commits (tests/test_flags_group_commit.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.store.models import AuditEntry
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
from tests.test_slack_request import REQUESTS as SLASH_REQUESTS

# Every outcome a slash command has (test_slack_request), and a search for a word Bolt alone
# took for an interaction ("payload" anywhere in the body: its 404).
REQUESTS = [*SLASH_REQUESTS, ("/flags", "payload", PC)]
AUDIT_COLUMNS = ("at", "actor", "action", "subject", "purpose", "details", "nominals", "content_hash")


@pytest.fixture
async def bot(sqlite_url: str) -> AsyncIterator[Bot]:
    async with running_bot(sqlite_url) as b:
        yield b


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def test_a_lone_lookup_reads_and_audits_in_one_writer_transaction(bot: Bot) -> None:
    service = bot.service
    assert service.reader_engine is not None and service.audit_batcher is not None
    commits: list[int] = []
    batcher_commit = service.audit_batcher._commit

    async def counted(batch: list[Any]) -> None:
        commits.append(len(batch))
        await batcher_commit(batch)

    service.audit_batcher._commit = counted  # type: ignore[method-assign]
    with statements(service.engine) as on_writer, statements(service.reader_engine) as on_readers:
        answer = await slash(bot, "/flags", ALPHA, user=SGT)
    assert ALPHA in shown(answer)
    # The requester with the view (one statement since the ninth session), on the writer; the entry
    # and its nominal index handed to the driver with the COMMIT, not through SQLAlchemy's
    # execution (tenth session: tests/test_flags10_entry_rides_along.py); nothing on the readers,
    # nothing through the shared commit.
    assert on_writer == ["SELECT"]
    assert on_readers == [] and commits == []


async def _entries_after(bot: Bot, last_id: int) -> tuple[int, list[tuple[Any, ...]]]:
    async with bot.service.sessions() as session:
        rows = list((await session.execute(
            select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id)
        )).scalars())
    return (rows[-1].id if rows else last_id), [tuple(getattr(e, c) for c in AUDIT_COLUMNS) for e in rows]


async def test_the_same_answers_and_entries_as_reading_beside_the_writer(bot: Bot) -> None:
    batcher = bot.service.audit_batcher
    assert batcher is not None
    take_writer = batcher.alone
    paths: list[bool] = []

    @contextmanager
    def never() -> Iterator[bool]:
        paths.append(False)
        yield False

    last, _ = await _entries_after(bot, 0)
    compared = 0
    for command, text, user in REQUESTS:
        body = command_body(command, text, user)
        batcher.alone = take_writer  # type: ignore[method-assign]
        alone = await bot.client.post("/slack/events", data=body, headers=slack_headers(body))
        alone_answer = (alone.status, await alone.read())
        last, alone_entries = await _entries_after(bot, last)
        batcher.alone = never  # type: ignore[method-assign]
        beside = await bot.client.post(
            "/slack/events", data=body, headers=slack_headers(body, ts=NOW_TS + 1)
        )  # signed a second later: the same request again would be a replay (bot.http.ReplayGuard)
        beside_answer = (beside.status, await beside.read())
        last, beside_entries = await _entries_after(bot, last)
        assert alone_answer == beside_answer, body
        assert alone_entries == beside_entries, body
        compared += len(alone_entries)
    assert compared >= 12
    # Each /flags went through batcher.alone.
    assert paths.count(False) == sum(1 for command, _, _ in REQUESTS if command == "/flags")
