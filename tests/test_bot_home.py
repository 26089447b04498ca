"""The Slack App Home (issue 15) through the real aiohttp endpoint and Bolt's real dispatch: signed
`app_home_opened` events and Home-tab button presses, answered by views.publish on the local
Slack stand-in (tests/slack_standin.py), on SQLite and PostgreSQL where the store's queries
matter. An officer sees what they own; a supervisor the team's, oldest first; a stranger that
they are not set up. Only what lets someone act is shown: no names, addresses or summaries.

All names, dates and references are fictional.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest

from bot import render
from casewatch.alerts.lifecycle import open_alert, resolve
from casewatch.lookup.home import HomeView, closed_by_acknowledgement
from casewatch.model.alerts import AlertSpec
from casewatch.store.models import Alert
from tests.digest_data import alert as alert_row
from tests.support import T0
from tests.test_bot import (
    ALPHA,
    PC,
    PC_SOUTH,
    SAMPLE_A,
    SAMPLE_B,
    SGT,
    SOUTH,
    STRANGER,
    TEAM_ID,
    Bot,
    post_signed,
    running_bot,
    shown,
    slack_headers,
    trigger_id,
)
from tests.test_render_hostile import VALUES, assert_safe_slack, hostile

ZONE = ZoneInfo("Europe/London")
NAMES = ("Fictionalson", "Alpha Test", "Sampleton", "Southwell", "O'Testperson", "PC Example", "Sgt Example")


@pytest.fixture
async def bot(db_url: str) -> AsyncIterator[Bot]:
    """The bot of tests/test_bot.py, on SQLite and on PostgreSQL."""
    async with running_bot(db_url) as running:
        yield running
        # A publish a test left waiting on a slow Slack is answered before the bot stops, which
        # would otherwise wait its full 10 s for that listener's work.
        running.slack.cut_delays_short()


@pytest.fixture
async def sqlite_bot(sqlite_url: str) -> AsyncIterator[Bot]:
    """On SQLite only: for what does not rest on the store's queries."""
    async with running_bot(sqlite_url) as running:
        yield running
        running.slack.cut_delays_short()


def home_event_body(user: str, *, tab: str = "home", view_hash: str | None = None) -> bytes:
    event: dict[str, Any] = {
        "type": "app_home_opened",
        "user": user,
        "channel": "D0HOME0001",
        "tab": tab,
        "event_ts": f"{int(T0.timestamp())}.000100",
    }
    if view_hash is not None:
        event["view"] = {"id": "V0HOME0001", "type": "home", "hash": view_hash, "blocks": []}
    return json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": TEAM_ID,
            "api_app_id": "A0CASEWATCH",
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev0{user}",
            "event_time": int(T0.timestamp()),
            "authorizations": [{"team_id": TEAM_ID, "user_id": "UCASEWATCH", "is_bot": True}],
        }
    ).encode()


async def open_home(bot: Bot, user: str, *, tab: str = "home", view_hash: str | None = None) -> int:
    """Send the event as Slack would; the status of Bolt's answer (Slack wants 200 within 3 s)."""
    body = home_event_body(user, tab=tab, view_hash=view_hash)
    headers = {**slack_headers(body), "Content-Type": "application/json"}
    resp = await bot.client.post("/slack/events", data=body, headers=headers)
    return resp.status


async def published(bot: Bot, count: int = 1) -> dict[str, Any]:
    """The `count`-th views.publish call's arguments, once it has arrived."""
    calls = await bot.slack.wait_for_calls("views.publish", count)
    return calls[count - 1].args


def alert_ids(view: dict[str, Any]) -> list[str]:
    return [
        b["accessory"]["value"] if "accessory" in b else b["text"]["text"].split("`")[1]
        for b in view["blocks"]
        if b.get("type") == "section"
        and b.get("text", {}).get("text", "").count("`") >= 2
        and " \u00b7 opened " in b["text"]["text"]
    ]


async def add_alerts(bot: Bot) -> dict[str, str]:
    """A visit due for PC1234 (as the visit trigger opens them) and two older north alerts."""
    ctx = bot.service.ctx
    async with bot.service.sessions() as session, session.begin():
        visit = await open_alert(
            session,
            AlertSpec(
                "visit.due", "low", ALPHA, "north", subject="visit", summary="Home visit due", owner="PC1234"
            ),
            ctx,
        )
        assert visit is not None
        session.add_all(
            [
                alert_row(
                    "A-OLDEST1",
                    "action.overdue",
                    SAMPLE_B,
                    T0 - timedelta(days=30),
                    owner="PC1234",
                    severity="medium",
                ),
                alert_row("A-MIDDLE1", "travel.unnotified", SAMPLE_A, T0 - timedelta(days=2), owner=None),
                alert_row(
                    "A-SOUTH99",
                    "action.overdue",
                    SOUTH,
                    T0 - timedelta(days=40),
                    team="south",
                    owner="PC5678",
                ),
            ]
        )
    return {"visit": visit.id}


