"""/flags by reference reads the nominal in the requester's statement (lookup.flags.
requester_and_reference; issue 17, ninth session: one statement fewer a lookup). The personal
columns and restricted markers are chosen in that statement by the requester's roles, and the
lookup uses what it read only when Python's reading of the roles (Requester.cleared_for_restricted)
agrees. The same requests with and without the read-ahead give the same answers and the same
audit entries, request by request, on both databases and on every path a lookup takes (SQLite:
the writer alone, the readers with the group commit; PostgreSQL: the autocommit readers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import bot.commands as commands
from casewatch.lookup import DEFAULT_CLEARED_ROLES, requester_and_reference, requester_by_slack_user
from casewatch.lookup.access import Requester
from casewatch.lookup.flags import ReadAhead
from casewatch.store.models import AuditEntry
from tests.test_bot import (
    ALPHA,
    CR,
    NOW_TS,
    PC,
    SGT,
    SOUTH,
    STRANGER,
    Bot,
    command_body,
    running_bot,
    slack_headers,
)
from tests.test_flags7_autocommit import _never_alone
from tests.test_flags_alone import REQUESTS, statements
from tests.test_flags_control_room import ADDRESS, CONDITION_1, PROHIBITION, REF, ZONE_1, running

AUDIT_COLUMNS = ("at", "actor", "action", "subject", "purpose", "details", "nominals", "content_hash")

# Every outcome (tests/test_flags_alone), and more ways to ask by reference: lower case, without
# the hyphen, a reference no nominal has, an identifier that is a PNC ID, a reason, a stranger.
MORE = [
    ("/flags", ALPHA.lower(), PC),
    ("/flags", ALPHA.replace("-", ""), SGT),
    ("/flags", "VS-9999999", PC),
    ("/flags", f"{ALPHA} reason: fictional enquiry", CR),
    ("/flags", f"{SOUTH} reason: fictional enquiry", SGT),
    ("/flags", "1980/0012345Z", PC),
    ("/flags", "VS-9999999", STRANGER),
]


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


async def _no_read_ahead(
    session: AsyncSession, slack_user_id: str, _text: str, _cleared_roles: Any = DEFAULT_CLEARED_ROLES
) -> tuple[Requester | None, ReadAhead | None]:
    """The plain path: the requester alone, then the lookup reads the view itself."""
    return await requester_by_slack_user(session, slack_user_id), None


async def _post(bot: Bot, body: bytes, *, again: bool = False) -> tuple[Any, ...]:
    # again: signed a second later, since the same request twice is a replay (bot.http.ReplayGuard)
    headers = slack_headers(body, ts=NOW_TS + 1 if again else None)
    resp = await bot.client.post("/slack/events", data=body, headers=headers)
    return resp.status, resp.headers.get("Content-Type"), await resp.read()


@pytest.mark.parametrize("path", ["alone", "readers"])
async def test_the_same_answers_and_entries_with_and_without_the_read_ahead(
    any_bot: Bot, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = any_bot
    batcher = bot.service.audit_batcher
    if path == "readers":
        if batcher is None:
            pytest.skip("PostgreSQL has one path (the autocommit readers): compared under 'alone'")
        monkeypatch.setattr(batcher, "alone", _never_alone)
    fast_read = commands.requester_and_reference
    read_ahead_used: list[bool] = []

    async def noted(*args: Any) -> tuple[Requester | None, ReadAhead | None]:
        requester, found = await fast_read(*args)
        read_ahead_used.append(found is not None)
        return requester, found

    last, _ = await _entries_after(bot, 0)
    compared = 0
    for command, query, user in [*REQUESTS, *MORE]:
        body = command_body(command, query, user)
        monkeypatch.setattr(commands, "requester_and_reference", noted)
        fast = await _post(bot, body)
        last, fast_entries = await _entries_after(bot, last)
        monkeypatch.setattr(commands, "requester_and_reference", _no_read_ahead)
        plain = await _post(bot, body, again=True)
        last, plain_entries = await _entries_after(bot, last)
        assert fast == plain, body
        assert fast_entries == plain_entries, body
        compared += len(fast_entries)
    assert compared >= 18
    # The read-ahead was used (by reference, found or not, the requester known) and not (other queries).
    assert read_ahead_used.count(True) >= 9 and read_ahead_used.count(False) >= 4


async def test_a_lookup_by_reference_is_one_statement_then_the_entry(any_bot: Bot) -> None:
    service = any_bot.service
    engine = service.engine if service.audit_batcher is not None else service.reader_engine
    assert engine is not None
    with statements(engine) as seen:
        answer = await _post(any_bot, command_body("/flags", ALPHA, SGT))
    assert answer[0] == 200 and ALPHA.encode() in answer[2]
    # The entry and its index handed to the driver (tenth session): on SQLite with the COMMIT, on
    # PostgreSQL sent by asyncpg; neither through SQLAlchemy's execution. On PostgreSQL the read
    # too is sent by asyncpg (store.direct_read, eleventh session).
    on_postgres = engine.dialect.name == "postgresql"
    assert seen == ([] if on_postgres else ["SELECT"])
    with statements(engine) as by_surname:
        await _post(any_bot, command_body("/flags", "Sampleton", PC))
    # The requester, then the candidates (both by asyncpg on PostgreSQL).
    assert by_surname[:2] == ([] if on_postgres else ["SELECT", "SELECT"])


@pytest.fixture
async def cr_bot(db_url: str) -> AsyncIterator[Bot]:
    async with running(db_url) as b:
        yield b


async def test_personal_data_leaves_the_database_only_for_a_cleared_requester(cr_bot: Bot) -> None:
    async with cr_bot.service.sessions() as session, session.begin():
        pc, pc_read = await requester_and_reference(session, PC, REF)
        cr, cr_read = await requester_and_reference(session, CR, REF)
        stranger = await requester_and_reference(session, STRANGER, REF)
    assert pc is not None and cr is not None and stranger == (None, None)
    assert pc_read is not None and cr_read is not None
    assert not pc_read.cleared and cr_read.cleared
    (pc_row,), (cr_row,) = pc_read.rows, cr_read.rows
    for column in ("home_address", "licence_conditions", "exclusion_zones", "orders"):
        assert getattr(pc_row, column) is None, column
    assert all(not restricted for _, _, restricted in pc_row.markers)
    shown_to_pc = repr(tuple(pc_row))
    for personal in (ADDRESS, CONDITION_1, ZONE_1, PROHIBITION, "Covert tactic"):
        assert personal not in shown_to_pc, personal
    shown_to_cr = repr(tuple(cr_row))
    for personal in (ADDRESS, CONDITION_1, ZONE_1, PROHIBITION, "Covert tactic"):
        assert personal in shown_to_cr, personal


async def test_roles_read_otherwise_in_sql_fall_back_to_the_plain_read(
    cr_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the statement's reading of the roles ever differed from Python's, nothing is read ahead
    (the lookup reads the view itself, for the clearance Python decides)."""
    async with cr_bot.service.sessions() as session, session.begin():
        # Cleared roles the statement has (admin and the rest), Python not: they disagree for CR.
        _, agreed = await requester_and_reference(session, CR, REF, DEFAULT_CLEARED_ROLES)
        monkeypatch.setattr(Requester, "cleared_for_restricted", lambda self, roles=(): False)
        requester, disagreed = await requester_and_reference(session, CR, REF, DEFAULT_CLEARED_ROLES)
    assert agreed is not None and agreed.cleared
    assert requester is not None and disagreed is None


async def test_the_answer_shown_is_the_plain_one_for_each_role(
    cr_bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user, cleared in ((PC, False), (CR, True), (SGT, True)):
        body = command_body("/flags", REF, user)
        fast = await _post(cr_bot, body)
        monkeypatch.setattr(commands, "requester_and_reference", _no_read_ahead)
        plain = await _post(cr_bot, body, again=True)
        monkeypatch.undo()
        assert fast == plain, user
        assert (ADDRESS.encode() in fast[2]) is cleared, user
