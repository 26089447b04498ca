"""The Slack bot through the real aiohttp endpoint and Bolt's real dispatch: requests signed with
the signing secret (X-Slack-Signature v0) and shaped like Slack's, Web API and response_url
calls answered by the local stand-in on 127.0.0.1. Case data comes in through ingest.

All names, dates and references are fictional.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot import app as bot_app
from bot.commands import BotDeps
from bot.http import mount_slack, slack_signature_problem, slack_verifier
from casewatch.alerts.lifecycle import open_alert, resolve
from casewatch.clock import FixedClock
from casewatch.directory import sync_directory
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.model.alerts import AlertSpec
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Acknowledgement, Alert, AuditEntry
from casewatch.wiring import Service, stop
from tests.slack_standin import SlackStandIn
from tests.support import OFFICERS, T0, client_for, envelope, make_service, nominal_data

SIGNING_SECRET = "test-signing-secret-not-real"
BOT_TOKEN = "xoxb-test-not-real"
TEAM_ID = "T0CASEWATCH"
CONTROL_ROOM = {
    "id": "CR0001", "name": "Control Room Example", "email": "cr0001@force.example",
    "slack_user_id": "U0CR0001", "team": "north", "roles": ["control_room"],
}
PC = "U0PC1234"  # PC1234, officer, north
SGT = "U0SGT0001"  # SGT0001, supervisor, north
PC_SOUTH = "U0PC5678"  # PC5678, officer, south
CR = "U0CR0001"  # control room
STRANGER = "U0STRANGER"

# Fictional nominals.
ALPHA = "VS-0001001"  # registered, markers incl. a restricted one, on licence, PNC 1980/0012345Z
RECALLED = "VS-0001002"  # O'Testperson, recalled and at large
SAMPLE_A = "VS-0001003"  # two Sampletons: several matches
SAMPLE_B = "VS-0001004"
SPACED = "VS-0001005"  # Van Der Testen
SOUTH = "VS-0002001"  # south team


def nominal(ref: str, **overrides: Any) -> dict[str, Any]:
    return envelope("nominal.upsert", nominal_data(**overrides), visor_ref=ref, id=f"seed-{ref}")


CASES = [
    nominal(
        ALPHA, surname="Fictionalson", forenames="Alpha Test", date_of_birth="1970-01-01",
        pnc_id="1980/0012345Z", mappa_level=2, risk_level="high", on_licence=True,
        licence_expiry="2027-06-30", last_notification_on="2026-02-01",
        markers=[
            {"code": "VIO", "label": "Violence (fictional)", "restricted": False},
            {"code": "XRS", "label": "Covert tactic (fictional)", "restricted": True},
        ],
    ),
    nominal(RECALLED, surname="O'Testperson", forenames="Bravo", date_of_birth="1975-05-05",
            on_licence=True, offender_manager="PC5678"),
    nominal(SAMPLE_A, surname="Sampleton", forenames="Charlie", date_of_birth="1981-02-03"),
    nominal(SAMPLE_B, surname="Sampleton", forenames="Delta", date_of_birth="1985-06-07"),
    nominal(SPACED, surname="Van Der Testen", forenames="Echo", date_of_birth="1990-12-24"),
    nominal(SOUTH, surname="Southwell", forenames="Foxtrot", team="south", offender_manager="PC5678"),
    envelope("recall.issued", {"recall_type": "emergency", "issued_at": "2026-11-20T08:00:00Z"},
             visor_ref=RECALLED, id="seed-recall"),
    envelope("action.upsert", {
        "action_id": "ACT-PC-1", "summary": "Fictional action: review the plan", "owner": "PC1234",
        "due_on": "2026-11-10", "status": "open", "source": "mapp_meeting"}, visor_ref=ALPHA, id="seed-act1"),
    envelope("action.upsert", {
        "action_id": "ACT-SOUTH-1", "summary": "Fictional south action", "owner": "PC5678",
        "due_on": "2026-12-10", "status": "open", "source": "rmp"}, visor_ref=SOUTH, id="seed-act2"),
]


@dataclass
class Bot:
    service: Service
    client: TestClient[Any, Any]
    slack: SlackStandIn
    alerts: dict[str, str]  # name -> alert id

    async def alert(self, alert_id: str) -> Alert:
        async with self.service.sessions() as session:
            found = await session.get(Alert, alert_id)
            assert found is not None
            return found

    async def audit(self, action: str) -> list[AuditEntry]:
        async with self.service.sessions() as session:
            stmt = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            return list((await session.execute(stmt)).scalars())


def bot_settings(slack: SlackStandIn) -> dict[str, Any]:
    return {
        "slack": {"mode": "http", "signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN,
                  "api_url": slack.url},
        "officers": [*OFFICERS, CONTROL_ROOM],
    }


async def seed(service: Service) -> dict[str, str]:
    async with service.sessions() as session, session.begin():
        await sync_directory(session, service.settings)
    envelopes, errors = parse_envelopes(CASES)
    assert not errors
    await ingest(service.sessions, envelopes, service.ctx, source="import")
    specs = {
        "pc_high": AlertSpec("notification.missed", "high", ALPHA, "north", subject="2026-11-19",
                             summary="Periodic notification missed", owner="PC1234"),
        "pc_medium": AlertSpec("action.overdue", "medium", ALPHA, "north", subject="ACT-PC-1",
                               summary="Action overdue", owner="PC1234"),
        "sgt_only": AlertSpec("mappa.level_changed", "low", SAMPLE_A, "north", subject="x",
                              summary="MAPPA level changed", owner="SGT0001"),
        "south": AlertSpec("notification.missed", "high", SOUTH, "south", subject="2026-11-19",
                           summary="Periodic notification missed", owner="PC5678"),
    }
    ids = {}
    async with service.sessions() as session, session.begin():
        for name, spec in specs.items():
            alert = await open_alert(session, spec, service.ctx)
            assert alert is not None
            ids[name] = alert.id
    return ids


@asynccontextmanager
async def running_bot(db_url: str, more_officers: Iterable[dict[str, Any]] = ()) -> AsyncIterator[Bot]:
    async with SlackStandIn(token=BOT_TOKEN) as slack:
        settings = bot_settings(slack)
        settings["officers"] = [*settings["officers"], *more_officers]
        service = await make_service(db_url, **settings)
        try:
            ids = await seed(service)
            async with client_for(service) as client:
                yield Bot(service, client, slack, ids)
        finally:
            await stop(service)


@pytest.fixture
async def bot(db_url: str) -> AsyncIterator[Bot]:
    """On SQLite and on PostgreSQL: for behaviour that rests on the store's queries."""
    async with running_bot(db_url) as running:
        yield running