async def test_an_officer_sees_what_they_own_least_first_information(bot: Bot) -> None:
    extra = await add_alerts(bot)
    assert await open_home(bot, PC) == 200
    args = await published(bot)
    assert args["user_id"] == PC and "hash" not in args  # a first view: nothing to race
    view = args["view"]
    assert view["type"] == "home"
    text = shown(view)
    # Alerts they own, most urgent first (severity, then the oldest), then the visit due.
    assert alert_ids(view) == [bot.alerts["pc_high"], "A-OLDEST1", bot.alerts["pc_medium"], extra["visit"]]
    assert text.index("*Home visits due*") < text.index(extra["visit"])
    assert "`ACT-PC-1` VS-0001001 \u00b7 due 10/11/2026 \u00b7 *OVERDUE*" in text
    assert "notification.missed \u00b7 VS-0001001 \u00b7 opened 0m ago" in text
    assert "action.overdue \u00b7 VS-0001004 \u00b7 opened 30d 0h ago" in text
    # Not theirs: the supervisor's, the unowned one, another team's.
    for other in (bot.alerts["sgt_only"], bot.alerts["south"], "A-MIDDLE1", "A-SOUTH99", "ACT-SOUTH-1"):
        assert other not in text
    # The least that lets them act: no names, no summaries.
    for never in (*NAMES, "Periodic notification missed", "Home visit due", "review the plan"):
        assert never not in text, never
    assert ("casewatch_ack", bot.alerts["pc_high"]) in [
        (b["accessory"]["action_id"], b["accessory"]["value"]) for b in view["blocks"] if "accessory" in b
    ]
    [entry] = await bot.audit("home.viewed")
    assert entry.actor == "PC1234" and entry.subject == "own"
    assert entry.details["alerts_shown"] == alert_ids(view)
    assert entry.details["actions_shown"] == ["ACT-PC-1"]


async def test_a_supervisor_sees_the_team_oldest_first(bot: Bot) -> None:
    extra = await add_alerts(bot)
    assert await open_home(bot, SGT) == 200
    view = (await published(bot))["view"]
    text = shown(view)
    ids = alert_ids(view)
    # North's alerts, oldest first (the ones seeded at T0 by id); the recall alert of the seed too.
    assert ids[:2] == ["A-OLDEST1", "A-MIDDLE1"]
    seeded = [i for i in ids[2:] if i != extra["visit"]]
    assert sorted(seeded) == seeded
    assert {bot.alerts["pc_high"], bot.alerts["pc_medium"], bot.alerts["sgt_only"]} <= set(ids)
    assert bot.alerts["south"] not in ids and "A-SOUTH99" not in ids
    assert "Team north open alerts*, oldest first" in text
    assert "travel.unnotified \u00b7 VS-0001003 \u00b7 opened 2d 0h ago \u00b7 *no owner*" in text
    assert "owner PC1234" in text  # who to chase, by id
    assert "ACT-PC-1" in text and "ACT-SOUTH-1" not in text
    for never in NAMES:
        assert never not in text, never
    [entry] = await bot.audit("home.viewed")
    assert entry.actor == "SGT0001" and entry.subject == "team"


async def test_the_view_is_read_afresh_each_time_it_is_opened(bot: Bot) -> None:
    assert await open_home(bot, PC) == 200
    first = await published(bot)
    assert bot.alerts["pc_medium"] in alert_ids(first["view"])
    async with bot.service.sessions() as session, session.begin():
        row = await session.get(Alert, bot.alerts["pc_medium"])
        assert row is not None
        assert await resolve(session, row, "action done", bot.service.ctx)
    current_hash = bot.slack.home_views[PC]["hash"]
    assert await open_home(bot, PC, view_hash=current_hash) == 200
    second = await published(bot, 2)
    assert second["hash"] == current_hash  # Slack's race guard, from the event
    assert bot.alerts["pc_medium"] not in alert_ids(second["view"])
    assert bot.alerts["pc_high"] in alert_ids(bot.slack.home_views[PC])
    assert len(await bot.audit("home.viewed")) == 2


