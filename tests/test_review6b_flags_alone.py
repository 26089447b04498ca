"""Review (sixth session, R2) of /flags on SQLite going alone (dff64da, AuditBatcher.alone in
casewatch/audit/batch.py, bot/commands.py): a lookup that finds the audit batcher idle reads and
audits on the writer in one transaction. Attacks, each found to hold: a second lookup while one
holds the writer reads beside it and its entry waits for the writer, never both alone; a lookup
cancelled while it holds the writer (its client gone) leaves no entry, no transaction and the
batcher free (the next lookup goes alone, an ingest writes at once); a lookup whose audit entry
the database refuses answers the apology, commits nothing, and leaves the batcher free; nothing
answers before its entry is committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import func, select

import bot.commands as commands
from bot import render
from casewatch.audit.batch import AuditBatcher
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.models import AuditEntry
from casewatch.wiring import bot_deps
from tests.support import envelope, nominal_data
from tests.test_bot import ALPHA, PC, SGT, Bot, running_bot, shown


@pytest.fixture
async def bot(sqlite_url: str) -> AsyncIterator[Bot]:
    async with running_bot(sqlite_url) as b:
        yield b


def _batcher(bot: Bot) -> AuditBatcher:
    batcher = bot.service.audit_batcher
    assert batcher is not None
    return batcher


@contextmanager
def _paths(batcher: AuditBatcher) -> Iterator[list[bool]]:
    """Which way each lookup went (True: alone on the writer)."""
    seen: list[bool] = []
    original = batcher.alone

    @contextmanager
    def noting() -> Iterator[bool]:
        with original() as alone:
            seen.append(alone)
            yield alone

    batcher.alone = noting  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        batcher.alone = original  # type: ignore[method-assign]


@contextmanager
def _held_lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[asyncio.Event, asyncio.Event]]:
    """The first lookup stops inside its transaction (after its reads began) until released."""
    entered, release = asyncio.Event(), asyncio.Event()
    real = commands.look_up_flags  # type: ignore[attr-defined]
    calls = 0

    async def held(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            entered.set()
            await release.wait()
        return await real(*args, **kwargs)

    monkeypatch.setattr(commands, "look_up_flags", held)
    yield entered, release


async def _entries(bot: Bot) -> list[tuple[str, str]]:
    async with bot.service.sessions() as session:
        rows = await session.execute(select(AuditEntry.actor, AuditEntry.action).order_by(AuditEntry.id))
        return [(str(a), str(b)) for a, b in rows]


async def _count(bot: Bot) -> int:
    """Read beside the writer (it may be held)."""
    assert bot.service.readers is not None
    async with bot.service.readers() as session:
        return int((await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


async def test_review_a_second_lookup_reads_beside_one_alone_and_answers_after_its_commit(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    deps = bot_deps(bot.service)
    batcher = _batcher(bot)
    before = await _count(bot)
    with _paths(batcher) as paths, _held_lookups(monkeypatch) as (entered, release):
        first = asyncio.create_task(commands.flags_reply(deps, SGT, ALPHA))
        await entered.wait()
        second = asyncio.create_task(commands.flags_reply(deps, PC, ALPHA))
        await asyncio.sleep(0.3)
        # The second read beside the writer, and waits for its entry's commit: the writer is held.
        assert paths == [True, False]
        assert not second.done()
        assert await _count(bot) == before
        release.set()
        answers = await asyncio.gather(first, second)
    for answer in answers:
        assert ALPHA in shown(answer)
    assert await _count(bot) >= before + 2
    assert batcher._alone == 0 and batcher._writer is None


async def test_review_a_lookup_cancelled_on_the_writer_leaves_it_free(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    deps = bot_deps(bot.service)
    batcher = _batcher(bot)
    before = await _entries(bot)
    with _paths(batcher) as paths, _held_lookups(monkeypatch) as (entered, _release):
        task = asyncio.create_task(commands.flags_reply(deps, SGT, ALPHA))
        await entered.wait()
        assert batcher._alone == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert batcher._alone == 0
    assert await _entries(bot) == before  # nothing of the cancelled lookup committed
    # The writer is free at once: an ingest commits, and the next lookup goes alone.
    raws = [envelope("nominal.upsert", nominal_data(), id="review6b-after-cancel", visor_ref="VS-0009901")]
    envelopes, errors = parse_envelopes(raws)
    assert errors == []
    async with asyncio.timeout(5):
        result = await ingest(bot.service.sessions, envelopes, bot.service.ctx, source="test")
    assert result.accepted == 1
    with _paths(batcher) as paths:
        answer = await commands.flags_reply(deps, SGT, ALPHA)
    assert paths == [True]
    assert ALPHA in shown(answer)
    assert len(await _entries(bot)) == len(before) + 1


async def test_review_a_refused_entry_alone_answers_the_apology_and_frees_the_batcher(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    deps = bot_deps(bot.service)
    batcher = _batcher(bot)
    before = await _entries(bot)
    # Alone, the lookup writes its entry on the writer's connection (bot.commands.
    # _alone_on_the_writer, fourteenth session: no session).
    real_sink = commands.connection_sink  # type: ignore[attr-defined]

    def refusing(connection: Any, ctx: Any) -> Any:
        sink = real_sink(connection, ctx)

        async def record(**entry: Any) -> None:
            await sink(**entry)
            raise RuntimeError("refused by the database (stand-in)")

        return record

    monkeypatch.setattr(commands, "connection_sink", refusing)
    with _paths(batcher) as paths:
        answer = await commands.flags_reply(deps, SGT, ALPHA)
    assert paths == [True]
    assert render.FAILURE in shown(answer) and ALPHA not in shown(answer)
    assert await _entries(bot) == before  # its entry rolled back with its transaction
    monkeypatch.setattr(commands, "connection_sink", real_sink)
    with _paths(batcher) as paths:
        answer = await commands.flags_reply(deps, SGT, ALPHA)
    assert paths == [True] and ALPHA in shown(answer)
    assert len(await _entries(bot)) == len(before) + 1