@pytest.fixture
async def sqlite_bot(sqlite_url: str) -> AsyncIterator[Bot]:
    """On SQLite only: for behaviour that does not depend on the database (signatures, parsing,
    the Slack round trips), keeping the suite fast."""
    async with running_bot(sqlite_url) as running:
        yield running


# --- requests shaped and signed like Slack's ---------------------------------------------------


NOW_TS = int(T0.timestamp())  # the services here run on FixedClock(T0): Slack's window is theirs


def slack_headers(body: bytes, *, secret: str = SIGNING_SECRET, ts: int | None = None) -> dict[str, str]:
    stamp = str(NOW_TS if ts is None else ts)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest}",
    }


# Slack makes each request unique (a slash command's trigger_id, a button's): so do the requests
# here, which the service would refuse as replays otherwise (bot.http.ReplayGuard).
_TRIGGERS = itertools.count(1)


def trigger_id() -> str:
    return f"1.2.{next(_TRIGGERS)}"


def command_body(command: str, text: str, user: str, response_url: str = "") -> bytes:
    return urlencode({
        "token": "legacy-verification-token", "team_id": TEAM_ID, "team_domain": "casewatch-test",
        "channel_id": "C0NORTH", "channel_name": "north-mosovo", "user_id": user,
        "user_name": user.lower(), "command": command, "text": text, "api_app_id": "A0CASEWATCH",
        "is_enterprise_install": "false",
        "response_url": response_url or "https://hooks.slack.example/commands/T0/1/x",
        "trigger_id": trigger_id(),
    }).encode()


def block_action_body(
    user: str, action_id: str, value: str, *, response_url: str | None = None
) -> bytes:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0CASEWATCH", "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": "1700000000.000001", "channel_id": "C0NORTH",
                      "is_ephemeral": False},
        "trigger_id": trigger_id(), "team": {"id": TEAM_ID, "domain": "casewatch-test"},
        "channel": {"id": "C0NORTH", "name": "north-mosovo"},
        "message": {"type": "message", "ts": "1700000000.000001", "text": "alert"},
        "actions": [{"action_id": action_id, "block_id": "b1", "value": value, "type": "button",
                     "text": {"type": "plain_text", "text": "Acknowledge"},
                     "action_ts": "1700000001.000001"}],
    }
    if response_url is not None:
        payload["response_url"] = response_url
    return urlencode({"payload": json.dumps(payload)}).encode()


