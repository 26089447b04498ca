"""Review (seventh session, issue 17): on SQLite an audit entry's nominal index rows ride with the
transaction's next trip, usually its COMMIT (commit 3da2b08, sqlite_driver.defer_next_statement).
If the database refuses those rows, the entry must not be committed without them and the answer
must not go out: the officer gets the apology, the log holds neither the entry nor its index, and
the chain verifies. Real SQLite, a trigger as the refusal; alone (one transaction on the writer)
and through the group commit (several lookups at once). Fictional data only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from bot import render
from casewatch.audit import hasher_for
from casewatch.audit.seal import seal_pending
from casewatch.audit.verify import verify
from tests.test_bot import ALPHA, PC, SGT, Bot, running_bot, shown, slash

REFUSE_ALPHAS_INDEX = (
    "CREATE TRIGGER review7_refuse_index BEFORE INSERT ON audit_nominals "
    f"WHEN NEW.visor_ref = '{ALPHA}' BEGIN SELECT RAISE(ABORT, 'review7'); END"
)


@pytest.fixture
async def sqlite_bot(sqlite_url: str) -> AsyncIterator[Bot]:
    async with running_bot(sqlite_url) as b:
        yield b


async def _state(bot: Bot) -> tuple[int, int]:
    async with bot.service.engine.connect() as conn:
        entries = (await conn.execute(text(
            "SELECT count(*) FROM audit_log WHERE action = 'flags.lookup'"
        ))).scalar_one()
        index = (await conn.execute(text(
            "SELECT count(*) FROM audit_nominals WHERE visor_ref = :ref"
        ), {"ref": ALPHA})).scalar_one()
    return int(entries), int(index)


@pytest.mark.parametrize("at_once", [1, 4])
async def test_a_refused_index_row_is_no_answer_and_no_entry(sqlite_bot: Bot, at_once: int) -> None:
    bot = sqlite_bot
    assert bot.service.engine.dialect.name == "sqlite"
    entries_before, index_before = await _state(bot)
    async with bot.service.engine.begin() as conn:
        await conn.execute(text(REFUSE_ALPHAS_INDEX))
    try:
        answers = await asyncio.gather(
            *(slash(bot, "/flags", ALPHA, user=SGT if n % 2 else PC) for n in range(at_once))
        )
    finally:
        async with bot.service.engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER review7_refuse_index"))
    assert all(ALPHA not in shown(a) and a["text"] == render.FAILURE for a in answers), answers
    assert await _state(bot) == (entries_before, index_before)
    again = await slash(bot, "/flags", ALPHA, user=SGT)
    assert ALPHA in shown(again)
    assert await _state(bot) == (entries_before + 1, index_before + 1)
    await seal_pending(bot.service.sessions, bot.service.ctx)
    assert (await verify(bot.service.sessions, hasher_for(bot.service.ctx))).intact