async def test_a_stranger_is_told_they_are_not_set_up_and_nothing_else(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    assert await open_home(bot, STRANGER) == 200
    args = await published(bot)
    assert args["user_id"] == STRANGER
    assert args["view"] == {"type": "home", "blocks": [render._section(render.HOME_NOT_SET_UP)]}
    assert await bot.audit("home.viewed") == []
    [refused] = await bot.audit("slack.refused")
    assert refused.actor == f"slack:{STRANGER}" and refused.subject == "app_home"


async def test_the_messages_tab_publishes_nothing(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    assert await open_home(bot, PC, tab="messages") == 200
    assert await open_home(bot, PC_SOUTH) == 200  # a later home event: the first was skipped
    args = await published(bot)
    assert args["user_id"] == PC_SOUTH and len(bot.slack.calls_to("views.publish")) == 1


SLACK_ACK_SECONDS = 3.0


async def test_the_home_event_is_acknowledged_before_its_publish_is_answered(sqlite_bot: Bot) -> None:
    """HTTP mode answers with the acknowledgement as soon as the listener's acknowledging part
    returns (process_before_response): the publish runs in a lazy listener after it, so a slow
    views.publish (answered only when the stand-in stops) never holds Slack's 200 back."""
    bot = sqlite_bot
    bot.slack.delay_next("views.publish", 600)
    # Slack's rule: the 200 within 3 seconds (the web client itself gives up only after 10).
    assert await asyncio.wait_for(open_home(bot, PC), SLACK_ACK_SECONDS) == 200
    await bot.slack.wait_for_calls("views.publish", 1)
    assert PC not in bot.slack.home_views  # still waiting on Slack, after the 200 went out


async def test_a_button_is_acknowledged_before_its_work_and_publish(sqlite_bot: Bot) -> None:
    """The button's work (the acknowledgement, the refreshed tab) runs in a lazy listener after
    Slack has had its 200; it is done all the same."""
    bot = sqlite_bot
    assert await open_home(bot, PC) == 200
    await published(bot)
    bot.slack.delay_next("views.publish", 600)
    click = post_signed(bot.client, home_ack_click(bot, bot.slack.home_views[PC]))
    assert (await asyncio.wait_for(click, SLACK_ACK_SECONDS)).status == 200
    await bot.slack.wait_for_calls("views.publish", 2)
    acknowledged = await bot.alert(bot.alerts["pc_high"])
    assert acknowledged.state == "acknowledged" and acknowledged.acknowledged_by == "PC1234"
    assert await bot.audit("alert.acknowledged") != []


async def test_a_rate_limited_publish_waits_for_retry_after_then_succeeds(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    bot.slack.fail_next("views.publish", status=429, retry_after=1)
    assert await open_home(bot, PC) == 200
    calls = await bot.slack.wait_for_calls("views.publish", 2, within=5)
    assert calls[1].at - calls[0].at >= 0.95
    assert bot.alerts["pc_high"] in alert_ids(bot.slack.home_views[PC])


async def test_a_publish_that_lost_the_race_is_left_alone(
    sqlite_bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    bot = sqlite_bot
    assert await open_home(bot, PC) == 200
    await published(bot)
    newer = bot.slack.home_views[PC]
    with caplog.at_level(logging.INFO, logger="bot.app"):
        assert await open_home(bot, PC, view_hash="1700000000.stale") == 200
        await published(bot, 2)
        for _ in range(100):  # the listener logs once Slack's answer is back
            if any("App Home not published: hash_conflict" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("no hash_conflict line logged")
    assert bot.slack.home_views[PC] == newer  # hash_conflict: the newer view stands
    assert len(bot.slack.calls_to("views.publish")) == 2  # and is not retried


def home_ack_click(bot: Bot, home: dict[str, Any]) -> bytes:
    """The Acknowledge button of PC's high alert pressed on the Home tab `home`, as Slack sends it."""
    payload = {
        "type": "block_actions",
        "user": {"id": PC, "username": "pc", "team_id": TEAM_ID},
        "api_app_id": "A0CASEWATCH",
        "token": "legacy-verification-token",
        "trigger_id": trigger_id(),
        "team": {"id": TEAM_ID, "domain": "casewatch-test"},
        "container": {"type": "view", "view_id": home["id"]},
        "view": {"id": home["id"], "type": "home", "hash": home["hash"], "blocks": home["blocks"]},
        "actions": [
            {
                "action_id": "casewatch_ack",
                "block_id": "b1",
                "value": bot.alerts["pc_high"],
                "type": "button",
                "action_ts": "1700000001.000001",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


async def test_acknowledge_on_the_home_tab_refreshes_it_with_the_answer(bot: Bot) -> None:
    assert await open_home(bot, PC) == 200
    await published(bot)
    home = bot.slack.home_views[PC]
    resp = await post_signed(bot.client, home_ack_click(bot, home))
    assert resp.status == 200
    args = await published(bot, 2)
    assert args["hash"] == home["hash"]
    acknowledged = await bot.alert(bot.alerts["pc_high"])
    assert acknowledged.state == "acknowledged" and acknowledged.acknowledged_by == "PC1234"
    text = shown(args["view"])
    assert f"Alert `{bot.alerts['pc_high']}`" in text and "acknowledged by you" in text
    line = next(
        b
        for b in args["view"]["blocks"]
        if bot.alerts["pc_high"] in b.get("text", {}).get("text", "") and "opened" in b["text"]["text"]
    )
    assert "_acknowledged_" in line["text"]["text"] and "accessory" not in line  # no second button


@VALUES
@pytest.mark.parametrize("scope", ["own", "team"])
def test_the_home_view_escapes_every_field(text: str, scope: str) -> None:
    view = hostile(HomeView, text, scope=scope, as_of=T0)
    home = render.home_view(view, ZONE)
    assert home["type"] == "home" and len(home["blocks"]) <= 100
    assert_safe_slack({"blocks": home["blocks"][:50]})
    assert_safe_slack({"blocks": home["blocks"][50:]}, shown=False)


# The kinds an acknowledgement closes, from the registry (lookup.home.closed_by_acknowledgement):
# acknowledged, they never resolve, so the Home leaves them out (review of issue 15: they filled
# the team view, oldest first and 40 at most, and hid every new alert).
ACK_CLOSED = {
    "travel.record_fta",
    "travel.confirmed",
    "travel.unmatched_nominal",
    "travel.late_notice",
    "notification.late",
    "mappa.level_changed",
    "mappa.visor_update_due",
    "recall.risk_review_due",
    "risk.changed",
    "area.moved_out",
    "area.moved_in",
    "system.delivery_failed",
    "feed.nominal_missing",
}


def test_the_kinds_an_acknowledgement_closes_come_from_the_registry() -> None:
    assert closed_by_acknowledgement() == ACK_CLOSED


# (kind, state, listed on the Home, why): the team view and the officer's own view alike.
HOME_ROWS = [
    ("risk.changed", "acknowledged", False, "resolved when acknowledged: nothing left to do"),
    ("area.moved_out", "acknowledged", False, "told for information, closed by the acknowledgement"),
    ("recall.risk_review_due", "acknowledged", False, "acknowledged: the review is owned"),
    ("travel.confirmed", "acknowledged", False, "border kind closed by the acknowledgement"),
    ("risk.changed", "open", True, "open: still asks to be acknowledged"),
    ("action.overdue", "acknowledged", True, "acknowledged means owned, not done"),
    ("travel.unnotified", "acknowledged", True, "a breach resolved only by the late notification"),
]


@pytest.mark.parametrize("user", [SGT, PC], ids=["team", "own"])
async def test_acknowledged_alerts_an_acknowledgement_closes_are_left_out(bot: Bot, user: str) -> None:
    async with bot.service.sessions() as session, session.begin():
        session.add_all(
            alert_row(f"A-ROW{i:04d}", kind, SAMPLE_B, T0 - timedelta(days=60 - i), state=state)
            for i, (kind, state, _, _) in enumerate(HOME_ROWS)
        )
    assert await open_home(bot, user) == 200
    ids = alert_ids((await published(bot))["view"])
    for i, (kind, state, listed, why) in enumerate(HOME_ROWS):
        assert (f"A-ROW{i:04d}" in ids) is listed, (kind, state, why)


async def test_the_team_view_lists_new_open_alerts_before_old_acknowledged_ones(bot: Bot) -> None:
    """First deployment after months of risk changes and moves: 60 acknowledged ones older than
    anything open, and an acknowledged action.overdue (owned, not done) older still."""
    async with bot.service.sessions() as session, session.begin():
        session.add_all(
            alert_row(
                f"A-ACK{i:05d}",
                ("risk.changed", "area.moved_in", "recall.risk_review_due")[i % 3],
                SAMPLE_B,
                T0 - timedelta(days=200 - i),
                state="acknowledged",
            )
            for i in range(60)
        )
        session.add(
            alert_row(
                "A-OWNED01",
                "action.overdue",
                SAMPLE_B,
                T0 - timedelta(days=300),
                state="acknowledged",
                severity="medium",
            )
        )
        session.add(alert_row("A-NEWEST1", "travel.unnotified", SAMPLE_A, T0 - timedelta(minutes=5)))
    assert await open_home(bot, SGT) == 200
    ids = alert_ids((await published(bot))["view"])
    assert "A-NEWEST1" in ids
    assert not any(i.startswith("A-ACK") for i in ids)
    # Open ones first (oldest first), then the acknowledged one still to act on.
    assert ids[-1] == "A-OWNED01"
    assert {bot.alerts["pc_high"], bot.alerts["sgt_only"]} <= set(ids[:-1])
