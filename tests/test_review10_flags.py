"""Review (tenth session) of /flags by reference read beside its requester (ninth session,
lookup.flags.requester_and_reference, bf12a84), as an attacker and as the officers relying on it:

- hostile query texts (quotes, SQL's LIKE and comment characters, NUL, invisible and full-width
  characters, a reference hidden behind a zero-width space, very long text, a reason with
  markup): with and without the read-ahead, the same answer and the same audit entries, request
  by request, for every kind of requester;
- a requester whose roles, team or Slack identity change between requests (demoted, promoted,
  moved to another team, their Slack id given to another officer): each answer is the plain
  path's for the requester as the directory has them at that moment; the personal columns and
  restricted markers reach only a requester cleared at that moment.

SQLite and PostgreSQL (the nominal REF of tests/test_flags_control_room has personal data and a
restricted marker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, update

import bot.commands as commands
from casewatch.store.models import AuditEntry, Officer
from tests.test_bot import ALPHA, CR, PC, PC_SOUTH, SGT, STRANGER, Bot, command_body, running_bot, slash
from tests.test_flags9_read_ahead import _entries_after, _no_read_ahead, _post
from tests.test_flags_control_room import ADDRESS, CONDITION_1, PROHIBITION, REF, ZONE_1, running
from tests.test_review10_audit import index_mismatches

USERS = (PC, SGT, CR, PC_SOUTH, STRANGER)
# The personal columns and the restricted marker's label: only for a requester cleared for them.
PERSONAL = (ADDRESS, CONDITION_1, ZONE_1, PROHIBITION, "Covert tactic (fictional)")
COMPACT = REF.replace("-", "")
HOSTILE_TEXTS = [
    f"{REF}'--", f'{REF}"', f"{REF};DROP TABLE nominals", "VS%", "VS-000100_", "%", "_", "'", '"',
    f"{REF[:3]}\u200b{REF[3:]}", f"\ufeff{REF}",
    "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in REF),  # full-width
    f"{REF}\u0000", f"{REF} " + " " * 2000, "V" * 5000, f"{REF.lower()}", f"-{COMPACT}-",
    f"{REF} reason: <script>alert(1)</script> & {{\"json\": true}}", f"{REF} reason: ", f"{REF}\nreason: x",
    f"{REF} reason: {'x' * 3000}", f"{REF} {REF}", f"{COMPACT}/../{COMPACT}",
]


@pytest.fixture
async def cr_bot(db_url: str) -> AsyncIterator[Bot]:
    async with running(db_url) as b:
        yield b


async def _both_ways(bot: Bot, text: str, user: str, patch: pytest.MonkeyPatch, last: int) -> tuple[Any, int]:
    """The request with the read-ahead, then without: the answers and audit entries compared."""
    body = command_body("/flags", text, user)
    fast = await _post(bot, body)
    last, fast_entries = await _entries_after(bot, last)
    with patch.context() as plain_path:
        plain_path.setattr(commands, "requester_and_reference", _no_read_ahead)
        plain = await _post(bot, body, again=True)
    last, plain_entries = await _entries_after(bot, last)
    assert fast == plain, (text[:80], user)
    assert fast_entries == plain_entries, (text[:80], user)
    return fast, last


async def test_hostile_texts_answer_as_the_plain_path(cr_bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    last, _ = await _entries_after(cr_bot, 0)
    shown_personal = 0
    for text in HOSTILE_TEXTS:
        for user in USERS:
            answer, last = await _both_ways(cr_bot, text, user, monkeypatch, last)
            if any(p.encode() in answer[2] for p in PERSONAL):
                assert user in (SGT, CR), (text[:80], user)
                shown_personal += 1
    assert shown_personal >= 4  # the plain reference's forms did find the nominal for the cleared
    # Each entry's nominal index is its own (whatever path wrote the entries).
    assert await index_mismatches(cr_bot.service.sessions) == []


async def _set_officer(bot: Bot, officer_id: str, **values: Any) -> None:
    async with bot.service.sessions() as session, session.begin():
        await session.execute(update(Officer).where(Officer.id == officer_id).values(**values))


async def test_a_requester_changed_between_requests_gets_what_they_are_now(
    cr_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    last, _ = await _entries_after(cr_bot, 0)

    async def ask(user: str, text: str = REF) -> bytes:
        nonlocal last
        answer, last = await _both_ways(cr_bot, text, user, monkeypatch, last)
        return bytes(answer[2])

    def personal(answer: bytes) -> bool:
        return any(p.encode() in answer for p in PERSONAL)

    assert personal(await ask(SGT))
    await _set_officer(cr_bot, "SGT0001", roles=["officer"])  # demoted
    assert not personal(await ask(SGT))
    await _set_officer(cr_bot, "PC1234", roles=["officer", "supervisor"])  # promoted
    assert personal(await ask(PC))
    await _set_officer(cr_bot, "PC1234", roles=["officer"])
    assert not personal(await ask(PC))
    # An officer of the other team: no personal data, with a reason or without; made a supervisor
    # there (force-wide and cleared), theirs to see.
    assert not personal(await ask(PC_SOUTH))
    assert not personal(await ask(PC_SOUTH, f"{REF} reason: fictional enquiry"))
    await _set_officer(cr_bot, "PC5678", roles=["officer", "supervisor"])
    assert personal(await ask(PC_SOUTH))
    # Moved to the other team: the nominal is another team's now (a reason is asked for).
    await _set_officer(cr_bot, "PC1234", team="south")
    moved = await ask(PC)
    assert not personal(moved)
    assert not personal(await ask(PC, f"{REF} reason: fictional enquiry"))
    # A Slack id given to another officer: the answer is that officer's.
    await _set_officer(cr_bot, "PC1234", slack_user_id=None)
    await _set_officer(cr_bot, "CR0001", slack_user_id=PC)
    assert personal(await ask(PC))
    await _set_officer(cr_bot, "CR0001", roles=[])  # no role at all
    assert not personal(await ask(PC))
    # An empty roles value and an officer whose row lost its Slack id: as the plain path.
    await _set_officer(cr_bot, "SGT0001", slack_user_id=None)
    assert not personal(await ask(SGT))
    assert await index_mismatches(cr_bot.service.sessions) == []


async def test_lookups_at_once_answer_and_audit_as_the_plain_path(
    cr_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty lookups gathered at once (on SQLite they share the audit's group commits, one of them
    perhaps the writer alone; on PostgreSQL each on an autocommit reader), with the read-ahead and
    without: the same answers and the same audit entries (as multisets: the order of commits is
    the order of arrival), every entry's nominal index its own."""
    asks = [(text, user) for text in (REF, REF.lower(), f"{REF} reason: fictional enquiry", "VS-9999999")
            for user in USERS]

    async def round_of_asks() -> tuple[list[Any], list[Any]]:
        last, _ = await _entries_after(cr_bot, 0)
        answers = await asyncio.gather(*(_post(cr_bot, command_body("/flags", t, u)) for t, u in asks))
        _, entries = await _entries_after(cr_bot, last)
        neutral = sorted(repr(e[1:]) for e in entries)  # without the time of writing
        return sorted(repr(a) for a in answers), neutral

    fast = await round_of_asks()
    with monkeypatch.context() as plain_path:
        plain_path.setattr(commands, "requester_and_reference", _no_read_ahead)
        plain = await round_of_asks()
    assert fast == plain
    assert len(fast[1]) == len(asks)
    assert await index_mismatches(cr_bot.service.sessions) == []


