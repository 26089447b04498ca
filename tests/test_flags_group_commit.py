"""/flags in the running service on SQLite reads through the read-only connections and commits its
audit entry through the shared group commit (issue 17; a lookup that finds the writer idle has it
to itself instead: tests/test_flags_alone.py): concurrent answers share commits, every
answer's entry is committed by the time its answer is sent, and a stranger's refusal is audited
the same way. On PostgreSQL a lookup has no group commit: it reads and audits on the readers'
autocommit connections, its entry its last statement (tests/test_flags7_autocommit.py). Signed
requests through the real Bolt path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select

from casewatch.store.models import AuditEntry
from tests.test_bot import ALPHA, PC, SGT, STRANGER, Bot, running_bot, shown, slash


@pytest.fixture
async def bot(sqlite_url: str) -> AsyncIterator[Bot]:
    async with running_bot(sqlite_url) as b:
        yield b


@pytest.mark.postgres
async def test_on_postgres_a_lookup_audits_without_the_group_commit(pg_url: str) -> None:
    async with running_bot(pg_url) as pg:
        assert pg.service.readers is not None and pg.service.audit_batcher is None
        answer = await slash(pg, "/flags", ALPHA, user=SGT)
        assert ALPHA in shown(answer)
        assert [e.nominals for e in await pg.audit("flags.lookup")] == [[ALPHA]]


async def test_concurrent_lookups_share_commits_and_each_is_audited(bot: Bot) -> None:
    assert bot.service.readers is not None and bot.service.audit_batcher is not None
    batcher = bot.service.audit_batcher
    batches: list[int] = []
    commit = batcher._commit

    async def counted(batch: list[Any]) -> None:
        batches.append(len(batch))
        await commit(batch)

    batcher._commit = counted  # type: ignore[method-assign]
    alone: list[bool] = []  # a lookup that finds the writer idle has it to itself (batcher.alone)
    take_writer = batcher.alone

    @contextmanager
    def noted() -> Iterator[bool]:
        with take_writer() as free:
            alone.append(free)
            yield free

    batcher.alone = noted  # type: ignore[method-assign]
    answers = await asyncio.gather(*(slash(bot, "/flags", ALPHA, user=SGT) for _ in range(12)))
    assert all(ALPHA in shown(a) for a in answers)
    lookups = await bot.audit("flags.lookup")
    assert len(lookups) == 12 and all(e.nominals == [ALPHA] and e.actor == "SGT0001" for e in lookups)
    # The first had the idle writer to itself; the rest were committed together, several to a
    # transaction.
    assert alone[0] and sum(batches) == alone.count(False) and len(batches) < sum(batches)


async def test_each_answer_goes_out_after_its_audit_entry_is_committed(bot: Bot) -> None:
    """Seen from another connection as soon as the answer arrives: committed, not pending."""
    for _ in range(3):
        before = len(await bot.audit("flags.lookup"))
        await slash(bot, "/flags", ALPHA, user=PC)
        async with bot.service.sessions() as session:
            count = len(list((await session.execute(
                select(AuditEntry.id).where(AuditEntry.action == "flags.lookup")
            )).scalars()))
        assert count == before + 1


async def test_a_strangers_refusal_is_audited_through_the_same_path(bot: Bot) -> None:
    answer = await slash(bot, "/flags", ALPHA, user=STRANGER)
    assert ALPHA not in shown(answer)
    refused = await bot.audit("slack.refused")
    assert [(e.actor, e.subject) for e in refused] == [(f"slack:{STRANGER}", "/flags")]
