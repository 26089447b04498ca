"""What a feed could not read is kept, once, with a feed.unreadable alert to the SPOC of the feed's
team and an audit entry (issue 18); `casewatch inbound list|show|done` lets that person read it
safely (no terminal escape survives) and record that it was dealt with, audited."""

from __future__ import annotations

import asyncio
import base64
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts import SYSTEM_REF
from casewatch.alerts.lifecycle import resolve
from casewatch.cli import main
from casewatch.clock import FixedClock
from casewatch.commands import inbound as inbound_command
from casewatch.context import Context
from casewatch.ingest import inbound
from casewatch.ingest.inbound import UNREADABLE, keep, keep_now
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Alert, AuditEntry, Delivery, InboundItem
from tests.support import make_settings

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
# A mail as a hostile sender might write it: a terminal escape (clear screen, retitle), a bidi
# override and a NUL.
HOSTILE = b"Subject: report\r\n\r\nVS-0001234 \x1b[2J\x1b]0;owned\x07 \xe2\x80\xae reversed \x00 end\r\n"


def _ctx(db_url: str, **overrides: object) -> Context:
    return Context(make_settings(db_url, **overrides), FixedClock(NOW))


async def test_an_item_is_kept_once_with_one_alert_to_the_feed_teams_spoc(
    sessions: async_sessionmaker[AsyncSession], db_url: str
) -> None:
    ctx = _ctx(db_url, inbound_mail={"team": "south"})
    first = await keep_now(
        sessions, ctx, source="mail", external_id="mid:abc", reason="no template field matched",
        content=HOSTILE, media_type="message/rfc822", team=ctx.settings.inbound_mail.team,
    )
    again = await keep_now(
        sessions, ctx, source="mail", external_id="mid:abc", reason="no template field matched",
        content=HOSTILE, media_type="message/rfc822", team="south",
    )
    assert not first.duplicate and again.duplicate
    assert again.item_id == first.item_id and again.alert_id == first.alert_id is not None
    async with sessions() as session:
        items = (await session.execute(select(InboundItem))).scalars().all()
        assert len(items) == 1
        item = items[0]
        assert (item.source, item.content, item.team, item.state) == ("mail", HOSTILE, "south", "kept")
        assert item.size == len(HOSTILE) and len(item.content_sha256) == 64
        alert = await session.get(Alert, first.alert_id)
        assert alert is not None
        assert (alert.kind, alert.severity, alert.team, alert.visor_ref) == (
            UNREADABLE, "high", "south", SYSTEM_REF
        )
        assert alert.subject == f"mail:{item.id}"
        assert f"inbound show {item.id}" in alert.summary and "no template field matched" in alert.summary
        receivers = (await session.execute(select(Delivery.receiver, Delivery.target))).all()
        assert [(r.receiver, r.target) for r in receivers] == [("spoc:south", "south.spoc@force.example")]
        kept_entries = select(AuditEntry).where(AuditEntry.action == "inbound.kept")
        kept = (await session.execute(kept_entries)).scalars()
        assert [e.subject for e in kept] == [f"mail:{item.id}"]


async def test_the_reason_reaches_chat_on_one_printable_line(
    sessions: async_sessionmaker[AsyncSession], db_url: str
) -> None:
    ctx = _ctx(db_url)
    async with sessions() as session, session.begin():
        kept = await keep(
            session, ctx, source="probation", external_id="x", reason="bad\nbody \u202e <!channel>",
            content=b"{}", media_type="application/json",
        )
    async with sessions() as session:
        alert = await session.get(Alert, kept.alert_id)
        assert alert is not None and "\n" not in alert.summary and "\u202e" not in alert.summary
        assert alert.team == "north"  # no team given: triggers.unmatched_team, else the first team


async def test_keep_refuses_an_unknown_source(
    sessions: async_sessionmaker[AsyncSession], db_url: str
) -> None:
    with pytest.raises(ValueError, match="unknown feed source"):
        await keep_now(sessions, _ctx(db_url), source="fax", external_id="1", reason="r", content=b"",
                       media_type="text/plain")


def _config(tmp_path: Path, url: str) -> str:
    path = tmp_path / "casewatch.toml"
    path.write_text(f'[database]\nurl = "{url}"\n', encoding="utf-8")
    return str(path)


