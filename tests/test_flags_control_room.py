"""/flags for the control room (issue 15): in one ephemeral Block Kit answer, the first lines say
whether the person is wanted (recalled, unlawfully at large: the first line), dangerous (risk,
MAPPA category and level, warning markers) or breaching a requirement now (open breach alerts);
then the description, and, for roles cleared for it only, the home address, exclusion zones,
court orders in force with their prohibitions and the licence conditions; then how to reach the
offender manager and the last visit. Personal data is never read for a role not cleared for it,
and never reaches the audit log or a log line.

Through the real bot endpoint (signed like Slack's) with the case data sent as signed events, on
SQLite and PostgreSQL. All names, addresses, orders and references are fictional.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from bot import render
from casewatch.alerts.lifecycle import open_alert
from casewatch.directory import sync_directory
from casewatch.lookup import Found, Requester, look_up_flags
from casewatch.lookup.flags import _view_select
from casewatch.lookup.views import FlagsView, OrderView, PersonalView
from casewatch.model.alerts import AlertSpec
from casewatch.store.models import AuditEntry
from casewatch.wiring import Service, stop
from tests.slack_standin import SlackStandIn
from tests.support import client_for, envelope, make_service, nominal_data, signed_post
from tests.test_bot import (
    BOT_TOKEN,
    CR,
    PC,
    PC_SOUTH,
    SGT,
    Bot,
    block_action_body,
    bot_settings,
    post_signed,
    shown,
    slash,
)
from tests.test_flags_view import statements
from tests.test_render_hostile import ZONE, check_limits, hostile

REF = "VIS-TEST-0101"  # recalled, very high risk, MAPPA 3, every personal field, four orders
PLAIN = "VIS-TEST-0102"  # nothing personal recorded
ADDRESS = "1 Fictional Row, Testtown TT1 1AA"
DESCRIPTION = "Tall; fictional anchor tattoo on the left forearm"
CONDITION_1 = "Not to contact the fictional victim directly or indirectly"
CONDITION_2 = "Reside at Testtown approved premises (fictional)"
ZONE_1 = "Testtown town centre inside the ring road (fictional)"
PROHIBITION = "Not to enter Testpark playground (fictional)"
PROHIBITION_2 = "Not to own a device able to access the internet unless disclosed (fictional)"
OLD = "Discharged prohibition (fictional)"
LAPSED = "Lapsed prohibition (fictional)"
PERSONAL = (ADDRESS, CONDITION_1, CONDITION_2, ZONE_1, PROHIBITION, PROHIBITION_2, OLD, LAPSED)
CLEARED_NOTE = (
    "Home address, licence conditions, exclusion zones and court orders are shown only to cleared roles."
)


def _order(order_id: str, n: int, **data: Any) -> dict[str, Any]:
    body = {"order_id": order_id, "kind": "shpo", "made_on": "2021-06-01", "status": "active", **data}
    return envelope(
        "order.upsert", body, id=f"cr-{order_id}-{n}", visor_ref=REF, occurred_at="2026-11-01T09:00:00Z"
    )


CASES = [
    envelope("nominal.upsert", nominal_data(
        surname="Controlroomson", forenames="Golf Sample", date_of_birth="1972-07-07", category="1",
        mappa_level=3, risk_level="very_high", on_licence=True, licence_expiry="2028-01-31",
        home_address=ADDRESS, description=DESCRIPTION, licence_conditions=[CONDITION_1, CONDITION_2],
        exclusion_zones=[ZONE_1],
        markers=[
            {"code": "VIO", "label": "Violence (fictional)", "restricted": False},
            {"code": "XRS", "label": "Covert tactic (fictional)", "restricted": True},
        ],
    ), id="cr-upsert-1", visor_ref=REF, occurred_at="2026-11-01T09:00:00Z"),
    envelope("nominal.upsert", nominal_data(surname="Plainview", forenames="Hotel"), id="cr-upsert-2",
             visor_ref=PLAIN, occurred_at="2026-11-01T09:00:00Z"),
    envelope("recall.issued", {"recall_type": "emergency", "issued_at": "2026-11-19T08:00:00Z"},
             visor_ref=REF, id="cr-recall"),
    envelope("visit.recorded", {"visited_on": "2026-10-15"}, visor_ref=REF, id="cr-visit"),
    # No expiry date (until further order) last; the soonest to expire first.
    _order("ORD-CR-2", 1, kind="other", expires_on=None, prohibitions=[PROHIBITION_2]),
    _order("ORD-CR-1", 1, expires_on="2031-06-01", prohibitions=[PROHIBITION]),
    _order("ORD-OLD", 1, expires_on="2030-01-01", prohibitions=[OLD], status="discharged"),
    # Recorded active, but its expiry date has passed: not in force (rules.orders).
    _order("ORD-LAPSED", 1, expires_on="2026-01-01", prohibitions=[LAPSED]),
]


@asynccontextmanager
async def running(db_url: str) -> AsyncIterator[Bot]:
    async with SlackStandIn(token=BOT_TOKEN) as slack:
        service = await make_service(db_url, **bot_settings(slack))
        try:
            async with service.sessions() as session, session.begin():
                await sync_directory(session, service.settings)
            async with client_for(service) as client:
                resp = await signed_post(client, "/api/v1/events", CASES)
                assert resp.status == 202, await resp.text()
                async with service.sessions() as session, session.begin():
                    missed = await open_alert(session, AlertSpec(
                        "notification.missed", "high", REF, "north", subject="periodic:2026-11-18",
                        summary="Periodic notification missed", owner="PC1234",
                    ), service.ctx)
                assert missed is not None
                yield Bot(service, client, slack, {"missed": missed.id})
        finally:
            await stop(service)


@pytest.fixture
async def cr_bot(db_url: str) -> AsyncIterator[Bot]:
    async with running(db_url) as bot:
        yield bot


async def _audit(service: Service) -> list[AuditEntry]:
    async with service.sessions() as session:
        stmt = select(AuditEntry).where(AuditEntry.action == "flags.lookup").order_by(AuditEntry.id)
        return list((await session.execute(stmt)).scalars())


def _block_text(block: dict[str, Any]) -> str:
    return str(block.get("text", {}).get("text", ""))


async def test_the_first_lines_say_wanted_dangerous_breaching(cr_bot: Bot) -> None:
    answer = await slash(cr_bot, "/flags", REF, user=CR)
    blocks = answer["blocks"]
    # Wanted: the first line of all, and in the notification text.
    assert _block_text(blocks[0]).startswith(":rotating_light: *RECALLED / UNLAWFULLY AT LARGE*")
    assert answer["text"].startswith("RECALLED / UNLAWFULLY AT LARGE")
    # Who, and dangerous: the identity with the risk, category and MAPPA level beneath it.
    identity, risk = _block_text(blocks[1]).split("\n")
    assert identity.startswith(f"*{REF}*") and "CONTROLROOMSON, Golf Sample" in identity
    assert risk == ":warning: *Risk: Very high* \u00b7 Category 1 \u00b7 MAPPA level 3"
    # Breaching a requirement now: the open missed notification (SOA 2003 s.91).
    missed = cr_bot.alerts["missed"]
    assert _block_text(blocks[2]) == f":no_entry: *Possible breach:* notification.missed (high) `{missed}`"
    markers = _block_text(blocks[3])
    assert markers.startswith("*Markers*") and "Covert tactic (fictional)" in markers
    assert _block_text(blocks[4]) == f"*Description*\n{render.esc(DESCRIPTION)}"

    text = shown(answer)
    order = [
        ADDRESS, ZONE_1, "`ORD-CR-1` *SHPO* \u00b7 made 01/06/2021 \u00b7 expires 01/06/2031", PROHIBITION,
        "`ORD-CR-2` *order* \u00b7 made 01/06/2021 \u00b7 until further order", PROHIBITION_2,
        CONDITION_1, CONDITION_2, "*Offender manager*", "*Open alerts*",
        "This lookup is recorded in the audit log.",
    ]
    found = [text.find(render.esc(part)) if "*" not in part else text.find(part) for part in order]
    assert -1 not in found and found == sorted(found), dict(zip(order, found, strict=True))
    # The discharged order and the one past its expiry date are not in force.
    for gone in ("ORD-OLD", OLD, "ORD-LAPSED", LAPSED):
        assert gone not in text, gone
    # How to reach the offender manager, and the last visit.
    assert "PC Example (PC1234)" in text and "<@U0PC1234>" in text and "pc1234@force.example" in text
    assert "*Home visits*\nLast 15/10/2026" in text
    assert CLEARED_NOTE not in text

    [entry] = await _audit(cr_bot.service)
    assert entry.details["personal_data_shown"] is True and entry.details["unlawfully_at_large"] is True
    recorded = json.dumps([entry.subject, entry.purpose, entry.details])
    for personal in (*PERSONAL, DESCRIPTION, "Controlroomson", "ORD-CR-1"):
        assert personal not in recorded, personal


@pytest.mark.parametrize(
    ("user", "cleared"), [(PC, False), (PC_SOUTH, False), (SGT, True), (CR, True)],
    ids=["officer", "officer of another team", "supervisor", "control room"],
)
async def test_the_personal_part_only_for_cleared_roles(cr_bot: Bot, user: str, cleared: bool) -> None:
    # An officer of another team says why (need to know: tests/test_flags_need_to_know.py).
    typed = f"{REF} reason: fictional incident check" if user == PC_SOUTH else REF
    text = shown(await slash(cr_bot, "/flags", typed, user=user))
    for personal in (ADDRESS, CONDITION_1, CONDITION_2, ZONE_1, PROHIBITION, PROHIBITION_2, "ORD-CR-1"):
        assert (render.esc(personal) in text) is cleared, personal
    assert ("*Home address*" in text) is cleared and ("*Court orders in force*" in text) is cleared
    assert (CLEARED_NOTE in text) is not cleared
    # The rest of the picture is for everyone who may look the nominal up.
    for everyone in ("RECALLED / UNLAWFULLY AT LARGE", "*Risk: Very high*", "MAPPA level 3",
                     "Possible breach", render.esc(DESCRIPTION), "PC Example (PC1234)"):
        assert everyone in text, everyone
    [entry] = await _audit(cr_bot.service)
    assert entry.details["personal_data_shown"] is cleared


async def test_nothing_recorded_is_said_plainly(cr_bot: Bot) -> None:
    text = shown(await slash(cr_bot, "/flags", PLAIN, user=CR))
    assert "*Home address*\nnot recorded" in text and "*Court orders in force*\nnone on record" in text
    assert "*Exclusion zones*" not in text and "*Licence conditions*" not in text
    assert "*Description*" not in text and "RECALLED" not in text and "Possible breach" not in text


async def test_nothing_personal_in_logs(sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with running(sqlite_url) as bot:
        caplog.set_level(logging.DEBUG)
        await slash(bot, "/flags", REF, user=CR)
        await slash(bot, "/flags", "controlroomson", user=SGT)
        await slash(bot, "/flags", REF, user=PC)
        body = block_action_body(CR, "casewatch_flags_show", REF, response_url=bot.slack.url + "response.cr")
        assert (await post_signed(bot.client, body)).status == 200
        [call] = await bot.slack.wait_for_calls("response.cr", 1)
        assert call.args["response_type"] == "ephemeral" and ADDRESS in shown(call.args)
        logged = "\n".join(
            f"{r.getMessage()} {r.args!r}" for r in caplog.records if not r.name.startswith("aiosqlite")
        ).lower()
        for personal in (*PERSONAL, DESCRIPTION, "controlroomson", "golf sample"):
            assert personal.lower() not in logged, personal
        details = json.dumps([e.details for e in await _audit(bot.service)])
        for personal in (*PERSONAL, DESCRIPTION):
            assert personal not in details, personal


async def test_still_one_statement_for_a_cleared_lookup(cr_bot: Bot) -> None:
    service = cr_bot.service
    requester = Requester("CR0001", "Control Room Example", "north", frozenset({"control_room"}))
    with statements(service.engine) as seen:
        async with service.sessions() as session, session.begin():
            outcome = await look_up_flags(session, requester, REF, service.ctx)
    assert isinstance(outcome, Found) and outcome.view.personal is not None
    assert [o.order_id for o in outcome.view.personal.orders] == ["ORD-CR-1", "ORD-CR-2"]
    assert outcome.view.personal.orders[0].prohibitions == (PROHIBITION,)
    # Everything in one statement, then the audit entry and its nominal index (one statement on
    # PostgreSQL, two on SQLite).
    audit = ["WITH"] if service.engine.dialect.name == "postgresql" else ["INSERT", "INSERT"]
    assert seen == ["SELECT", *audit]


@pytest.mark.parametrize("dialect", [sqlite.dialect, postgresql.dialect], ids=["sqlite", "postgresql"])
def test_personal_columns_are_not_read_for_a_role_not_cleared(dialect: Any) -> None:
    dialect = dialect()
    uncleared = str(_view_select(False).compile(dialect=dialect))
    cleared = str(_view_select(True).compile(dialect=dialect))
    read = (
        "nominals.home_address", "nominals.licence_conditions", "nominals.exclusion_zones",
        "orders.prohibitions", "FROM orders",
    )
    for column in read:
        assert column not in uncleared and column in cleared, column
    assert "NULL AS home_address" in uncleared  # the same row shape, nothing in it


def _long_view(orders: int, prohibitions: int, text: str) -> FlagsView:
    personal = PersonalView(
        home_address=text[:300],
        licence_conditions=tuple(f"{i} {text}"[:500] for i in range(50)),
        exclusion_zones=tuple(f"{i} {text}"[:200] for i in range(20)),
        orders=tuple(
            OrderView(f"ORD-{n}", "sro", date(2024, 1, 1), date(2030, 1, 1),
                      tuple(f"{n}.{i} {text}"[:500] for i in range(prohibitions)))
            for n in range(orders)
        ),
    )
    view: FlagsView = hostile(FlagsView, "x")
    return dataclasses.replace(view, personal=personal)


def _sections(message: dict[str, Any]) -> list[str]:
    return [_block_text(b) for b in message["blocks"] if b["type"] == "section" and "text" in b]


def test_the_most_the_contract_allows_fits_in_slack() -> None:
    """50 conditions of 500 characters, 20 zones of 200 and a few orders (each escaped, so '&'
    becomes '&amp;') fit, whole, within 50 blocks of at most 3,000 characters."""
    message = render.flags_message(_long_view(3, 10, "Fictional condition & more " * 20), ZONE)
    check_limits(message)
    assert all(len(text) <= 3000 for text in _sections(message))
    text = shown(message)
    assert "see ViSOR" not in text
    assert text.count("Fictional condition &amp; more") >= 50 + 20 + 30
    assert _block_text(message["blocks"][0]).startswith(":rotating_light:")
    assert message["blocks"][-1]["type"] == "context"  # the audit note is never cut off


def test_more_than_slack_can_show_is_counted_not_dropped() -> None:
    message = render.flags_message(_long_view(8, 50, "&" * 500), ZONE)
    check_limits(message)
    assert len(message["blocks"]) == 50
    assert all(len(text) <= 3000 for text in _sections(message))
    assert "more lines: see ViSOR." in shown(message)
    assert message["blocks"][-1]["type"] == "context"
