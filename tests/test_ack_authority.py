"""Who may acknowledge (issue 12, class 5) and `/ack <alert id> [outcome]` (contract v2), through
signed Slack requests on the real Bolt dispatch path, on SQLite and PostgreSQL.

Officers, nominals and outcomes are fictional.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.alerts import SYSTEM_REF
from casewatch.alerts.authority import OUTCOME_MAX_LENGTH, OutcomeError, clean_outcome
from casewatch.alerts.lifecycle import open_alert
from casewatch.clock import FixedClock
from casewatch.model.alerts import NPT_AREA, AlertSpec
from casewatch.routing.escalation import escalate_due
from casewatch.store.migrate import current_revision, head_revision, upgrade
from casewatch.store.models import Acknowledgement, Delivery
from casewatch.wiring import stop
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.support import OFFICERS, T0, TEAMS, client_for, downgrade_to, make_service, signed_get
from tests.test_bot import (
    ALPHA,
    BOT_TOKEN,
    CONTROL_ROOM,
    CR,
    PC,
    PC_SOUTH,
    SGT,
    SIGNING_SECRET,
    Bot,
    block_action_body,
    post_signed,
    seed,
    shown,
    slash,
)
from tests.test_delivery_support import make_worker

SPOC = "U0SPOC01"  # SPOC0001, spoc, north
ADMIN = "U0ADMIN1"  # ADM0001, admin, south
EXTRA_OFFICERS = [
    {"id": "SPOC0001", "name": "Spoc Example", "email": "spoc0001@force.example",
     "slack_user_id": SPOC, "team": "north", "roles": ["spoc"]},
    {"id": "ADM0001", "name": "Admin Example", "email": "adm0001@force.example",
     "slack_user_id": ADMIN, "team": "south", "roles": ["admin"]},
]
HOSTILE = "<!channel> <https://evil.example|click> & *bold*"


@asynccontextmanager
async def ack_bot(db_url: str, mail: MailSink | None = None, **extra: Any) -> AsyncIterator[Bot]:
    """test_bot's service and data, plus a north SPOC, a south admin, an alert of team north
    owned by the south officer, and a system alert; email to owners when `mail` is given;
    `extra`: more configuration (e.g. teams)."""
    async with SlackStandIn(token=BOT_TOKEN) as slack:
        overrides: dict[str, Any] = {
            "slack": {"mode": "http", "signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN,
                      "api_url": slack.url},
            "officers": [*OFFICERS, CONTROL_ROOM, *EXTRA_OFFICERS],
            **extra,
        }
        if mail is not None:
            overrides["smtp"] = {"host": "127.0.0.1", "port": mail.port}
            overrides["routing"] = {"owner_via": "both"}
        service = await make_service(db_url, **overrides)
        try:
            ids = await seed(service)
            async with service.sessions.begin() as session:
                for name, spec in {
                    "owned_by_south": AlertSpec("action.overdue", "high", ALPHA, "north", subject="ACT-X",
                                                summary="Action overdue", owner="PC5678"),
                    "system": AlertSpec("system.delivery_failed", "high", SYSTEM_REF, "north",
                                        subject="slack:C0GONE", summary="Messages cannot be delivered"),
                }.items():
                    alert = await open_alert(session, spec, service.ctx)
                    assert alert is not None
                    ids[name] = alert.id
            async with client_for(service) as client:
                yield Bot(service, client, slack, ids)
        finally:
            await stop(service)


@pytest.fixture
async def abot(db_url: str) -> AsyncIterator[Bot]:
    async with ack_bot(db_url) as running:
        yield running


async def press(bot: Bot, user: str, alert_id: str, name: str) -> str:
    """Press the Acknowledge button as `user`; what the clicker is told."""
    body = block_action_body(user, "casewatch_ack", alert_id, response_url=bot.slack.url + name)
    assert (await post_signed(bot.client, body)).status == 200
    [call] = await bot.slack.wait_for_calls(name, 1)
    return shown(call.args)


async def acks(bot: Bot) -> list[tuple[str, str, str]]:
    async with bot.service.sessions() as session:
        rows = (await session.execute(select(Acknowledgement).order_by(Acknowledgement.id))).scalars()
        return [(a.alert_id, a.officer_id, a.via) for a in rows]


def _unknown_answer_for(text: str, typed: str) -> str:
    return text.replace(typed, "<ID>")


# --- who is refused ----------------------------------------------------------------------------


async def test_other_team_officer_is_refused_by_command_and_button_and_told_nothing(abot: Bot) -> None:
    bot = abot
    alert_id = bot.alerts["pc_high"]  # north, owner PC1234
    before = await bot.alert(alert_id)
    unknown = shown(await slash(bot, "/ack", "A-ZZZZZZ", user=PC_SOUTH))

    by_command = shown(await slash(bot, "/ack", f"{alert_id} done it", user=PC_SOUTH))
    by_button = await press(bot, PC_SOUTH, alert_id, "response.refused")

    for text in (by_command, by_button):
        # The very answer an unknown id gets: holding an id tells nothing about the alert.
        assert _unknown_answer_for(text, alert_id) == _unknown_answer_for(unknown, "A-ZZZZZZ")
        for secret in ("notification.missed", ALPHA, "open", "resolved", "PC1234", "PC Example", "high"):
            assert secret not in text, secret
    after = await bot.alert(alert_id)
    assert (after.state, after.acknowledged_by, after.acknowledged_outcome) == ("open", None, None)
    assert after.next_escalation_at == before.next_escalation_at is not None
    assert await acks(bot) == []
    async with bot.service.sessions() as session:
        stmt = select(Delivery).where(Delivery.purpose == "acknowledged")
        assert list((await session.execute(stmt)).scalars()) == []
    refused = await bot.audit("alert.ack_refused")
    assert [(e.actor, e.subject, e.details["via"]) for e in refused] == [
        ("PC5678", alert_id, "slack_command"), ("PC5678", alert_id, "slack_button"),
    ]
    assert all(e.purpose and e.at == T0 for e in refused)
    assert await bot.audit("alert.acknowledged") == []

    # Escalation goes on as if nobody had tried.
    clock = bot.service.ctx.clock
    assert isinstance(clock, FixedClock)
    clock.advance(timedelta(hours=1))
    assert alert_id in await escalate_due(bot.service.sessions, bot.service.ctx)
    assert (await bot.alert(alert_id)).escalation_step == 1


async def test_refusal_hides_who_acknowledged_and_the_outcome(abot: Bot) -> None:
    bot = abot
    alert_id = bot.alerts["pc_high"]
    await slash(bot, "/ack", f"{alert_id} rang the nominal", user=PC)
    text = shown(await slash(bot, "/ack", alert_id, user=PC_SOUTH))
    for secret in ("already", "PC Example", "PC1234", "rang the nominal", "acknowledged by"):
        assert secret not in text, secret
    assert "No alert" in text
    assert (await bot.alert(alert_id)).acknowledged_by == "PC1234"


@pytest.mark.parametrize(("user", "officer_id"), [(PC, "PC1234"), (SGT, "SGT0001"), (CR, "CR0001")])
async def test_system_alerts_are_for_admins_only(sqlite_url: str, user: str, officer_id: str) -> None:
    async with ack_bot(sqlite_url) as bot:
        alert_id = bot.alerts["system"]  # its team is north, but it is routed to the admins
        text = shown(await slash(bot, "/ack", alert_id, user=user))
        assert "No alert" in text and "system.delivery_failed" not in text
        assert (await bot.alert(alert_id)).state == "open"
        [entry] = await bot.audit("alert.ack_refused")
        assert (entry.actor, entry.subject) == (officer_id, alert_id)

        assert "acknowledged by you" in shown(await slash(bot, "/ack", alert_id, user=ADMIN))
        assert (await bot.alert(alert_id)).acknowledged_by == "ADM0001"


# --- who may acknowledge -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "officer_id", "alert"),
    [
        (PC, "PC1234", "pc_high"),  # own team, officer
        (SGT, "SGT0001", "pc_high"),  # own team, supervisor
        (SPOC, "SPOC0001", "pc_high"),  # own team, SPOC
        (CR, "CR0001", "south"),  # control room: any team's alert
        (ADMIN, "ADM0001", "pc_high"),  # admin: any team's alert
        (PC_SOUTH, "PC5678", "owned_by_south"),  # the officer the alert names, in another team
    ],
)
async def test_own_team_owner_control_room_and_admin_may_acknowledge(
    abot: Bot, user: str, officer_id: str, alert: str
) -> None:
    bot = abot
    alert_id = bot.alerts[alert]
    text = shown(await slash(bot, "/ack", alert_id, user=user))
    assert f"Alert `{alert_id}`" in text and "acknowledged by you" in text
    row = await bot.alert(alert_id)
    assert (row.state, row.acknowledged_by, row.next_escalation_at) == ("acknowledged", officer_id, None)
    assert await acks(bot) == [(alert_id, officer_id, "slack_command")]
    [entry] = await bot.audit("alert.acknowledged")
    assert (entry.actor, entry.subject) == (officer_id, alert_id)
    assert await bot.audit("alert.ack_refused") == []


# North lists N01, N02 and X01; south S01 and X01 (an area on the boundary, in both).
NPT_TEAMS = [
    {**team, "npt_channels": {"north": {"N01": "C0NPTN01", "N02": "C0NPTN02", "X01": "C0NPTX1N"},
                              "south": {"S01": "C0NPTS01", "X01": "C0NPTX1S"}}[team["id"]]}
    for team in TEAMS
]


# A nominal of team north who moved (rules.risk): (kind, details[NPT_AREA], who, may acknowledge,
# why). The NPT told is the one routing picks: the alert's team's first, else the first listing it.
NPT_ROWS = [
    ("area.moved_out", "S01", PC_SOUTH, True,
     "moved out of south's area S01: south's NPT was told and only an acknowledgement closes it"),
    ("area.moved_in", "N02", PC_SOUTH, False, "north's area: south's NPT was not told"),
    ("area.moved_out", "X01", PC_SOUTH, False, "both teams list X01: routing told north's NPT"),
    ("area.moved_out", "Z99", PC_SOUTH, False, "no team lists Z99: no NPT was told"),
    ("risk.changed", None, PC_SOUTH, False, "no area named: the alert's own team only"),
    ("area.moved_out", "S01", PC, True, "the alert's own team may still"),
]


@pytest.mark.parametrize(("kind", "area", "user", "allowed", "why"), NPT_ROWS)
async def test_the_team_of_the_npt_told_of_a_move_may_acknowledge_it(
    db_url: str, kind: str, area: str | None, user: str, allowed: bool, why: str
) -> None:
    async with ack_bot(db_url, teams=NPT_TEAMS) as bot:
        async with bot.service.sessions.begin() as session:
            spec = AlertSpec(kind, "low" if kind.startswith("area.") else "medium", ALPHA, "north",
                             subject="EV-MOVE-1", summary=f"{ALPHA} moved",
                             details={NPT_AREA: area} if area else {})
            alert = await open_alert(session, spec, bot.service.ctx)
            assert alert is not None
        text = shown(await slash(bot, "/ack", alert.id, user=user))
        row = await bot.alert(alert.id)
        if allowed:
            assert "acknowledged by you" in text, why
            assert row.state == "acknowledged", why
        else:
            assert "No alert" in text and kind not in text, why
            assert (row.state, row.acknowledged_by) == ("open", None), why
            assert len(await bot.audit("alert.ack_refused")) == 1, why


async def test_button_works_for_the_own_team_and_records_no_outcome(sqlite_url: str) -> None:
    async with ack_bot(sqlite_url) as bot:
        alert_id = bot.alerts["south"]
        assert "acknowledged by you" in await press(bot, PC_SOUTH, alert_id, "response.own")
        row = await bot.alert(alert_id)
        assert (row.acknowledged_by, row.acknowledged_outcome) == ("PC5678", None)
        [entry] = await bot.audit("alert.acknowledged")
        assert entry.details == {"via": "slack_button"}


# --- the outcome -------------------------------------------------------------------------------


async def test_outcome_is_stored_audited_and_shown_in_the_reply_api_and_updates(db_url: str) -> None:
    sink = MailSink().start()
    try:
        async with ack_bot(db_url, mail=sink) as bot:
            alert_id = bot.alerts["pc_high"]  # notification.missed: owner (Slack DM and email), team channel
            worker, _ = make_worker(bot.service.sessions, bot.service.ctx)
            await worker.run_until_idle()
            sink.messages.clear()

            typed = f"{alert_id.lower()}   spoke to the nominal,\u00a0notification booked {HOSTILE}"
            answer = await slash(bot, "/ack", typed, user=PC)
            stored = f"spoke to the nominal, notification booked {HOSTILE}"  # spaces folded
            text = shown(answer)
            assert "acknowledged by you" in text
            assert "Outcome: spoke to the nominal, notification booked &lt;!channel&gt;" in text
            assert "<!channel>" not in text and "<https://evil.example" not in text
            row = await bot.alert(alert_id)
            assert row.acknowledged_outcome == stored
            [entry] = await bot.audit("alert.acknowledged")
            assert entry.details == {"via": "slack_command", "outcome": stored}

            resp = await signed_get(bot.client, f"/api/v1/alerts/{alert_id}")
            assert resp.status == 200
            assert (await resp.json())["acknowledged_outcome"] == stored
            resp = await signed_get(bot.client, "/api/v1/alerts", params={"state": "open"})
            assert all(a["acknowledged_outcome"] is None for a in (await resp.json())["alerts"])

            await worker.run_until_idle()
            [update] = [c for c in bot.slack.calls_to("chat.update") if c.args["channel"] == "C0NORTH"]
            context = [b for b in update.args["blocks"] if b["type"] == "context"]
            assert "Acknowledged by PC1234: spoke to the nominal" in str(context)
            assert "&lt;!channel&gt;" in str(context) and "<!channel>" not in str(context)
            [mail] = [m for m in sink.messages if isinstance(m, EmailMessage)]
            assert stored not in str(mail["Subject"])  # subjects show up in lock-screen previews
            plain = mail.get_body(("plain",))
            html = mail.get_body(("html",))
            assert plain is not None and html is not None
            assert f"State: Acknowledged by PC1234: {stored}" in plain.get_content()
            assert "&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; *bold*" in html.get_content()
    finally:
        sink.stop()


async def test_second_acknowledgement_keeps_the_first_and_its_outcome(abot: Bot) -> None:
    bot = abot
    alert_id = bot.alerts["pc_high"]
    await slash(bot, "/ack", f"{alert_id} first: home visit done", user=PC)
    text = shown(await slash(bot, "/ack", f"{alert_id} second: phoned", user=SGT))
    assert "already acknowledged by PC Example (PC1234)" in text
    assert "your outcome was not recorded" in text and "Outcome: first: home visit done" in text
    row = await bot.alert(alert_id)
    assert (row.acknowledged_by, row.acknowledged_outcome) == ("PC1234", "first: home visit done")
    assert len(await bot.audit("alert.acknowledged")) == 1


@pytest.mark.parametrize(
    "outcome",
    ["done\nSPOOFED LOG LINE", "tab\there", "bidi \u202eenod", "zero\u200bwidth", "c1 \u0085 next",
     "line\u2028sep", "para\u2029sep", "bom\ufeff", "private \ue000", "x" * (OUTCOME_MAX_LENGTH + 1)],
)
async def test_hostile_outcome_is_refused_and_nothing_changes(sqlite_url: str, outcome: str) -> None:
    async with ack_bot(sqlite_url) as bot:
        alert_id = bot.alerts["pc_high"]
        text = shown(await slash(bot, "/ack", f"{alert_id} {outcome}", user=PC))
        assert "The outcome" in text and "Usage" in text
        assert outcome not in text
        row = await bot.alert(alert_id)
        assert (row.state, row.acknowledged_outcome) == ("open", None)
        assert await bot.audit("alert.acknowledged") == [] and await acks(bot) == []


async def test_id_typed_with_a_space_still_separates_the_outcome(sqlite_url: str) -> None:
    async with ack_bot(sqlite_url) as bot:
        alert_id = bot.alerts["pc_high"]
        await slash(bot, "/ack", f"a {alert_id[2:].lower()} visited, all well", user=PC)
        row = await bot.alert(alert_id)
        assert (row.acknowledged_by, row.acknowledged_outcome) == ("PC1234", "visited, all well")


_HOSTILE_CHARS = st.characters(codec="utf-8") | st.sampled_from(
    "\n\t\r\x00\x85\u2028\u2029\u202e\u200b\u200d\ufeff<>&|*_~`!@# \u00a0\u3000"
)


@settings(max_examples=300, deadline=None)
@given(st.text(_HOSTILE_CHARS, max_size=600))
def test_clean_outcome_refuses_or_returns_one_safe_line(text: str) -> None:
    try:
        cleaned = clean_outcome(text)
    except OutcomeError as exc:
        assert text not in str(exc) or not text.strip()
        return
    if cleaned is None:
        assert not text.strip()
        return
    assert 0 < len(cleaned) <= OUTCOME_MAX_LENGTH
    assert cleaned == " ".join(cleaned.split())
    assert not any(ch in cleaned for ch in "\n\t\r\x00\x85\u2028\u2029\u202e\u200b\ufeff")


# --- the migration -----------------------------------------------------------------------------


async def test_migration_0003_adds_the_outcome_and_is_reversible(engine: AsyncEngine) -> None:
    def columns(conn: Connection) -> set[str]:
        return {c["name"] for c in inspect(conn).get_columns("alerts")}

    assert await current_revision(engine) == head_revision()  # later migrations keep the column
    async with engine.begin() as conn:
        assert "acknowledged_outcome" in await conn.run_sync(columns)
        await conn.run_sync(downgrade_to, str(engine.url), "0002")
    assert await current_revision(engine) == "0002"
    async with engine.connect() as conn:
        assert "acknowledged_outcome" not in await conn.run_sync(columns)
    await upgrade(engine, "0003")
    assert await current_revision(engine) == "0003"
    async with engine.connect() as conn:
        assert "acknowledged_outcome" in await conn.run_sync(columns)

