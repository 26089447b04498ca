"""Need-to-know /flags (issue 16): an officer looking up a nominal another team manages must say
why (`/flags <query> reason: <why>`); supervisors, SPOCs, the control room and admins need not.
Without a reason nothing about the nominal is shown and the refusal is audited; with one the
reason is in the audit entry and the answer says the lookup was recorded. Every audit entry of a
demo-like flow (open, deliver, acknowledge, look up) names its nominal (audit_nominals).

Through the real bot endpoint (requests signed like Slack's), on SQLite and PostgreSQL. All
names and references are fictional.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import select

from casewatch.lookup import Requester, parse_query
from casewatch.lookup.query import QueryError, split_reason
from casewatch.store.models import AuditEntry, AuditNominal
from tests.test_bot import (
    ALPHA,
    PC,
    PC_SOUTH,
    SOUTH,
    Bot,
    block_action_body,
    buttons,
    post_signed,
    running_bot,
    shown,
    slash,
)
from tests.test_delivery_support import make_worker

SOUTH_NAME = "Southwell"  # SOUTH's surname (tests.test_bot)
# Officers of team south with each force-wide role (fictional), beside tests.test_bot's.
FORCE_WIDE = {
    role: {
        "id": f"FW{role.upper()[:6]}", "name": f"{role} Example", "email": f"fw.{role}@force.example",
        "slack_user_id": f"U0FW{role.upper()[:6]}", "team": "south", "roles": ["officer", role],
    }
    for role in ("supervisor", "spoc", "control_room", "admin")
}
REASON = "control-room incident at Testtown station (fictional)"


@asynccontextmanager
async def need_to_know_bot(db_url: str) -> AsyncIterator[Bot]:
    async with running_bot(db_url, FORCE_WIDE.values()) as running:
        yield running


@pytest.fixture
async def bot(db_url: str) -> AsyncIterator[Bot]:
    async with need_to_know_bot(db_url) as running:
        yield running


async def _nominals_of(bot: Bot, entry_id: int) -> list[str]:
    async with bot.service.sessions() as session:
        stmt = select(AuditNominal.visor_ref).where(AuditNominal.audit_id == entry_id)
        return sorted((await session.execute(stmt)).scalars())


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("typed", "query", "reason"), [
    ("VS-0002001 reason: incident", "VS-0002001 ", " incident"),
    ("VS-0002001 REASON:incident", "VS-0002001 ", "incident"),
    ("smith reason: why reason: more", "smith ", " why reason: more"),  # the first keyword only
    ("smith reasonable", "smith reasonable", None),  # a word that starts with it is no keyword
])
def test_reason_keyword_splits_the_query_from_the_reason(typed: str, query: str, reason: str | None) -> None:
    assert split_reason(typed) == (query, reason)


def test_reason_is_tidied_and_kept_apart_from_the_query() -> None:
    parsed = parse_query("VS-0002001   reason:  stop\tcheck   on the A1  ")
    assert parsed is not None
    assert (parsed.text, parsed.identifier) == ("VS-0002001", "VS-0002001")
    assert parsed.reason == "stop check on the A1"


@pytest.mark.parametrize("reason", [
    "", "   ", "ab", "x" * 201, "look\u202eup", "look\u200bup", "look\x00up", "look\x1bup",
])
def test_reasons_too_short_too_long_or_hiding_characters_are_refused(reason: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(f"VS-0002001 reason: {reason}")
    assert reason.strip() == "" or reason not in str(caught.value)  # never echoed


def test_force_wide_roles_need_no_reason_and_own_cases_need_none() -> None:
    officer = Requester("PC1", "PC", "north", frozenset({"officer"}))
    assert officer.needs_reason_for("south", "PC9")
    assert not officer.needs_reason_for("north", "PC9")  # own team
    assert not officer.needs_reason_for("south", "PC1")  # their own case, another team's books
    for role in ("supervisor", "spoc", "control_room", "admin"):
        assert not Requester("X1", "X", "north", frozenset({"officer", role})).needs_reason_for("south", "")


# --- through the bot ----------------------------------------------------------------------------


async def test_another_teams_nominal_without_a_reason_shows_nothing_and_is_audited(bot: Bot) -> None:
    answer = await slash(bot, "/flags", SOUTH, user=PC)
    text = shown(answer)
    assert "managed by another team" in text and f"/flags {SOUTH} reason:" in text
    for secret in (SOUTH_NAME, "Foxtrot", "south", "PC5678", "Markers", "Open alerts"):
        assert secret not in text
    [refusal] = await bot.audit("flags.reason_required")
    assert (refusal.actor, refusal.subject, refusal.nominals) == ("PC1234", SOUTH, [SOUTH])
    assert refusal.details["visor_refs_shown"] == [] and "reason" not in refusal.details
    assert "no reason" in refusal.purpose
    assert await _nominals_of(bot, refusal.id) == [SOUTH]
    assert await bot.audit("flags.lookup") == []


async def test_a_surname_that_finds_only_another_teams_nominal_is_refused_alike(bot: Bot) -> None:
    text = shown(await slash(bot, "/flags", SOUTH_NAME.lower(), user=PC))
    assert "managed by another team" in text and SOUTH not in text and "Foxtrot" not in text
    [refusal] = await bot.audit("flags.reason_required")
    assert refusal.nominals == [SOUTH]


async def test_with_a_reason_the_flags_are_shown_and_the_reason_recorded(bot: Bot) -> None:
    answer = await slash(bot, "/flags", f"{SOUTH} reason: {REASON}", user=PC)
    text = shown(answer)
    assert SOUTH_NAME.upper() in text and "*Markers*" in text
    assert f"This lookup is recorded in the audit log (reason: {REASON})." in text
    [entry] = await bot.audit("flags.lookup")
    assert (entry.subject, entry.purpose, entry.nominals) == (SOUTH, REASON, [SOUTH])
    assert entry.details["reason"] == REASON and entry.details["need_to_know"] == "reason_given"
    assert await _nominals_of(bot, entry.id) == [SOUTH]


async def test_own_team_needs_no_reason_and_the_answer_says_it_is_recorded(bot: Bot) -> None:
    text = shown(await slash(bot, "/flags", SOUTH, user=PC_SOUTH))
    assert SOUTH_NAME.upper() in text and "This lookup is recorded in the audit log." in text
    [entry] = await bot.audit("flags.lookup")
    assert entry.details["need_to_know"] == "own_case" and "reason" not in entry.details
    assert entry.purpose == "lookup of a nominal the requester's own team manages"


@pytest.mark.parametrize("role", sorted(FORCE_WIDE))
async def test_force_wide_roles_of_another_team_need_no_reason(bot: Bot, role: str) -> None:
    officer = FORCE_WIDE[role]
    text = shown(await slash(bot, "/flags", ALPHA, user=str(officer["slack_user_id"])))
    assert "FICTIONALSON" in text and "managed by another team" not in text
    [entry] = await bot.audit("flags.lookup")
    assert (entry.actor, entry.nominals) == (officer["id"], [ALPHA])
    assert entry.details["need_to_know"] == "force_wide_role"
    assert entry.purpose.startswith("lookup by a force-wide role")


@pytest.mark.parametrize("hostile", [
    "urgent\u202etxt.exe", "zero\u200bwidth", "x" * 500, "     ", "\u200b\u200b\u200b",
])
async def test_hostile_reasons_are_refused_and_never_echoed(bot: Bot, hostile: str) -> None:
    text = shown(await slash(bot, "/flags", f"{SOUTH} reason: {hostile}", user=PC))
    assert "reason" in text and SOUTH_NAME.upper() not in text
    if hostile.strip():
        assert hostile not in text
    assert await bot.audit("flags.reason_required") == []
    [entry] = await bot.audit("flags.lookup")
    assert entry.details["outcome"] == "unreadable" and "reason" not in entry.details
    assert entry.subject == SOUTH  # the query, never the refused reason


@pytest.mark.parametrize("markup", ["<!channel> look", "*bold* _it_ ~s~ `c`", "<https://x.example|click>"])
async def test_mrkdwn_in_a_reason_is_escaped_in_the_answer(bot: Bot, markup: str) -> None:
    answer = await slash(bot, "/flags", f"{SOUTH} reason: {markup}", user=PC)
    context = shown(answer)
    assert "This lookup is recorded in the audit log (reason: " in context
    assert "<!channel>" not in context and "<https://" not in context and "*bold*" not in context
    [entry] = await bot.audit("flags.lookup")
    assert entry.details["reason"] == markup  # stored as typed (tidied), escaped only where shown


async def test_own_teams_candidates_need_no_reason_and_buttons_carry_one_given(bot: Bot) -> None:
    # The Sampletons are north's: their own team's officer needs no reason for the list. (Another
    # team's officer sees them counted, not named: tests/test_review19_attack.py.)
    plain = await slash(bot, "/flags", "sampleton", user=PC)
    assert "2 nominals match" in shown(plain)
    [entry] = await bot.audit("flags.lookup")
    assert entry.details["outcome"] == "several" and len(entry.nominals) == 2
    assert sorted(entry.nominals) == sorted(entry.details["visor_refs_shown"])
    values = [value for _, value in buttons(plain)]
    assert len(values) == 2 and all(" reason:" not in v for v in values)

    with_reason = await slash(bot, "/flags", f"sampleton reason: {REASON}", user=PC_SOUTH)
    values = [value for _, value in buttons(with_reason)]
    assert values and all(v.endswith(f" reason: {REASON}") for v in values)
    # Pressing Show with the carried reason shows the flags; without one, the refusal. The button
    # is acknowledged first and answered through its response URL after (a lazy listener).
    shown_url, refused_url = bot.slack.url + "response.shown", bot.slack.url + "response.refused"
    body = block_action_body(PC_SOUTH, "casewatch_flags_show", values[0], response_url=shown_url)
    assert (await post_signed(bot.client, body)).status == 200
    await bot.slack.wait_for_calls("response.shown", 1)
    found = await bot.audit("flags.lookup")
    assert found[-1].details["outcome"] == "found" and found[-1].details["reason"] == REASON
    bare = values[0].split(" ", 1)[0]
    body = block_action_body(PC_SOUTH, "casewatch_flags_show", bare, response_url=refused_url)
    assert (await post_signed(bot.client, body)).status == 200
    await bot.slack.wait_for_calls("response.refused", 1)
    [refusal] = await bot.audit("flags.reason_required")
    assert refusal.nominals == [bare]


# --- every entry names its nominal ------------------------------------------------------------


async def test_a_demo_like_flow_names_the_nominal_on_every_entry(bot: Bot) -> None:
    alert_id = bot.alerts["south"]  # about SOUTH, team south
    worker, _ = make_worker(bot.service.sessions, bot.service.ctx)
    await worker.run_until_idle()
    await slash(bot, "/ack", f"{alert_id} spoke to the nominal (fictional)", user=PC_SOUTH)
    await slash(bot, "/flags", SOUTH, user=PC_SOUTH)
    await slash(bot, "/tasks", user=PC_SOUTH)
    async with bot.service.sessions() as session:
        entries = list((await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())
        index = {(n.audit_id, n.visor_ref) for n in (await session.execute(select(AuditNominal))).scalars()}
    about: dict[str, list[AuditEntry]] = {}
    for entry in entries:
        lookup = entry.action in ("flags.lookup", "tasks.list") and entry.actor == "PC5678"
        if entry.subject == alert_id or lookup:
            about.setdefault(entry.action, []).append(entry)
    assert {"alert.opened", "delivery.sent", "alert.acknowledged", "flags.lookup", "tasks.list"} <= set(about)
    for action, found in about.items():
        for entry in found:
            assert SOUTH in entry.nominals, action
            assert (entry.id, SOUTH) in index, action
            assert entry.purpose and entry.purpose != entry.details.get("kind"), action
    sent = about["delivery.sent"][0]
    assert sent.purpose.startswith("delivered a new alert for ")
    assert sent.purpose.endswith(": notification.missed")