async def post_signed(client: TestClient[Any, Any], body: bytes, **kw: Any) -> Any:
    return await client.post("/slack/events", data=body, headers=slack_headers(body, **kw))


async def slash(bot: Bot, command: str, text: str = "", user: str = PC) -> dict[str, Any]:
    resp = await post_signed(bot.client, command_body(command, text, user))
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    assert answer["response_type"] == "ephemeral"  # personal data never goes to a channel
    return answer


def shown(message: dict[str, Any]) -> str:
    """Every piece of text a person would see in the message."""
    parts = [str(message.get("text", ""))]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    parts.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.get("blocks", []))
    return "\n".join(parts)


def buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (b["accessory"]["action_id"], b["accessory"]["value"])
        for b in message.get("blocks", [])
        if "accessory" in b
    ]


# --- signature checks --------------------------------------------------------------------------


async def test_forged_signature_is_rejected(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    body = command_body("/flags", ALPHA, PC)
    resp = await post_signed(bot.client, body, secret="not-the-signing-secret")
    assert resp.status == 401
    assert "Fictionalson" not in await resp.text()
    assert await bot.audit("flags.lookup") == []


async def test_stale_timestamp_is_rejected(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    body = command_body("/flags", ALPHA, PC)
    resp = await post_signed(bot.client, body, ts=NOW_TS - 6 * 60)
    assert resp.status == 401
    assert await bot.audit("flags.lookup") == []


async def test_tampered_body_is_rejected(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    body = command_body("/flags", ALPHA, PC)
    headers = slack_headers(body)
    resp = await bot.client.post("/slack/events", data=command_body("/flags", ALPHA, CR), headers=headers)
    assert resp.status == 401


async def test_malformed_payload_is_a_400_when_signed_and_a_401_when_not(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    body = b"payload=%7Bnot-json"
    assert (await post_signed(bot.client, body)).status == 400
    assert (await post_signed(bot.client, body, secret="forged")).status == 401
    raw = b"\xff\xfe not utf-8"
    assert (await post_signed(bot.client, raw)).status == 400


# --- /flags ------------------------------------------------------------------------------------


async def test_flags_by_visor_ref_shows_what_an_officer_needs(bot: Bot) -> None:
    answer = await slash(bot, "/flags", "  vs-0001001 ")
    text = shown(answer)
    for expected in (
        ALPHA, "FICTIONALSON, Alpha Test", "born 01/01/1970", "PNC 1980/0012345Z", "Category 1",
        "MAPPA level 2", "High", "next notification due 01/02/2027 (periodic)",
        "On licence until 30/06/2027", "police", "PC Example (PC1234)", "pc1234@force.example",
        "<@U0PC1234>", "Violence (fictional)", bot.alerts["pc_high"], bot.alerts["pc_medium"],
    ):
        assert expected in text, expected
    assert "RECALLED" not in text
    # An officer is not cleared for restricted markers.
    assert "Covert tactic" not in text and "XRS" not in text
    # The most urgent alert comes first.
    assert text.index(bot.alerts["pc_high"]) < text.index(bot.alerts["pc_medium"])

    [entry] = await bot.audit("flags.lookup")
    assert entry.actor == "PC1234"
    assert entry.subject == "vs-0001001"
    assert entry.details["outcome"] == "found"
    assert entry.details["visor_refs_shown"] == [ALPHA]
    assert entry.details["restricted_markers_shown"] is False
    assert entry.at == T0


async def test_flags_by_pnc_id_in_either_form(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    for typed in ("80/12345z", "1980/0012345Z", "80 / 12345 Z"):
        text = shown(await slash(bot, "/flags", typed))
        assert "FICTIONALSON, Alpha Test" in text, typed


async def test_flags_by_surname_forgives_case_spacing_and_punctuation(bot: Bot) -> None:
    assert "VAN DER TESTEN, Echo" in shown(await slash(bot, "/flags", "  vAN   der-TESTEN "))
    assert "VAN DER TESTEN, Echo" in shown(await slash(bot, "/flags", "vandertesten"))
    assert "O'TESTPERSON, Bravo" in shown(await slash(bot, "/flags", "o testperson"))
    assert "O'TESTPERSON, Bravo" in shown(await slash(bot, "/flags", "OTESTPERSON"))


async def test_flags_several_matches_offer_a_short_list(bot: Bot) -> None:
    answer = await slash(bot, "/flags", "sampleton")
    text = shown(answer)
    assert "2 nominals match" in text
    assert f"`{SAMPLE_A}` SAMPLETON, Charlie" in text and "born 03/02/1981" in text
    assert f"`{SAMPLE_B}` SAMPLETON, Delta" in text and "born 07/06/1985" in text
    # Only the list: no flags, no markers.
    assert "Markers" not in text and "Violence" not in text
    assert buttons(answer) == [("casewatch_flags_show", SAMPLE_A), ("casewatch_flags_show", SAMPLE_B)]
    [entry] = await bot.audit("flags.lookup")
    assert entry.details["outcome"] == "several"
    assert entry.details["visor_refs_shown"] == [SAMPLE_A, SAMPLE_B]


@pytest.mark.parametrize("typed", ["SAMPLETON 07/06/1985", "sampleton 1985-06-07", "Sampleton 7 Jun 1985"])
async def test_flags_surname_and_date_of_birth_narrow_to_one(bot: Bot, typed: str) -> None:
    text = shown(await slash(bot, "/flags", typed))
    assert "SAMPLETON, Delta" in text and "Charlie" not in text
    assert "Markers" in text


async def test_flags_no_match_says_so_plainly(bot: Bot) -> None:
    text = shown(await slash(bot, "/flags", "Nobodyatall"))
    assert "No nominal found for *Nobodyatall*" in text
    assert "This lookup is recorded in the audit log." in text  # not finding is a lookup too
    text = shown(await slash(bot, "/flags", "sampleton 01/01/2000"))
    assert "No nominal found" in text and "Charlie" not in text
    entries = await bot.audit("flags.lookup")
    assert [e.details["outcome"] for e in entries] == ["not_found", "not_found"]


async def test_flags_without_an_argument_explains_usage(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    text = shown(await slash(bot, "/flags", "   "))
    assert "Usage" in text and "/flags &lt;ViSOR ref | PNC ID | surname [date of birth]&gt;" in text
    assert await bot.audit("flags.lookup") == []


async def test_flags_unreadable_date_gets_a_clear_answer(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    text = shown(await slash(bot, "/flags", "smith 31/02/1980"))
    assert "'31/02/1980' is not a real date" in text and "Usage" in text
    text = shown(await slash(bot, "/flags", "smith 01/02/80"))
    assert "four digits" in text


async def test_flags_recalled_nominal_is_shown_unlawfully_at_large(bot: Bot) -> None:
    answer = await slash(bot, "/flags", RECALLED)
    text = shown(answer)
    assert "RECALLED / UNLAWFULLY AT LARGE" in text
    assert "emergency recall" in text and "issued 20/11/2026 08:00" in text
    assert "UNLAWFULLY AT LARGE" in answer["text"]  # also in the notification fallback
    # It is the first line, before the name and anything else.
    assert answer["blocks"][0]["text"]["text"].startswith(":rotating_light: *RECALLED")
    [entry] = await bot.audit("flags.lookup")
    assert entry.details["unlawfully_at_large"] is True


@pytest.mark.parametrize(("user", "cleared"), [(PC, False), (PC_SOUTH, False), (CR, True), (SGT, True)])
async def test_restricted_markers_only_for_cleared_roles(bot: Bot, user: str, cleared: bool) -> None:
    # An officer of another team says why (need to know: tests/test_flags_need_to_know.py).
    typed = f"{ALPHA} reason: fictional incident check" if user == PC_SOUTH else ALPHA
    text = shown(await slash(bot, "/flags", typed, user=user))
    assert "Violence (fictional)" in text
    assert ("Covert tactic (fictional)" in text) is cleared
    [entry] = await bot.audit("flags.lookup")
    assert entry.details["restricted_markers_shown"] is cleared
    assert entry.details["restricted_markers_shown_count"] == (1 if cleared else 0)


async def test_show_button_on_the_list_answers_with_the_flags(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    response_url = bot.slack.url + "response.show"
    body = block_action_body(PC, "casewatch_flags_show", SAMPLE_B, response_url=response_url)
    resp = await post_signed(bot.client, body)
    assert resp.status == 200
    [call] = await bot.slack.wait_for_calls("response.show", 1)
    assert call.args["response_type"] == "ephemeral" and call.args["replace_original"] is True
    assert "SAMPLETON, Delta" in shown(call.args)


# --- /tasks ------------------------------------------------------------------------------------


async def test_tasks_lists_the_officers_own_alerts_and_actions_by_urgency(bot: Bot) -> None:
    answer = await slash(bot, "/tasks", user=PC)
    text = shown(answer)
    own = [bot.alerts["pc_high"], bot.alerts["pc_medium"]]
    assert buttons(answer)[:2] == [("casewatch_ack", own[0]), ("casewatch_ack", own[1])]
    assert text.index(own[0]) < text.index(own[1])
    assert bot.alerts["south"] not in text and bot.alerts["sgt_only"] not in text
    assert "ACT-PC-1" in text and "OVERDUE" in text
    assert "ACT-SOUTH-1" not in text
    [entry] = await bot.audit("tasks.list")
    assert entry.actor == "PC1234" and entry.subject == "own"
    assert set(own) <= set(entry.details["alerts_shown"])


async def test_tasks_for_a_supervisor_shows_the_team(bot: Bot) -> None:
    answer = await slash(bot, "/tasks", user=SGT)
    text = shown(answer)
    team = {bot.alerts["pc_high"], bot.alerts["pc_medium"], bot.alerts["sgt_only"]}
    assert team <= {value for action_id, value in buttons(answer) if action_id == "casewatch_ack"}
    assert bot.alerts["south"] not in text
    assert "ACT-PC-1" in text and "owner PC1234" in text and "ACT-SOUTH-1" not in text
    assert "Team north" in text
    # high before medium before low
    assert text.index(bot.alerts["pc_high"]) < text.index(bot.alerts["pc_medium"]) < text.index(
        bot.alerts["sgt_only"]
    )


async def test_tasks_marks_acknowledged_alerts_without_a_button(bot: Bot) -> None:
    await slash(bot, "/ack", bot.alerts["pc_high"], user=PC)
    answer = await slash(bot, "/tasks", user=PC)
    assert ("casewatch_ack", bot.alerts["pc_high"]) not in buttons(answer)
    assert "acknowledged by PC1234" in shown(answer)


# --- /ack and the Acknowledge button -----------------------------------------------------------


async def test_ack_command_acknowledges_once_and_says_by_whom_after(bot: Bot) -> None:
    alert_id = bot.alerts["pc_high"]
    text = shown(await slash(bot, "/ack", f" {alert_id.lower()} ", user=PC))
    assert f"Alert `{alert_id}`" in text and "acknowledged by you" in text
    alert = await bot.alert(alert_id)
    assert alert.state == "acknowledged"
    assert alert.acknowledged_by == "PC1234" and alert.acknowledged_at == T0
    assert alert.next_escalation_at is None

    text = shown(await slash(bot, "/ack", alert_id, user=SGT))
    assert "already acknowledged by Sgt Example" not in text
    assert "already acknowledged by PC Example (PC1234)" in text
    assert "already acknowledged by you" in shown(await slash(bot, "/ack", alert_id, user=PC))

    async with bot.service.sessions() as session:
        acks = (await session.execute(select(Acknowledgement))).scalars().all()
    assert [(a.alert_id, a.officer_id, a.via) for a in acks] == [(alert_id, "PC1234", "slack_command")]
    assert (await bot.alert(alert_id)).acknowledged_by == "PC1234"


async def test_ack_unknown_resolved_and_missing_ids_get_clear_replies(bot: Bot) -> None:
    assert "No alert `A-ZZZZZZ` found" in shown(await slash(bot, "/ack", "A-ZZZZZZ"))
    assert "Usage" in shown(await slash(bot, "/ack", ""))
    alert_id = bot.alerts["pc_medium"]
    async with bot.service.sessions() as session, session.begin():
        alert = await session.get(Alert, alert_id)
        assert alert is not None
        assert await resolve(session, alert, "action done", bot.service.ctx)
    text = shown(await slash(bot, "/ack", alert_id))
    assert "already resolved: action done" in text and "Nothing to acknowledge" in text
    assert (await bot.alert(alert_id)).state == "resolved"


async def test_ack_button_acknowledges_and_answers_the_clicker(bot: Bot) -> None:
    alert_id = bot.alerts["pc_high"]
    response_url = bot.slack.url + "response.ack1"
    body = block_action_body(SGT, "casewatch_ack", alert_id, response_url=response_url)
    started = time.monotonic()
    resp = await post_signed(bot.client, body)
    assert resp.status == 200 and await resp.text() == ""  # acknowledged at once, empty body
    assert time.monotonic() - started < 3
    [call] = await bot.slack.wait_for_calls("response.ack1", 1)
    assert call.args["response_type"] == "ephemeral" and call.args["replace_original"] is False
    assert "acknowledged by you" in shown(call.args)
    alert = await bot.alert(alert_id)
    assert (alert.state, alert.acknowledged_by) == ("acknowledged", "SGT0001")
    async with bot.service.sessions() as session:
        [ack] = (await session.execute(select(Acknowledgement))).scalars().all()
    assert (ack.officer_id, ack.via) == ("SGT0001", "slack_button")

    # A second click (or a click after /ack) changes nothing and says who acknowledged it.
    body = block_action_body(PC, "casewatch_ack", alert_id, response_url=bot.slack.url + "response.ack2")
    assert (await post_signed(bot.client, body)).status == 200
    [call] = await bot.slack.wait_for_calls("response.ack2", 1)
    assert "already acknowledged by Sgt Example (SGT0001)" in shown(call.args)
    assert (await bot.alert(alert_id)).acknowledged_by == "SGT0001"


async def test_ack_button_without_response_url_posts_an_ephemeral_message(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    body = block_action_body(PC, "casewatch_ack", "A-ZZZZZZ")
    assert (await post_signed(bot.client, body)).status == 200
    [call] = await bot.slack.wait_for_calls("chat.postEphemeral", 1)
    assert call.token == BOT_TOKEN
    assert call.args["channel"] == "C0NORTH" and call.args["user"] == PC
    assert "No alert `A-ZZZZZZ` found" in call.args["text"]
    assert bot.slack.calls_to("auth.test") == []  # no start-up or first-request auth.test


# --- authorisation -----------------------------------------------------------------------------


async def test_unknown_user_is_refused_politely_with_no_data(bot: Bot) -> None:
    answers = [
        await slash(bot, "/flags", ALPHA, user=STRANGER),
        await slash(bot, "/flags", "VS-9999999", user=STRANGER),
        await slash(bot, "/tasks", user=STRANGER),
        await slash(bot, "/ack", bot.alerts["pc_high"], user=STRANGER),
    ]
    for answer in answers:
        assert "not linked to an officer" in answer["text"]
        assert buttons(answer) == []
    # No hint whether a nominal exists: the answers for a real and a made-up reference are equal.
    assert answers[0] == answers[1]
    text = "\n".join(shown(a) for a in answers)
    for secret in (ALPHA, "Fictionalson", "1970", bot.alerts["pc_high"], "PC1234"):
        assert secret not in text
    assert (await bot.alert(bot.alerts["pc_high"])).state == "open"
    assert await bot.audit("flags.lookup") == [] and await bot.audit("tasks.list") == []
    refused = await bot.audit("slack.refused")
    assert [(e.actor, e.subject) for e in refused] == [
        (f"slack:{STRANGER}", c) for c in ("/flags", "/flags", "/tasks", "/ack")
    ]


async def test_unknown_user_cannot_press_acknowledge(sqlite_bot: Bot) -> None:
    bot = sqlite_bot
    alert_id = bot.alerts["pc_high"]
    body = block_action_body(STRANGER, "casewatch_ack", alert_id, response_url=bot.slack.url + "response.x")
    assert (await post_signed(bot.client, body)).status == 200
    [call] = await bot.slack.wait_for_calls("response.x", 1)
    assert "not linked to an officer" in call.args["text"]
    assert (await bot.alert(alert_id)).state == "open"


# --- the 3-second rule -------------------------------------------------------------------------


async def test_slow_answer_acknowledges_first_then_answers_by_response_url(sqlite_url: str) -> None:
    async with running_bot(sqlite_url) as bot:
        app = web.Application()
        # A zero budget forces the path a slow database would take.
        deps = BotDeps(bot.service.ctx, bot.service.sessions, answer_budget_seconds=0)
        mount_slack(app, bot.service.ctx, bot.service.sessions, deps=deps)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            body = command_body("/flags", ALPHA, CR, response_url=bot.slack.url + "response.slow")
            resp = await post_signed(client, body)
            assert resp.status == 200
            holding = await resp.json()
            assert holding["response_type"] == "ephemeral" and "Still working" in holding["text"]
            assert "Fictionalson".upper() not in shown(holding)
            [call] = await bot.slack.wait_for_calls("response.slow", 1)
            assert call.args["response_type"] == "ephemeral"
            assert "FICTIONALSON, Alpha Test" in shown(call.args)


async def test_slack_route_answers_503_without_a_signing_secret(sqlite_url: str) -> None:
    service = await make_service(sqlite_url, slack={"mode": "http"})
    try:
        async with client_for(service) as client:
            body = command_body("/flags", ALPHA, PC)
            resp = await client.post("/slack/events", data=body, headers=slack_headers(body, secret=""))
            assert resp.status == 503
    finally:
        await stop(service)


async def test_slack_mode_off_mounts_nothing(sqlite_url: str) -> None:
    service = await make_service(sqlite_url)  # tests.support default: slack.mode "off"
    try:
        async with client_for(service) as client:
            body = command_body("/flags", ALPHA, PC)
            resp = await client.post("/slack/events", data=body, headers=slack_headers(body))
            assert resp.status in (404, 405)
    finally:
        await stop(service)


def test_alert_times_are_shown_in_the_service_timezone() -> None:
    from zoneinfo import ZoneInfo

    from bot.render import moment

    summer = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert moment(summer, ZoneInfo("Europe/London")) == "01/07/2026 13:00"
    assert moment(summer + timedelta(days=180), ZoneInfo("Europe/London")) == "28/12/2026 12:00"


async def test_no_personal_data_in_logs_even_at_debug(
    sqlite_bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    bot = sqlite_bot
    caplog.set_level(logging.DEBUG)
    await slash(bot, "/flags", ALPHA, user=CR)
    await slash(bot, "/flags", "fictionalson 01/01/1970", user=PC)
    await slash(bot, "/flags", "sampleton", user=SGT)
    await slash(bot, "/flags", ALPHA, user=STRANGER)
    await slash(bot, "/tasks", user=PC)
    body = block_action_body(PC, "casewatch_flags_show", SAMPLE_A, response_url=bot.slack.url + "response.l")
    await post_signed(bot.client, body)
    await bot.slack.wait_for_calls("response.l", 1)
    logged = "\n".join(
        f"{r.getMessage()} {r.args!r}" for r in caplog.records if not r.name.startswith("aiosqlite")
    ).lower()
    for personal in ("fictionalson", "alpha test", "1970", "covert tactic", "violence (fictional)",
                     "sampleton", "charlie", "03/02/1981"):
        assert personal not in logged, personal


async def test_odd_input_gets_an_answer_not_an_error(bot: Bot) -> None:
    for typed in ("x" * 4000, "<script>&amp;</script>", "\u202e\u0000smith", "VS-" + "9" * 200, "🙂 🙂"):
        answer = await slash(bot, "/flags", typed)
        text = shown(answer)
        assert "Sorry, something went wrong" not in text
        assert "<script>" not in text  # echoed text is escaped for mrkdwn
    assert "No alert" in shown(await slash(bot, "/ack", "A-" + "Z" * 500))


# --- verification and logs (issue 12, class 6) ---------------------------------------------------

# A body an attacker (or a late but genuine request) could send: names, dates of birth, a response
# URL, and line breaks that would forge log lines if written as they are.
HOSTILE_LINES = (
    "surname=Fictionalson&date_of_birth=1970-01-01&response_url=https://hooks.slack.example/x\n"
    "2026-11-20 09:30:00,000 ERROR casewatch.api: forged line\r\n\u2028\u0085"
)


def _refusal_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if not r.name.startswith(("aiosqlite", "asyncio"))]


def _assert_one_bounded_line(records: list[logging.LogRecord], *, words: str) -> None:
    texts = [r.getMessage() for r in records]
    assert len([t for t in texts if words in t]) == 1, texts
    for record, text in zip(records, texts, strict=True):
        assert len(text) <= 200, text[:300]
        assert not any(c in text for c in "\n\r\u2028\u0085"), text[:300]
        assert record.exc_info is None
        for personal in ("fictionalson", "1970", "hooks.slack.example", "forged line", "sampleton"):
            assert personal not in text.lower(), personal


async def test_a_forged_request_logs_one_bounded_line_without_its_body(
    sqlite_bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = (HOSTILE_LINES * (500_000 // len(HOSTILE_LINES))).encode()
    assert len(body) > 450_000
    caplog.clear()
    resp = await post_signed(sqlite_bot.client, body, secret="forged-not-real")
    assert resp.status == 401
    _assert_one_bounded_line(_refusal_records(caplog), words="Slack request refused")


async def test_a_late_genuine_request_logs_one_bounded_line_without_its_body(
    sqlite_bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    body = command_body("/flags", "sampleton 03/02/1981", PC, response_url="https://hooks.slack.example/x")
    caplog.clear()
    resp = await post_signed(sqlite_bot.client, body, ts=NOW_TS - 6 * 60)
    assert resp.status == 401
    _assert_one_bounded_line(_refusal_records(caplog), words="Slack request refused")
    assert await sqlite_bot.audit("flags.lookup") == []


async def test_bolts_own_verification_logs_no_body(
    sqlite_bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    """Bolt's check behind ours (a request that reaches Bolt's dispatch unverified, e.g. at the
    edge of the window) logs the fixed line, not Bolt's line with the whole body."""
    from slack_bolt.request.async_request import AsyncBoltRequest

    from bot.app import build_bolt_app

    service = sqlite_bot.service
    bolt = build_bolt_app(service.settings, BotDeps(service.ctx, service.sessions))
    body = HOSTILE_LINES * 50
    headers: dict[str, Any] = {k.lower(): v for k, v in slack_headers(body.encode(), secret="forged").items()}
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    response = await bolt.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
    assert response.status == 401
    _assert_one_bounded_line(_refusal_records(caplog), words="Slack request refused")


@pytest.mark.parametrize(
    ("stamp", "signature"),
    [("\u00b2", None), ("\uff11\uff12\uff13", None), ("12 ", None), (None, "v0=\u00e9\u00e9")],
)
async def test_odd_signature_headers_are_a_401_not_a_500(
    sqlite_bot: Bot, stamp: str | None, signature: str | None
) -> None:
    body = command_body("/flags", ALPHA, PC)
    headers = slack_headers(body)
    if stamp is not None:
        headers["X-Slack-Request-Timestamp"] = stamp
    if signature is not None:
        headers["X-Slack-Signature"] = signature
    resp = await sqlite_bot.client.post("/slack/events", data=body, headers=headers)
    assert resp.status == 401
    assert resp.content_type == "application/json"


def _headers(body: bytes, ts: int, **kw: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in slack_headers(body, ts=ts, **kw).items()}


BODY = b"command=%2Fflags&text=VS-0000001"
VERIFICATION_CASES = [
    ("signed now", _headers(BODY, NOW_TS), None),
    ("signed 299 s ago", _headers(BODY, NOW_TS - 299), None),
    ("signed 301 s ago", _headers(BODY, NOW_TS - 301), "timestamp outside the 5-minute window"),
    ("signed 301 s ahead", _headers(BODY, NOW_TS + 301), "timestamp outside the 5-minute window"),
    ("signed now by the system's clock, not the service's", _headers(BODY, int(time.time()) - 86_400),
     "timestamp outside the 5-minute window"),
    ("another secret", _headers(BODY, NOW_TS, secret="forged"), "signature does not match"),
    ("no signature", {**_headers(BODY, NOW_TS), "x-slack-signature": ""}, "signature does not match"),
    ("non-ASCII signature", {**_headers(BODY, NOW_TS), "x-slack-signature": "v0=\u00e9"},
     "signature does not match"),
    ("no timestamp", {"x-slack-signature": "v0=00"}, "timestamp missing or not unix seconds"),
    ("full-width digits", {**_headers(BODY, NOW_TS), "x-slack-request-timestamp": "\uff11\uff12"},
     "timestamp missing or not unix seconds"),
]


@pytest.mark.parametrize(("headers", "problem"), [c[1:] for c in VERIFICATION_CASES],
                         ids=[c[0] for c in VERIFICATION_CASES])
def test_slack_verification_reads_the_service_clock(headers: dict[str, str], problem: str | None) -> None:
    verifier = slack_verifier(SIGNING_SECRET, FixedClock(T0))
    assert slack_signature_problem(BODY.decode(), headers, verifier) == problem


async def test_bolts_check_behind_ours_reads_the_same_clock(sqlite_bot: Bot) -> None:
    """A request signed at the service's time (a fixed clock, days from the system's) passes both
    checks: Bolt's verifier is ours."""
    assert abs(time.time() - NOW_TS) > 3600
    resp = await post_signed(sqlite_bot.client, command_body("/flags", ALPHA, PC))
    assert resp.status == 200


async def test_stopping_lets_an_acknowledged_button_finish_its_work(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A button is acknowledged at once and its work runs after (a lazy listener). Stopping the
    service right after the click must let that work finish before the database closes, not cut
    it off (the acknowledgement would be lost, and its connection left open)."""
    slow = bot_app.ack_reply

    async def slow_ack_reply(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await slow(*args, **kwargs)

    monkeypatch.setattr(bot_app, "ack_reply", slow_ack_reply)
    async with running_bot(sqlite_url) as bot:
        alert_id = bot.alerts["pc_high"]
        body = block_action_body(SGT, "casewatch_ack", alert_id, response_url=bot.slack.url + "response.x")
        assert (await post_signed(bot.client, body)).status == 200
    # The service is stopped: read the store afresh.
    engine = make_engine(sqlite_url)
    try:
        async with make_sessionmaker(engine)() as session:
            alert = await session.get(Alert, alert_id)
    finally:
        await engine.dispose()
    assert alert is not None and (alert.state, alert.acknowledged_by) == ("acknowledged", "SGT0001")
