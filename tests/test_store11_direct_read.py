"""casewatch.store.direct_read (issue 17): /flags' reads on PostgreSQL sent by asyncpg itself, their
rows made as SQLAlchemy makes them. Row by row the same column names, values and value types as
through SQLAlchemy's execution; answer by answer the same /flags answers and audit entries with
the switch on and off; a connection lost under a direct read reported as SQLAlchemy reports it
(store.engine.found_connection_gone), so the lookup's retry on a new connection still happens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from casewatch.lookup.access import _BY_SLACK_USER, DEFAULT_CLEARED_ROLES
from casewatch.lookup.flags import (
    _by_compact_ref,
    _by_pnc_tail,
    _by_surname_statement,
    _by_visor_ref,
    _requester_and_view,
)
from casewatch.model.names import name_key
from casewatch.store import direct_read
from casewatch.store.engine import found_connection_gone
from tests.test_bot import ALPHA, CR, PC, SGT, SOUTH, STRANGER, Bot, bot, command_body, slack_headers
from tests.test_slack_request import REQUESTS, _audit_after, _last_audit_id

__all__ = ["bot"]  # the fixture, used here by name


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _cases(dialect: str) -> list[tuple[str, Any, dict[str, Any]]]:
    view = _requester_and_view(dialect, frozenset(DEFAULT_CLEARED_ROLES))
    cases: list[tuple[str, Any, dict[str, Any]]] = []
    for user in (PC, CR, SGT, STRANGER):
        for ref in (ALPHA, SOUTH, "VS-9999999"):
            compact = ref.replace("-", "")
            cases.append((f"view {user} {ref}", view, {"slack_user_id": user, "compact": compact}))
    for cleared in (True, False):
        for ref in (ALPHA, SOUTH, "VS-9999999"):
            by_ref = _by_compact_ref(cleared)
            cases.append((f"by ref {cleared} {ref}", by_ref, {"compact": ref.replace("-", "")}))
    for typed in ("Sampleton", "Nobodyhere"):
        cases.append((f"surname {typed}", _by_surname_statement(False), {"name_key": name_key(typed)}))
    for cleared in (True, False):
        for ref in (ALPHA, SOUTH, "VS-9999999"):
            cases.append((f"by visor_ref {cleared} {ref}", _by_visor_ref(cleared), {"visor_ref": ref}))
    for user in (PC, CR, STRANGER):
        cases.append((f"requester {user}", _BY_SLACK_USER, {"slack_user_id": user}))
    for cleared in (True, False):
        cases.append((f"by PNC tail {cleared}", _by_pnc_tail(cleared), {"pattern": "%12345Z"}))
    return cases


async def test_rows_have_the_same_names_values_and_types(bot: Bot) -> None:
    readers = bot.service.reader_engine
    assert readers is not None
    found = 0
    async with readers.connect() as conn:
        for name, statement, params in _cases(readers.dialect.name):
            direct = await direct_read.fetch(conn, statement, params)
            through = list(await conn.execute(statement, params))
            assert len(direct) == len(through), name
            for mine, theirs in zip(direct, through, strict=True):
                assert tuple(mine._fields) == tuple(theirs._fields), name
                assert tuple(mine) == tuple(theirs), name
                assert [type(v) for v in mine] == [type(v) for v in theirs], name
                found += any(v is not None for v in theirs)
    assert found >= 10  # nominals and requesters were found, not only empty rows


async def test_on_postgresql_the_reads_skip_sqlalchemy(bot: Bot) -> None:
    readers = bot.service.reader_engine
    assert readers is not None
    view = _requester_and_view(readers.dialect.name, frozenset(DEFAULT_CLEARED_ROLES))
    async with readers.connect() as conn:
        with _statements(readers.sync_engine) as seen:
            rows = await direct_read.fetch(conn, view, {"slack_user_id": PC, "compact": "VS0001001"})
    assert rows and rows[0].visor_ref == ALPHA
    # PostgreSQL: asyncpg's own fetch, nothing through SQLAlchemy's execution; SQLite: as before.
    assert seen == ([] if readers.dialect.name == "postgresql" else ["SELECT"])


async def _answers(bot: Bot, requests: list[tuple[str, str, str]]) -> list[Any]:
    out: list[Any] = []
    for command, typed, user in requests:
        before = await _last_audit_id(bot)
        body = command_body(command, typed, user)
        resp = await bot.client.post("/slack/events", data=body, headers=slack_headers(body))
        out.append((resp.status, await resp.read(), await _audit_after(bot, before)))
    return out


async def test_flags_answers_and_audit_entries_agree_with_the_switch_on_and_off(
    bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [
        *REQUESTS,
        ("/flags", "sampleton 03/02/1981", CR),
        ("/flags", f"{ALPHA.lower()}", SGT),
        ("/flags", "VS0001001", CR),
    ]
    monkeypatch.setattr(direct_read, "ENABLED", False)
    plain = await _answers(bot, requests)
    monkeypatch.setattr(direct_read, "ENABLED", True)
    direct = await _answers(bot, requests)
    for (command, typed, user), before, after in zip(requests, plain, direct, strict=True):
        assert after == before, (command, typed, user)
    assert sum(bool(entries) for _, _, entries in direct) >= 15


@pytest.mark.postgres
async def test_a_connection_lost_under_a_direct_read_is_reported_as_sqlalchemy_does(pg_url: str) -> None:
    from casewatch.store.engine import make_engine, make_reader_engine

    engine = make_engine(pg_url)
    readers = make_reader_engine(engine, pool_size=1)
    view = _requester_and_view("postgresql", frozenset(DEFAULT_CLEARED_ROLES))
    try:
        async with readers.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError) as raised:
                await direct_read.fetch(conn, view, {"slack_user_id": PC, "compact": "VS0001001"})
            assert found_connection_gone(raised.value)
        async with readers.connect() as conn:  # the pool connects afresh
            rows = await direct_read.fetch(conn, view, {"slack_user_id": PC, "compact": "VS0001001"})
            assert rows == []  # an empty database: no such officer
    finally:
        await readers.dispose()
        await engine.dispose()
