"""The nineteenth session's attacker trial, each finding reproduced and then mended (fictional
data only):

- a ViSOR reference sent in another case made a second, unmanaged nominal: a recall sent as
  "vs-0001001" for the nominal held as "VS-0001001" left `/flags` without its UNLAWFULLY AT LARGE
  banner, and a border check so sent opened travel.unmatched_nominal instead of the nominal's
  travel alerts (references are now stored and matched in capitals: model.events.canonical_ref);
- `/flags` by a PNC ID or reference that two nominals share answered "something went wrong" (the
  candidates were built from the view's rows, which have no alias column);
- the candidate list named another team's nominals (names, dates of birth) without a reason, where
  one match alone is refused (need to know);
- U+2800 (drawn as blank) passed every text rule, so a "reason" of it opened another team's
  nominal and the audit log held a reason a reviewer reads as blank;
- a signed alerts-API cursor at year 1 (+14:00) or 9999 (-14:00) answered 500;
- a signed Slack body that is a JSON array or null answered 500;
- a captured signed `/flags` request sent again within Slack's 5-minute window was answered again,
  restricted markers included (bot.http.ReplayGuard now refuses a request it took before).

And the same session's newcomer's trial:
- `/flags` and `/tasks` showed a due instant at local midnight as the next day's 00:00 ("due
  05/12/2026 00:00") beside a summary saying "by 2026-12-04" (the mail says "end of 2026-12-04");
- `casewatch db upgrade` on an unreachable database ended in a traceback;
- `casewatch audit export | head` ended in a BrokenPipeError traceback.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from bot.http import ReplayGuard
from bot.render import due
from casewatch.cli import main
from casewatch.ingest.pipeline import IngestResult, ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.lookup.query import QueryError, clean_reason
from casewatch.model.events import canonical_ref
from casewatch.model.text_rules import TextKind, text_problem
from casewatch.store.models import Alert, Nominal
from integrations.mail_ingest.extract import extract, parse_mail
from integrations.mail_ingest.process import event_id_for
from integrations.mail_ingest.samples import border_alert_mail
from integrations.mail_ingest.template import load_template
from tests.support import envelope, nominal_data, service_client, signed_get
from tests.test_bot import (
    ALPHA,
    CR,
    NOW_TS,
    PC,
    PC_SOUTH,
    SOUTH,
    Bot,
    buttons,
    command_body,
    shown,
    slack_headers,
    slash,
)
from tests.test_bot import bot as bot  # noqa: F401  (fixture: SQLite and PostgreSQL)
from tests.test_bot import sqlite_bot as sqlite_bot  # noqa: F401  (fixture)

REASON = "incident at Testtown station (fictional)"


def _cursor_of(opened: str, alert_id: str) -> str:
    """A cursor as the alerts API makes one (casewatch.api.alerts): URL-safe base64 of [instant, id]."""
    return base64.urlsafe_b64encode(json.dumps([opened, alert_id]).encode()).decode().rstrip("=")


async def _ingest(bot: Bot, *sent: dict[str, Any]) -> IngestResult:
    envelopes, errors = parse_envelopes(list(sent))
    assert not errors, errors
    return await ingest(bot.service.sessions, envelopes, bot.service.ctx, source="api")


async def _kinds(bot: Bot, alert_ids: list[str]) -> list[tuple[str, str, str]]:
    async with bot.service.sessions() as session:
        stmt = select(Alert.kind, Alert.visor_ref, Alert.team).where(Alert.id.in_(alert_ids))
        return sorted((k, r, t) for k, r, t in (await session.execute(stmt)).all())


# --- one nominal whatever case its reference is sent in -----------------------------------------


async def test_a_recall_sent_in_lower_case_reaches_the_nominal_and_its_flags(bot: Bot) -> None:
    result = await _ingest(bot, envelope(
        "recall.issued", {"recall_type": "emergency", "issued_at": "2026-11-20T08:00:00Z"},
        visor_ref=ALPHA.lower(), id="r19-recall-lower",
    ))
    kinds = await _kinds(bot, result.alerts)
    assert kinds and all(ref == ALPHA and team == "north" for _, ref, team in kinds), kinds
    async with bot.service.sessions() as session:
        stmt = select(Nominal.visor_ref).where(Nominal.surname == "Fictionalson")
        refs = list((await session.execute(stmt)).scalars())
    assert refs == [ALPHA]  # no second nominal
    for typed in (ALPHA, ALPHA.lower()):
        assert "UNLAWFULLY AT LARGE" in shown(await slash(bot, "/flags", typed, user=CR))


async def test_a_border_check_sent_in_lower_case_opens_the_nominals_travel_alerts(bot: Bot) -> None:
    result = await _ingest(bot, envelope(
        "travel.border_alert",
        {"port": "Dover", "direction": "outbound", "checked_at": "2026-11-20T08:00:00Z"},
        visor_ref=ALPHA.lower(), id="r19-border-lower",
    ))
    kinds = await _kinds(bot, result.alerts)
    assert "travel.unnotified" in {k for k, _, _ in kinds}, kinds
    assert "travel.unmatched_nominal" not in {k for k, _, _ in kinds}
    assert {ref for _, ref, _ in kinds} == {ALPHA}


def test_a_reference_is_canonical_in_capitals_and_nothing_else_changes() -> None:
    [parsed], errors = parse_envelopes([envelope("nominal.upsert", nominal_data(), visor_ref="vs-abc/12")])
    assert not errors and parsed.visor_ref == "VS-ABC/12"
    # Non-ASCII is never folded into a valid reference ("\u00df".upper() is "SS"): still refused.
    assert canonical_ref("vs-stra\u00dfe") == "vs-stra\u00dfe"
    _, errors = parse_envelopes([envelope("nominal.upsert", nominal_data(), visor_ref="vs-stra\u00dfe")])
    assert errors and errors[0].field == "visor_ref"


def test_a_border_report_mail_gives_the_reference_in_capitals() -> None:
    # The same check re-sent with the reference in another case is the same event (its id).
    upper = extract(parse_mail(border_alert_mail(ALPHA)), load_template(None))
    lower = extract(parse_mail(border_alert_mail(ALPHA.lower())), load_template(None))
    assert upper.visor_ref == lower.visor_ref == ALPHA
    assert event_id_for(upper, ALPHA) == event_id_for(lower, str(lower.visor_ref))


async def test_the_alerts_api_filters_by_a_reference_in_any_case(bot: Bot) -> None:
    seen = []
    for typed in (SOUTH, SOUTH.lower()):
        answer = await signed_get(bot.client, "/api/v1/alerts", params={"visor_ref": typed})
        assert answer.status == 200, await answer.text()
        seen.append(sorted(a["id"] for a in (await answer.json())["alerts"]))
    assert seen[0] and seen[0] == seen[1]


# --- /flags when several nominals match -----------------------------------------------------------


async def test_a_pnc_id_two_nominals_share_lists_both_for_the_control_room(bot: Bot) -> None:
    await _ingest(bot, envelope(
        "nominal.upsert", nominal_data(surname="Duplicateson", forenames="India", pnc_id="80/12345Z"),
        visor_ref="VS-0009999", id="r19-pnc-dup",
    ))
    answer = await slash(bot, "/flags", "1980/0012345Z", user=CR)
    text = shown(answer)
    assert "2 nominals match" in text and "something went wrong" not in text
    assert sorted(v for _, v in buttons(answer)) == [ALPHA, "VS-0009999"]
    [entry] = await bot.audit("flags.lookup")
    assert entry.details["outcome"] == "several" and sorted(entry.nominals) == [ALPHA, "VS-0009999"]


async def test_another_teams_candidates_are_counted_not_named_without_a_reason(bot: Bot) -> None:
    # A second Southwell in team south: the north officer's surname search finds two south nominals.
    await _ingest(bot, envelope(
        "nominal.upsert", nominal_data(surname="Southwell", forenames="Golfina", date_of_birth="1966-06-06",
                                       team="south", offender_manager="PC5678"),
        visor_ref="VS-0002002", id="r19-south-2",
    ))
    plain = await slash(bot, "/flags", "southwell", user=PC)
    text = shown(plain)
    assert "2 nominals match" in text and "2 managed by another team not listed" in text
    assert "Foxtrot" not in text and "Golfina" not in text and "1966" not in text
    assert SOUTH not in text and "VS-0002002" not in text and buttons(plain) == []
    [entry] = await bot.audit("flags.lookup")
    assert entry.details["visor_refs_shown"] == [] and entry.details["withheld_need_to_know"] == 2
    assert sorted(entry.nominals) == [SOUTH, "VS-0002002"]  # who was looked for, in the index

    # With a reason both are listed, the reason carried on their buttons.
    reasoned = await slash(bot, "/flags", f"southwell reason: {REASON}", user=PC)
    assert "not listed" not in shown(reasoned)
    assert sorted(v for _, v in buttons(reasoned)) == [
        f"{SOUTH} reason: {REASON}", f"VS-0002002 reason: {REASON}",
    ]
    # Their own team's officer needs none; the control room neither.
    for user in (PC_SOUTH, CR):
        own = await slash(bot, "/flags", "southwell", user=user)
        assert "Foxtrot" in shown(own) and "not listed" not in shown(own)


# --- characters drawn as blank ---------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["\u2800", "\U0001d159"])
def test_characters_drawn_as_blank_are_refused_in_every_kind_of_field(blank: str) -> None:
    for kind in TextKind:
        problem = text_problem(f"north{blank}", kind)
        assert problem is not None and problem[0] == "blank_characters", (kind, problem)
    with pytest.raises(QueryError):
        clean_reason(blank * 5)
    _, errors = parse_envelopes([envelope("nominal.upsert", nominal_data(surname=f"Smith{blank}"))])
    assert errors and errors[0].field.endswith("surname")


@pytest.mark.parametrize("marks", ["...", "- - -", "12345", "!?!?"])
def test_a_reason_without_a_letter_is_refused(marks: str) -> None:
    with pytest.raises(QueryError, match="in words"):
        clean_reason(marks)
    assert clean_reason("job 123") == "job 123"


async def test_a_blank_looking_reason_opens_nothing(sqlite_bot: Bot) -> None:
    text = shown(await slash(sqlite_bot, "/flags", f"{SOUTH} reason: {chr(0x2800) * 3}", user=PC))
    assert "Foxtrot" not in text
    assert await sqlite_bot.audit("flags.reason_required") == []
    [entry] = await sqlite_bot.audit("flags.lookup")
    assert entry.details["outcome"] == "unreadable"


# --- hostile but signed requests answer 400, not 500 ----------------------------------------------


@pytest.mark.parametrize(
    "opened", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1899-12-31T23:00:00+00:00"]
)
async def test_a_cursor_outside_the_stored_years_is_a_bad_query(sqlite_url: str, opened: str) -> None:
    async with service_client(sqlite_url) as (_, client):
        resp = await signed_get(client, "/api/v1/alerts", params={"cursor": _cursor_of(opened, "A-1")})
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize("body", [b"[]", b"null", b"1", b'{"type":"event_callback","event":[]}',
                                  b"payload=%5B%5D", b"payload=null"])
async def test_signed_slack_bodies_of_the_wrong_shape_answer_400(sqlite_bot: Bot, body: bytes) -> None:
    headers = slack_headers(body)
    if not body.startswith(b"payload="):
        headers["Content-Type"] = "application/json"
    resp = await sqlite_bot.client.post("/slack/events", data=body, headers=headers)
    assert 400 <= resp.status < 500 or resp.status == 200, (resp.status, await resp.text())


# --- the newcomer's trial ---------------------------------------------------------------------------


LONDON = ZoneInfo("Europe/London")


@pytest.mark.parametrize(("at", "shown_as"), [
    (datetime(2026, 12, 5, 0, 0, tzinfo=LONDON), "end of 04/12/2026"),  # GMT
    (datetime(2026, 7, 2, 0, 0, tzinfo=LONDON), "end of 01/07/2026"),  # BST: 23:00 UTC the day before
    (datetime(2026, 12, 5, 9, 30, tzinfo=LONDON), "05/12/2026 09:30"),  # a time of day stays one
])
def test_a_due_instant_reads_as_the_mail_says_it(at: datetime, shown_as: str) -> None:
    assert due(at.astimezone(ZoneInfo("UTC")), LONDON) == shown_as


def test_db_upgrade_on_an_unreachable_database_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CASEWATCH_DATABASE__URL", raising=False)
    config = tmp_path / "casewatch.toml"
    config.write_text('[database]\nurl = "postgresql+asyncpg://u:s3cret-pw@127.0.0.1:1/none"\n')
    assert main(["db", "upgrade", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "casewatch db upgrade: database: cannot connect" in err and "check database.url" in err
    assert "Traceback" not in err and "s3cret-pw" not in err


def test_audit_export_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    config = tmp_path / "casewatch.toml"
    config.write_text(f'[database]\nurl = "sqlite+aiosqlite:///{db}"\n')
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    command = "import sys; from casewatch.cli import main; sys.exit(main(sys.argv[1:]))"
    child = subprocess.Popen(
        [sys.executable, "-c", command, "audit", "export", "--format", "json", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader has gone (`| head -0`) before anything was written
    with child.stderr:
        err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.parametrize("name", ["CASEWATCH_AUDT__KEY", "CASEWATCH_BOGUS__X"])
def test_a_variable_for_no_section_is_refused_not_ignored(name: str) -> None:
    from casewatch.config import ConfigError, load_config

    with pytest.raises(ConfigError) as refused:
        load_config(None, environ={name: "not-shown-0451"})
    assert name in str(refused.value) and "no such section" in str(refused.value)
    assert "not-shown-0451" not in str(refused.value)
    # The tests' and bench's own switches share the prefix, without "__": left alone.
    load_config(None, environ={"CASEWATCH_REQUIRE_POSTGRES": "1"})


def test_a_list_variable_not_written_as_json_is_a_config_error() -> None:
    from casewatch.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"CASEWATCH_DELIVERY__\* variable could not be read"):
        load_config(None, environ={"CASEWATCH_DELIVERY__FALLBACK_SEVERITIES": "critical"})



# --- a signed Slack request sent again --------------------------------------------------------------


async def test_a_captured_slack_request_sent_again_is_refused(sqlite_bot: Bot) -> None:
    body = command_body("/flags", ALPHA, CR)
    headers = slack_headers(body)
    first = await sqlite_bot.client.post("/slack/events", data=body, headers=headers)
    assert first.status == 200 and "FICTIONALSON" in shown(await first.json())
    again = await sqlite_bot.client.post("/slack/events", data=body, headers=headers)
    assert again.status == 401 and "FICTIONALSON" not in await again.text()
    assert len(await sqlite_bot.audit("flags.lookup")) == 1  # nothing done for the copy
    # The same question asked again is another request (Slack gives it its own trigger_id).
    fresh = command_body("/flags", ALPHA, CR)
    post = sqlite_bot.client.post
    assert (await post("/slack/events", data=fresh, headers=slack_headers(fresh))).status == 200
    # As is the same body signed at another second.
    assert (await post("/slack/events", data=body, headers=slack_headers(body, ts=NOW_TS + 1))).status == 200


def test_the_replay_guard_forgets_past_the_window_and_keeps_to_its_limit() -> None:
    guard = ReplayGuard(window_seconds=360, limit=3)
    assert guard.first_time("v0=a", 1000.0) and not guard.first_time("v0=a", 1001.0)
    assert guard.first_time("v0=a", 1000.0 + 361)  # the window (and its timestamp) has passed
    for n, sig in enumerate(("v0=b", "v0=c", "v0=d")):
        assert guard.first_time(sig, 1400.0 + n)
    assert len(guard._seen) == 3  # at the limit the oldest went first
    assert not guard.first_time("v0=d", 1410.0)