@pytest.fixture
async def seeded_bot(db_url: str) -> AsyncIterator[Bot]:
    async with running_bot(db_url) as b:
        yield b


async def test_every_command_s_entries_keep_their_own_index(seeded_bot: Bot) -> None:
    """Chat commands that write (acknowledgements, with an outcome or none, a stranger's refusal)
    and that read (/tasks, /flags of each kind) in turn, some gathered at once: whichever way each
    entry was written (its own statements, riding with the COMMIT, a shared group commit), every
    entry's nominal index is its own."""
    bot = seeded_bot
    alert = bot.alerts["pc_high"]
    for text, user in ((alert, PC), (alert, SGT), (alert, STRANGER), ("A-ZZZZZZ", PC)):
        await slash(bot, "/ack", text, user=user)
    await slash(bot, "/tasks", user=PC)
    await asyncio.gather(*(slash(bot, "/flags", q, user=u) for q in (ALPHA, "Sampleton", "VS-9999999")
                           for u in (PC, SGT, STRANGER)))
    await slash(bot, "/tasks", user=STRANGER)
    assert await index_mismatches(bot.service.sessions) == []
    async with bot.service.sessions() as session:
        named = (await session.execute(select(AuditEntry.nominals))).scalars().all()
    assert any(n for n in named)  # entries about nominals were written and checked
