"""`casewatch chronology REF` (issue 16): one nominal's timeline from events and the audit log
(entries written before the nominal index included), never an event's payload; text and JSON
exactly; the view audited for the next one; exit codes. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.audit.chronology import render_json, render_text, timeline
from casewatch.audit.export import day_start
from casewatch.cli import main
from casewatch.clock import FixedClock
from casewatch.commands import chronology
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import AuditEntry
from tests.test_audit_export import NOW, REF, _config, _seeded, seed

LONDON = ZoneInfo("Europe/London")

TEXT = """\
Chronology of VS-0000016, times in Europe/London, generated 2026-11-23 09:00:00 GMT
9 items
2026-06-14 13:00:05 BST  event.received              nominal.upsert (occurred 2026-06-14T12:00:00.000000Z)  via api  [ev-016-1]
2026-06-14 23:59:59 BST  flags.lookup        PC0101  /flags lookup: found  why: slack /flags  [audit 1]
2026-06-15 00:30:00 BST  alert.opened        system  alert opened (high)  why: alert opened: notification.missed  [A-AAAAAA]
2026-06-15 09:00:00 BST  delivery.sent       owner   delivered (opened, attempt 1)  via slack U0FICT001  why: notification.missed  [A-AAAAAA]
2026-06-15 23:59:59 BST  alert.acknowledged  PC0101  acknowledged: =HYPERLINK("http://evil.example")  via slack_command  why: notification.missed  [A-AAAAAA]
2026-06-16 00:00:00 BST  alert.resolved      system  resolved  why: notification received  [A-AAAAAA]
2026-11-19 09:01:00 GMT  event.received              notification.received (occurred 2026-11-19T09:00:00.000000Z)  via import  [ev-016-2]
2026-11-20 10:00:00 GMT  flags.lookup        PC0202  /flags lookup: found  why: -burglary nearby  [audit 6]
2026-11-21 09:00:00 GMT  delivery.sent       spoc    delivered (opened, attempt 1)  via email north.spoc@force.example  why: visit.overdue  [A-BBBBBB]
"""  # noqa: E501


def _item(
    at: str, kind: str, what: str, who: str = "", how: str = "", why: str = "", ref: str = ""
) -> dict[str, str]:
    return {"at": at, "kind": kind, "what": what, "who": who, "how": how, "why": why, "ref": ref}


ITEMS = [
    _item("2026-06-14T12:00:05.000000Z", "event.received",
          "nominal.upsert (occurred 2026-06-14T12:00:00.000000Z)", how="api", ref="ev-016-1"),
    _item("2026-06-14T22:59:59.000000Z", "flags.lookup", "/flags lookup: found", "PC0101", why="slack /flags",
          ref="audit 1"),
    _item("2026-06-14T23:30:00.000000Z", "alert.opened", "alert opened (high)", "system",
          why="alert opened: notification.missed", ref="A-AAAAAA"),
    _item("2026-06-15T08:00:00.000000Z", "delivery.sent", "delivered (opened, attempt 1)", "owner",
          "slack U0FICT001", "notification.missed", "A-AAAAAA"),
    _item("2026-06-15T22:59:59.999999Z", "alert.acknowledged", 'acknowledged: =HYPERLINK("http://evil.example")',
          "PC0101", "slack_command", "notification.missed", "A-AAAAAA"),
    _item("2026-06-15T23:00:00.000000Z", "alert.resolved", "resolved", "system", why="notification received",
          ref="A-AAAAAA"),
    _item("2026-11-19T09:01:00.000000Z", "event.received",
          "notification.received (occurred 2026-11-19T09:00:00.000000Z)", how="import", ref="ev-016-2"),
    _item("2026-11-20T10:00:00.000000Z", "flags.lookup", "/flags lookup: found", "PC0202",
          why="-burglary nearby", ref="audit 6"),
    _item("2026-11-21T09:00:00.000000Z", "delivery.sent", "delivered (opened, attempt 1)", "spoc",
          "email north.spoc@force.example", "visit.overdue", "A-BBBBBB"),
]


async def test_timeline_text_and_json_exactly(sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessions)
    async with sessions() as session:
        items = await timeline(session, REF)
    text = render_text(REF, items, LONDON, NOW)
    assert text == TEXT
    assert json.loads(render_json(REF, items, NOW)) == {
        "ref": REF, "generated_at": "2026-11-23T09:00:00.000000Z", "items": ITEMS,
    }
    # Never the payload of an event, nor another nominal's entries.
    assert "Fictionalname" not in text and "Nowhere" not in text and "VS-0000099" not in text


async def test_timeline_from_a_day(sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessions)
    async with sessions() as session:
        items = await timeline(session, REF, day_start(date(2026, 6, 16), LONDON))
    assert [i.kind for i in items] == ["alert.resolved", "event.received", "flags.lookup", "delivery.sent"]


async def test_text_shows_hostile_values_inert() -> None:
    from datetime import UTC, datetime

    from casewatch.audit.chronology import TimelineItem

    item = TimelineItem(datetime(2026, 1, 1, tzinfo=UTC), "alert.acknowledged", "acknowledged: a\nb\u202ec",
                        who="PC1\x1b[31m")
    line = render_text(REF, [item], LONDON, NOW).splitlines()[2]
    assert line == "2026-01-01 00:00:00 GMT  alert.acknowledged  PC1\ufffd[31m  acknowledged: a b\ufffdc"


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture
def cli_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FixedClock]:
    clock = FixedClock(NOW)
    monkeypatch.setattr(chronology, "SystemClock", lambda: clock)
    monkeypatch.setenv("LOGNAME", "reviewer")
    yield clock


async def _viewed(url: str) -> list[tuple[str, str, dict[str, object], list[str]]]:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as s:
            rows = await s.execute(
                select(AuditEntry.actor, AuditEntry.subject, AuditEntry.details, AuditEntry.nominals)
                .where(AuditEntry.action == "chronology.viewed").order_by(AuditEntry.id)
            )
            return [tuple(r) for r in rows]
    finally:
        await engine.dispose()


def test_cli_text_then_json_each_audited_for_the_next(
    db_url: str, tmp_path: Path, cli_clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    _seeded(db_url)
    config = _config(tmp_path, db_url)
    assert main(["chronology", REF, "--config", config]) == 0
    assert capsys.readouterr() == (TEXT, "")
    assert asyncio.run(_viewed(db_url)) == [("cli:reviewer", REF, {"items": 9, "format": "text"}, [REF])]
    assert main(["chronology", REF, "--format", "json", "--config", config]) == 0
    viewed = _item("2026-11-23T09:00:00.000000Z", "chronology.viewed", "chronology viewed", "cli:reviewer",
                   why="chronology for a case review", ref="audit 9")
    assert json.loads(capsys.readouterr().out) == {
        "ref": REF, "generated_at": "2026-11-23T09:00:00.000000Z", "items": [*ITEMS, viewed],
    }


def test_cli_exit_codes(
    db_url: str, tmp_path: Path, cli_clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    _seeded(db_url)
    config = _config(tmp_path, db_url)
    assert main(["chronology", "VS-0000404", "--config", config]) == 1
    assert capsys.readouterr().err == "casewatch chronology: nothing on record for VS-0000404\n"
    assert asyncio.run(_viewed(db_url)) == []  # nothing shown: not audited
    assert main(["chronology", "VS 1", "--config", config]) == 2
    assert "REF must be a ViSOR reference" in capsys.readouterr().err
    empty = _config(tmp_path / "..", f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    assert main(["chronology", REF, "--config", empty]) == 2
    assert "casewatch db upgrade" in capsys.readouterr().err


async def test_unknown_stays_unknown(sessions: async_sessionmaker[AsyncSession]) -> None:
    from casewatch.audit.chronology import known

    await seed(sessions)
    async with sessions() as session:
        assert await known(session, REF) and await known(session, "VS-0000099")
        assert not await known(session, "VS-0000404")
        assert (await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one() == 8
