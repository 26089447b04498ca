"""Review (ninth session) of /flags by reference read beside its requester (lookup.flags.
requester_and_reference, bf12a84): references that differ only in case and hyphens are one compact
reference, so a lookup finds several nominals, of two teams, one with personal data and restricted
markers. With and without the read-ahead, the same answers and the same audit entries, request by
request, for every kind of requester, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

import bot.commands as commands
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.lookup.access import Requester
from casewatch.lookup.flags import ReadAhead
from casewatch.store.models import AuditEntry
from tests.support import envelope, nominal_data
from tests.test_bot import (
    ALPHA,
    CR,
    NOW_TS,
    PC,
    PC_SOUTH,
    SGT,
    STRANGER,
    Bot,
    command_body,
    running_bot,
    slack_headers,
)
from tests.test_flags9_read_ahead import _no_read_ahead

AUDIT_COLUMNS = ("at", "actor", "action", "subject", "purpose", "details", "nominals", "content_hash")
# Three references with ALPHA's compact form (VS0001001): the reference pattern allows each. (Not
# ALPHA in lower case: since the nineteenth session that is ALPHA, model.events.canonical_ref.)
TWINS = ("VS0001001", "VS-00-01001", "V-S-0001001")


async def _seed_twins(bot: Bot) -> None:
    raws = [
        envelope("nominal.upsert", nominal_data(
            surname="Twinson", forenames=f"Test {n}", team="south" if n % 2 else "north",
            offender_manager="PC5678" if n % 2 else "PC1234", home_address=f"{n} Fictional Row",
            markers=[{"code": "XRS", "label": f"Covert tactic {n} (fictional)", "restricted": True}],
        ), visor_ref=ref, id=f"r9-twin-{n}")
        for n, ref in enumerate(TWINS)
    ]
    envelopes, errors = parse_envelopes(raws)
    assert errors == []
    await ingest(bot.service.sessions, envelopes, bot.service.ctx, source="import")


@pytest.fixture
async def twins_bot(db_url: str) -> AsyncIterator[Bot]:
    async with running_bot(db_url) as b:
        await _seed_twins(b)
        yield b


async def _entries_after(bot: Bot, last_id: int) -> tuple[int, list[tuple[Any, ...]]]:
    async with bot.service.sessions() as session:
        rows = list((await session.execute(
            select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id)
        )).scalars())
    return (rows[-1].id if rows else last_id), [tuple(getattr(e, c) for c in AUDIT_COLUMNS) for e in rows]


async def _post(bot: Bot, body: bytes, *, again: bool = False) -> tuple[Any, ...]:
    # again: signed a second later, since the same request twice is a replay (bot.http.ReplayGuard)
    headers = slack_headers(body, ts=NOW_TS + 1 if again else None)
    resp = await bot.client.post("/slack/events", data=body, headers=headers)
    return resp.status, await resp.read()


async def test_several_nominals_of_one_compact_reference_answer_alike(
    twins_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_read = commands.requester_and_reference
    used: list[int] = []

    async def noted(*args: Any) -> tuple[Requester | None, ReadAhead | None]:
        requester, found = await fast_read(*args)
        used.append(len(found.rows) if found is not None else -1)
        return requester, found

    last, _ = await _entries_after(twins_bot, 0)
    for query in (ALPHA, *TWINS, "vs0001001", f"{ALPHA} reason: fictional enquiry"):
        for user in (PC, SGT, PC_SOUTH, CR, STRANGER):
            body = command_body("/flags", query, user)
            monkeypatch.setattr(commands, "requester_and_reference", noted)
            fast = await _post(twins_bot, body)
            last, fast_entries = await _entries_after(twins_bot, last)
            monkeypatch.setattr(commands, "requester_and_reference", _no_read_ahead)
            plain = await _post(twins_bot, body, again=True)
            last, plain_entries = await _entries_after(twins_bot, last)
            assert fast == plain, (query, user)
            assert fast_entries == plain_entries, (query, user)
    assert used.count(4) >= 20  # the read-ahead found all four nominals