def _kept(url: str, content: bytes = HOSTILE, external_id: str = "mid:1") -> int:
    """A mail kept in its own run of the event loop, as a feed would (the commands under test run
    their own)."""

    async def go() -> int:
        engine = make_engine(url)
        try:
            kept = await keep_now(
                make_sessionmaker(engine), _ctx(url), source="mail", external_id=external_id,
                reason="unreadable", content=content, media_type="message/rfc822",
            )
            return kept.item_id
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _audit_actions(url: str) -> list[tuple[str, str, str]]:
    async def go() -> list[tuple[str, str, str]]:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                rows = await session.execute(
                    select(AuditEntry.actor, AuditEntry.action, AuditEntry.subject).order_by(AuditEntry.id)
                )
                return [(r.actor, r.action, r.subject) for r in rows]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _alert_state(url: str, item_id: int) -> str:
    async def go() -> str:
        engine = make_engine(url)
        try:
            async with make_sessionmaker(engine)() as session:
                item = await session.get(InboundItem, item_id)
                assert item is not None and item.alert_id is not None
                alert = await session.get(Alert, item.alert_id)
                assert alert is not None
                return alert.state
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_show_prints_no_escape_sequence_and_is_audited(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGNAME", "spoc1")
    item_id = _kept(db_url)
    config = _config(tmp_path, db_url)
    assert main(["inbound", "list", "--config", config]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith(f"{item_id}\tmail\t") and "\tkept\t" in listed
    assert main(["inbound", "show", str(item_id), "--config", config]) == 0
    shown = capsys.readouterr().out
    assert "VS-0001234" in shown and "reversed" in shown and "end" in shown
    for hidden in ("\x1b", "\x07", "\x00", "\u202e"):
        assert hidden not in shown
    assert ("cli:spoc1", "inbound.viewed", f"mail:{item_id}") in _audit_actions(db_url)


def test_show_raw_writes_the_exact_bytes_to_a_new_private_file(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    item_id = _kept(db_url)
    config = _config(tmp_path, db_url)
    raw = tmp_path / "item.eml"
    assert main(["inbound", "show", str(item_id), "--raw", str(raw), "--config", config]) == 0
    assert raw.read_bytes() == HOSTILE
    assert os.stat(raw).st_mode & 0o777 == 0o600
    raw.write_bytes(b"mine")
    assert main(["inbound", "show", str(item_id), "--raw", str(raw), "--config", config]) == 2
    assert raw.read_bytes() == b"mine"  # never overwrites a file
    assert "File exists" in capsys.readouterr().err


def test_done_records_who_dealt_with_it_and_list_then_omits_it(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOGNAME", "spoc1")
    item_id = _kept(db_url)
    config = _config(tmp_path, db_url)
    assert main(["inbound", "done", str(item_id), "--config", config]) == 0
    assert "resolved" in capsys.readouterr().out
    assert _alert_state(db_url, item_id) == "resolved"
    assert main(["inbound", "list", "--config", config]) == 0
    assert capsys.readouterr().out == ""
    assert main(["inbound", "list", "--all", "--config", config]) == 0
    assert "\treviewed\t" in capsys.readouterr().out
    assert ("cli:spoc1", "inbound.reviewed", f"mail:{item_id}") in _audit_actions(db_url)
    assert main(["inbound", "show", "999999", "--config", config]) == 1
    capsys.readouterr()
    # A second `done` changes nothing: the first reviewer and time (retention's start) stand.
    monkeypatch.setenv("LOGNAME", "spoc2")
    assert main(["inbound", "done", str(item_id), "--config", config]) == 0
    assert "already recorded as dealt with by cli:spoc1" in capsys.readouterr().out
    assert [a for a in _audit_actions(db_url) if a[1] == "inbound.reviewed"] == [
        ("cli:spoc1", "inbound.reviewed", f"mail:{item_id}")
    ]


def test_show_decodes_a_kept_email_for_the_person_reading_it(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An encoded-word subject and a base64 body are shown decoded (and still made safe)."""
    raw = (
        b"From: reports@borderforce.example\r\nSubject: =?utf-8?b?Qm9yZGVyIGFsZXJ0IOKAkyBWUy0wMDAxMjM0?=\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode("ViSOR reference: VS-0001234\nPort: Testport \u202e\n".encode()) + b"\r\n"
    )

    item_id = _kept(db_url, raw, "mid:b64")
    assert main(["inbound", "show", str(item_id), "--config", _config(tmp_path, db_url)]) == 0
    shown = capsys.readouterr().out
    assert "Subject: Border alert \u2013 VS-0001234" in shown
    assert "ViSOR reference: VS-0001234" in shown and "Port: Testport" in shown
    assert "\u202e" not in shown


async def test_a_flood_keeps_every_item_but_opens_a_bounded_number_of_alerts(
    sessions: async_sessionmaker[AsyncSession], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender gone wrong (a bridge posting garbage) must not bury the SPOC in alerts: every
    item is kept, at most MAX_LIVE_ALERTS of one source are live, the last one says so, and once
    people deal with them the next item opens an alert again."""
    monkeypatch.setattr(inbound, "MAX_LIVE_ALERTS", 3)
    ctx = _ctx(db_url)
    kept = [
        await keep_now(sessions, ctx, source="probation", external_id=f"x{n}", reason="bad body",
                       content=b"{", media_type="application/json")
        for n in range(5)
    ]
    other = await keep_now(sessions, ctx, source="mail", external_id="m", reason="r", content=b"",
                           media_type="message/rfc822")
    assert [k.alert_id is not None for k in kept] == [True, True, True, False, False]
    assert other.alert_id is not None  # the cap is a source's own
    async with sessions() as session:
        assert len((await session.execute(select(InboundItem))).scalars().all()) == 6
        last = await session.get(Alert, kept[2].alert_id)
        assert last is not None and "later items are kept without an alert" in last.summary
    async with sessions() as session, session.begin():
        first = await session.get(Alert, kept[0].alert_id)
        assert first is not None
        assert await resolve(session, first, "dealt with", ctx)
    again = await keep_now(sessions, ctx, source="probation", external_id="x9", reason="bad body",
                           content=b"{", media_type="application/json")
    assert again.alert_id is not None


def test_show_prints_only_after_its_audit_entry_is_committed(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the chronology: the item may hold personal data, so nothing is shown unless the view is
    on record first."""
    monkeypatch.setenv("LOGNAME", "spoc1")
    item_id = _kept(db_url)
    on_record_when_shown: list[bool] = []
    show = inbound_command._show

    def checking_show(item: InboundItem, raw_path: str | None) -> None:
        viewed = ("cli:spoc1", "inbound.viewed", f"mail:{item_id}")
        # Read by another connection, on a loop of its own (this runs inside the command's loop).
        with ThreadPoolExecutor(1) as pool:
            on_record_when_shown.append(viewed in pool.submit(_audit_actions, db_url).result())
        show(item, raw_path)

    monkeypatch.setattr(inbound_command, "_show", checking_show)
    assert main(["inbound", "show", str(item_id), "--config", _config(tmp_path, db_url)]) == 0
    assert on_record_when_shown == [True]
    assert "VS-0001234" in capsys.readouterr().out
