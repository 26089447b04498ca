"""Review (fourteenth session, issue 17) of /flags without an ORM session
(store.lookup_connections, bot.commands): attacks that were found to hold, kept as regressions.
- SQLite, alone on the writer: an entry the database itself refuses at the COMMIT (where the
  one-trip driver runs the held entry) is no answer and no entry, and nothing of it is left on
  the one writer connection for the next transaction.
- Both databases, with a nominal whose clocks need the rest of its facts (the history read in a
  session bound to the lookup's connection): a lookup cancelled at any point (its client gone)
  never answers without its entry, leaves nothing in flight, every pooled connection back, and
  the next lookup answers and is audited once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select, text

import bot.commands as commands
from bot import render
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.models import AuditEntry
from casewatch.wiring import bot_deps
from tests.support import envelope
from tests.test_bot import ALPHA, PC, SGT, Bot, running_bot, shown


@pytest.fixture
async def sqlite_bot(sqlite_url: str) -> AsyncIterator[Bot]:
    async with running_bot(sqlite_url) as b:
        yield b


@pytest.fixture
async def pg_bot(pg_url: str) -> AsyncIterator[Bot]:
    async with running_bot(pg_url) as b:
        yield b


async def _count(bot: Bot) -> int:
    async with bot.service.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


async def _border_check(bot: Bot) -> None:
    """A border check on record: ALPHA's notification clocks then need its history."""
    at = "2026-11-20T09:00:00Z"
    check = envelope(
        "travel.border_alert", {"port": "Dover", "direction": "outbound", "checked_at": at},
        id="bc-review14", visor_ref=ALPHA, occurred_at=at,
    )
    envelopes, errors = parse_envelopes([check])
    assert errors == []
    await ingest(bot.service.sessions, envelopes, bot.service.ctx, source="test")


async def test_sqlite_an_entry_the_database_refuses_at_the_commit_alone_leaves_nothing_behind(
    sqlite_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = sqlite_bot.service
    async with service.sessions.begin() as session:
        await session.execute(text(
            "CREATE TRIGGER review14_refuse BEFORE INSERT ON audit_log WHEN NEW.actor = 'SGT0001' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ))
    before = await _count(sqlite_bot)
    deps = bot_deps(service)
    alone: list[str] = []
    on_the_writer = commands._alone_on_the_writer

    async def noted(*args: Any) -> Any:
        alone.append(args[2])
        return await on_the_writer(*args)

    monkeypatch.setattr(commands, "_alone_on_the_writer", noted)
    refused = await commands.flags_reply(deps, SGT, ALPHA)
    assert refused["text"] == render.FAILURE and ALPHA not in shown(refused)
    assert await _count(sqlite_bot) == before
    assert service.quiet.in_flight == 0 and service.engine.pool.checkedout() == 0
    # The writer's next transaction (another lookup alone) commits its own entry, and only it.
    answer = await commands.flags_reply(deps, PC, ALPHA)
    assert ALPHA in shown(answer)
    assert await _count(sqlite_bot) == before + 1
    assert alone == [SGT, PC]  # both on the writer, in a transaction of their own


async def _cancelled_at_each_point(bot: Bot) -> None:
    service = bot.service
    deps = bot_deps(service)
    assert service.reader_engine is not None
    for step in range(40):
        before = await _count(bot)
        task = asyncio.create_task(commands.flags_reply(deps, SGT, ALPHA))
        for _ in range(step):
            await asyncio.sleep(0)
        task.cancel()
        try:
            answer = await task
        except asyncio.CancelledError:
            answer = None
        await asyncio.sleep(0.05)  # a commit under way on the driver's thread ends
        after = await _count(bot)
        if answer is not None:  # answered: only once its entry was committed
            assert ALPHA in shown(answer) and after == before + 1, step
        assert after - before in (0, 1), step
        assert service.quiet.in_flight == 0, step
        assert service.engine.pool.checkedout() == 0, step
        assert service.reader_engine.pool.checkedout() == 0, step
        if service.audit_batcher is not None:
            assert service.audit_batcher._alone == 0, step
        again = await asyncio.wait_for(commands.flags_reply(deps, SGT, ALPHA), 5)
        assert ALPHA in shown(again), step
        assert await _count(bot) == after + 1, step


async def test_sqlite_a_lookup_cancelled_at_any_point_leaves_nothing_behind(sqlite_bot: Bot) -> None:
    await _border_check(sqlite_bot)
    await _cancelled_at_each_point(sqlite_bot)


async def test_postgres_a_lookup_cancelled_at_any_point_leaves_nothing_behind(pg_bot: Bot) -> None:
    await _border_check(pg_bot)
    await _cancelled_at_each_point(pg_bot)
