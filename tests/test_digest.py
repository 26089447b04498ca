"""The supervisors' digest: exact content for a known data set (tests/digest_data.py), the 20%
caseload guideline, "nothing to report", what the channel version leaves out, and the digest going
out through the outbox to real SMTP (aiosmtpd) and the Slack stand-in."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.clock import FixedClock
from casewatch.config import Settings
from casewatch.context import Context
from casewatch.digest import render
from casewatch.digest.build import Digest, DigestInput, OfficerCases, build_digest, caseload_shares
from casewatch.digest.send import build_team_digest, send_digests
from casewatch.directory import sync_directory
from casewatch.store.engine import make_engine, make_sessionmaker
from integrations.mail_sink import MailSink
from tests import test_delivery_support as ds
from tests.digest_data import AT, load_known_set
from tests.slack_standin import SlackStandIn
from tests.support import make_settings
from tests.test_delivery_support import mail_fixture, slack_fixture  # noqa: F401

LONDON = ZoneInfo("Europe/London")


async def _digest(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, team: str = "north"
) -> Digest:
    ctx = Context(settings, FixedClock(AT))
    team_section = settings.team(team)
    assert team_section is not None
    async with sessions() as session:
        return await build_team_digest(session, ctx, team_section, AT)


async def _setup(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    async with sessions.begin() as session:
        await sync_directory(session, settings)
    await load_known_set(sessions)


async def test_digest_content_for_a_known_data_set(
    db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = make_settings(db_url)
    await _setup(sessions, settings)
    d = await _digest(sessions, settings)

    assert d.local_day == date(2026, 11, 23)
    assert d.new_by_kind == [
        ("notification.due_soon", 1),
        ("notification.missed", 1),
        ("travel.unnotified", 1),
    ]
    assert d.new_total == 3
    assert [(a.id, age) for a, age in d.unacknowledged] == [
        ("A-OLD001", timedelta(hours=72)),
        ("A-REC001", timedelta(hours=25)),
        ("A-NEW001", timedelta(hours=2)),
    ]
    assert [(owner, [(a.action_id, days) for a, days in rows]) for owner, rows in d.overdue_by_owner] == [
        ("PC1234", [("ACT-1", 3), ("ACT-2", 1)]),
        ("SGT0001", [("ACT-3", 22)]),
    ]
    assert d.overdue_total == 3
    assert [(a.id, a.due_on) for a in d.missed_notifications] == [("A-NEW002", date(2026, 11, 20))]
    assert [(i.due_on, i.what, i.ref) for i in d.due_soon] == [
        (date(2026, 11, 25), "action", "ACT-4"),
        (date(2026, 11, 27), "notification", "A-DUE001"),
    ]
    assert [a.id for a in d.border_travel] == ["A-NEW001"]
    assert [(r.visor_ref, r.alert_id, age) for r, age in d.recalls] == [
        ("VS-0000002", "A-REC001", timedelta(hours=25))
    ]
    assert [(c.officer_id, c.total, c.high, round(c.percent), c.over) for c in d.caseload] == [
        ("PC1234", 5, 2, 40, True),
        ("SGT0001", 1, 0, 0, False),
    ]
    assert not d.nothing_to_report

    text = render.email_text(d)
    for heading in (
        "New alerts in the last 24 hours: 3",
        "Unacknowledged alerts: 3",
        "Overdue actions: 3",
        "Missed notifications: 1",
        "Falling due in the next 7 days: 2",
        "Border-travel alerts: 1",
        "Outstanding recalls: 1",
        "1 over)",
    ):
        assert heading in text, heading
    assert "A-OLD001  high  action.overdue  VS-0000001  open for 3d 0h" in text
    assert "PC1234 (PC Example): 5 nominals, 2 high or very high (40%)  OVER THE GUIDELINE" in text
    assert "ACT-3  VS-0000006  due 2026-11-01 (22 days overdue)" in text
    html = render.email_html(d)
    assert "<h2>Outstanding recalls: 1</h2>" in html and "A-REC001" in html
    for version in (text, html, render.channel_text(d), str(render.channel_blocks(d))):
        assert "Fictional" not in version and "Testname" not in version  # never a nominal's name
        assert "VS-0000009" not in version and "A-SOUTH1" not in version  # never another team's


async def test_the_channel_version_carries_counts_ids_and_refs_only(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url)
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    try:
        await _setup(sessions, settings)
        d = await _digest(sessions, settings)
    finally:
        await engine.dispose()
    lines = render.channel_lines(d)
    assert lines[0] == "Daily digest North MOSOVO 2026-11-23"
    assert (
        "New alerts (24 h): 3 (notification.due_soon 1, notification.missed 1, travel.unnotified 1)" in lines
    )
    assert "Unacknowledged: 3: A-OLD001 VS-0000001, A-REC001 VS-0000002, A-NEW001 VS-0000001" in lines
    assert "Overdue actions: 3 (PC1234 2, SGT0001 1)" in lines
    assert "Outstanding recalls: 1: VS-0000002 A-REC001" in lines
    assert "Caseloads over the 20% guideline: 1" in lines
    channel = render.channel_text(d)
    assert "PC Example" not in channel and "Sgt Example" not in channel  # no officer names either
    blocks = render.channel_blocks(d)
    assert blocks[0]["type"] == "header" and "Unacknowledged: 3" in blocks[1]["text"]["text"]


async def test_the_south_digest_sees_only_south(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url)
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    try:
        await _setup(sessions, settings)
        d = await _digest(sessions, settings, "south")
    finally:
        await engine.dispose()
    assert d.new_by_kind == [("travel.unnotified", 1)]
    assert [r.visor_ref for r, _ in d.recalls] == ["VS-0000009"]
    assert [owner for owner, _ in d.overdue_by_owner] == ["PC5678"]
    assert [(c.officer_id, c.over) for c in d.caseload] == [("PC5678", True)]


def test_the_caseload_guideline_is_a_share_above_the_setting() -> None:
    shares = caseload_shares(
        [OfficerCases("PC1", "", 5, 1), OfficerCases("PC2", "", 9, 2), OfficerCases("PC3", "", 0, 0)], 20.0
    )
    assert [(s.officer_id, s.over) for s in shares] == [("PC2", True), ("PC1", False), ("PC3", False)]
    # The guideline is a setting.
    assert [s.officer_id for s in caseload_shares([OfficerCases("PC1", "", 5, 1)], 10.0) if s.over] == ["PC1"]


def test_nothing_to_report_is_said_clearly() -> None:
    d = build_digest(
        DigestInput("north", "North MOSOVO", caseloads=[OfficerCases("PC1", "", 10, 2)]), AT, LONDON
    )
    assert d.nothing_to_report
    assert render.NOTHING in render.email_text(d)
    assert "nothing to report" in render.subject(d)
    assert render.channel_lines(d) == ["Daily digest North MOSOVO 2026-11-23: nothing to report."]
    assert "None." in render.email_text(d)


async def test_the_digest_goes_out_by_email_and_to_the_channel(
    sqlite_url: str, slack: SlackStandIn, mail: MailSink
) -> None:
    settings = ds.make_settings(slack_url=slack.url, smtp_port=mail.port)
    settings = settings.model_copy(
        update={"database": settings.database.model_copy(update={"url": sqlite_url})}
    )
    ctx = ds.make_ctx(settings, AT)
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    try:
        await _setup(sessions, settings)
        queued = await send_digests(sessions, ctx)
        assert [(q.team_id, len(q.delivery_ids)) for q in queued] == [("north", 2)]
        worker, _ = ds.make_worker(sessions, ctx)
        assert await worker.run_until_idle() == 2
        sent = await ds.deliveries(sessions, purpose="digest")
        assert [(d.channel, d.state) for d in sent] == [("email", "sent"), ("slack", "sent")]
    finally:
        await engine.dispose()
    (message,) = mail.messages
    assert message["To"] == "sgt.north@force.example"
    assert message["Subject"] == "[casewatch] Daily digest North MOSOVO 2026-11-23"
    assert message.get_body(("plain",)) is not None and message.get_body(("html",)) is not None
    assert "Outstanding recalls: 1" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    (post,) = slack.calls_to("chat.postMessage")
    assert post.args["channel"] == "C0NORTH"
    assert "Unacknowledged: 3" in post.args["text"]
    blocks = post.args["blocks"]
    if isinstance(blocks, str):
        import json

        blocks = json.loads(blocks)
    assert blocks[0]["type"] == "header"
