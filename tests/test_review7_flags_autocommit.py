"""Review (seventh session, issue 17): /flags on PostgreSQL through the autocommit readers
(store.make_reader_engine, bot.commands._read_then_record). An answer with a nominal's flags
must never go out without its audit entry committed, and a lookup must never be audited twice
or answered twice. Proven against a real PostgreSQL server: the server refuses the entry (a
trigger), the server ends the connection in the middle of the entry's statement, and the server
ends every pooled connection while several lookups come at once. All data is fictional.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from bot import render
from bot.http import mount_slack
from casewatch.wiring import bot_deps
from tests.slack_standin import SlackStandIn
from tests.test_bot import (
    ALPHA,
    PC,
    SGT,
    STRANGER,
    Bot,
    command_body,
    post_signed,
    running_bot,
    shown,
    slash,
)

pytestmark = pytest.mark.postgres

_FAIL_ENTRY = """
CREATE FUNCTION review7_refuse_entry() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'review7: entry refused'; END $$ LANGUAGE plpgsql
"""
_SLOW_ENTRY = """
CREATE FUNCTION review7_slow_entry() RETURNS trigger AS $$
BEGIN PERFORM pg_sleep(5); RETURN NEW; END $$ LANGUAGE plpgsql
"""


@pytest.fixture
async def pg_bot(pg_url: str) -> AsyncIterator[Bot]:
    async with running_bot(pg_url) as b:
        yield b


async def _lookups(bot: Bot) -> list[str]:
    return [e.subject for e in await bot.audit("flags.lookup")]


async def _admin(bot: Bot, *statements: str) -> None:
    async with bot.service.engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


async def _reader_pids(bot: Bot) -> set[int]:
    async with bot.service.engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ))
        return {int(r[0]) for r in rows}


async def test_an_entry_the_server_refuses_is_no_answer_and_no_entry(pg_bot: Bot) -> None:
    assert pg_bot.service.reader_engine is not None
    await _admin(
        pg_bot, _FAIL_ENTRY,
        "CREATE TRIGGER review7_refuse BEFORE INSERT ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION review7_refuse_entry()",
    )
    try:
        answer = await slash(pg_bot, "/flags", ALPHA, user=SGT)
        refusal = await slash(pg_bot, "/flags", ALPHA, user=STRANGER)
    finally:
        await _admin(
            pg_bot, "DROP TRIGGER review7_refuse ON audit_log", "DROP FUNCTION review7_refuse_entry()"
        )
    assert answer["text"] == render.FAILURE and ALPHA not in shown(answer)
    assert ALPHA not in shown(refusal)
    assert await _lookups(pg_bot) == []
    # The readers' connections are fine afterwards: the next lookup answers and is audited once.
    again = await slash(pg_bot, "/flags", ALPHA, user=SGT)
    assert ALPHA in shown(again)
    assert await _lookups(pg_bot) == [ALPHA]


async def test_a_connection_ended_during_the_entry_gives_no_answer(pg_bot: Bot) -> None:
    """The server ends the reader's connection while its entry's statement runs (autocommit: the
    statement is its own transaction, so it is rolled back): the officer gets the apology, never
    the flags, and the lookup is not run again behind their back (one attempt, no entry)."""
    await _admin(
        pg_bot, _SLOW_ENTRY,
        "CREATE TRIGGER review7_slow BEFORE INSERT ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION review7_slow_entry()",
    )
    ended: list[int] = []

    async def end_the_entrys_connection() -> None:
        async with pg_bot.service.engine.connect() as conn:
            for _ in range(200):
                rows = list(await conn.execute(text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND query LIKE '%%new_entry%%' AND state = 'active'"
                )))
                await conn.commit()  # pg_stat_activity is one snapshot a transaction
                if rows:
                    ended.append(int(rows[0][0]))
                    await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": ended[0]})
                    return
                await asyncio.sleep(0.02)

    try:
        killer = asyncio.create_task(end_the_entrys_connection())
        answer = await slash(pg_bot, "/flags", ALPHA, user=SGT)
        await killer
    finally:
        await _admin(
            pg_bot, "DROP TRIGGER review7_slow ON audit_log", "DROP FUNCTION review7_slow_entry()"
        )
    assert ended, "the entry's statement was never seen running"
    assert ALPHA not in shown(answer) and answer["text"] == render.FAILURE
    assert await _lookups(pg_bot) == []
    again = await slash(pg_bot, "/flags", ALPHA, user=SGT)
    assert ALPHA in shown(again)
    assert await _lookups(pg_bot) == [ALPHA]


async def test_every_pooled_connection_ended_while_lookups_come_at_once(pg_bot: Bot) -> None:
    """A server restart ends every idle connection of the readers' pool; lookups that come at once
    then each find a dead connection. Each must still answer, and each be audited exactly once."""
    users = [SGT, PC, SGT, PC]
    first = await asyncio.gather(*(slash(pg_bot, "/flags", ALPHA, user=u) for u in users))
    assert all(ALPHA in shown(a) for a in first)
    before = len(await _lookups(pg_bot))
    assert before == len(users)
    pids = await _reader_pids(pg_bot)
    assert len(pids) >= 2
    async with pg_bot.service.engine.connect() as conn:
        for pid in pids:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await asyncio.sleep(0.2)
    again = await asyncio.gather(*(slash(pg_bot, "/flags", ALPHA, user=u) for u in users))
    assert [ALPHA in shown(a) for a in again] == [True] * len(users), [a.get("text") for a in again]
    assert len(await _lookups(pg_bot)) == before + len(users)


async def test_a_strangers_refusal_is_audited_on_the_readers(pg_bot: Bot) -> None:
    answer = await slash(pg_bot, "/flags", ALPHA, user=STRANGER)
    assert answer["text"] == render.REFUSAL and ALPHA not in shown(answer)
    assert await _lookups(pg_bot) == []
    refusals = [(e.actor, e.subject) for e in await pg_bot.audit("slack.refused")]
    assert refusals == [(f"slack:{STRANGER}", "/flags")]


async def test_a_late_answer_dropped_for_a_foreign_response_url_is_still_audited_once(pg_bot: Bot) -> None:
    """The late path on the autocommit readers: the answer is not ready within the budget, the
    response URL is not Slack's, so the answer is dropped (the officer is told to try again);
    the lookup still finishes and is audited exactly once, and the foreign address gets nothing."""
    async with SlackStandIn() as foreign:
        app = web.Application()
        deps = replace(bot_deps(pg_bot.service), answer_budget_seconds=0)
        assert deps.lookup_readers is not None
        mount_slack(app, pg_bot.service.ctx, pg_bot.service.sessions, deps=deps)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            body = command_body("/flags", ALPHA, SGT, response_url=foreign.url + "response.slow")
            resp = await post_signed(client, body)
            assert resp.status == 200
            assert await resp.json() == {"text": render.TRY_AGAIN, "response_type": "ephemeral"}
            for _ in range(100):
                if await _lookups(pg_bot):
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            assert foreign.calls == []
    assert await _lookups(pg_bot) == [ALPHA]
