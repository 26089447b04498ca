"""Severity rises with time, and a step up re-notifies (issue 14), end to end through the real scan
on SQLite and PostgreSQL: the live alert keeps its id, its severity goes up (never down), the
raise is audited, and the kind's route and everyone who already heard of it are told again.

Driven by action.overdue (medium; high from `action_very_overdue_days` [28] days late, a local
policy after the 2011 inspection) and by notification.missed (SOA 2003 s.85(1): the periodic
notification within a year of the last; `triggers.missed_notification_severity`, default
{1: "high", 28: "critical"}, by days after the due day).
"""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import acknowledge, raise_severity, resolve
from casewatch.config import ConfigError, Settings, load_config
from casewatch.context import Context
from casewatch.delivery import render
from casewatch.model.alerts import AlertSpec
from casewatch.model.results import LiveAlert, RuleResult
from casewatch.routing.escalation import escalate_due
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Alert, Delivery
from casewatch.triggers.reconcile import apply
from casewatch.triggers.scan import ScanSummary, run_scan
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.test_delivery_support import (
    audits,
    deliveries,
    mail_fixture,  # noqa: F401 (the `mail` fixture)
    make_ctx,
    make_settings,
    make_worker,
    setup_directory,
    slack_fixture,  # noqa: F401 (the `slack` fixture)
)
from tests.test_triggers_case_data import action, nominal, utc

Sessions = async_sessionmaker[AsyncSession]

REF = "VS-0000040"
DUE = date(2026, 11, 20)  # due day; overdue from the start of 2026-11-21 (Europe/London = UTC in winter)
DAY_1 = "2026-11-21T00:00:00Z"
DAY_2 = "2026-11-22T00:00:00Z"
DAY_27 = "2026-12-17T12:00:00Z"
DAY_28 = "2026-12-18T00:00:00Z"
# The owner hears of an overdue action (the default route); the team channel is on the route when
# the alert opens and off it at the raise, and the SPOC the other way round, so that a raise is
# seen to go to both the route of the day and everyone who heard before.
ROUTE_AT_OPENING = {"action.overdue": ["owner", "team_channel"]}
ROUTE_AT_RAISE = {"action.overdue": ["owner", "spoc"]}


def _settings(slack: SlackStandIn, mail: MailSink, routes: dict[str, list[str]]) -> Settings:
    # No repeat reminders (issue 15; tests/test_reminders.py): here every delivery is counted.
    return make_settings(
        slack_url=slack.url, smtp_port=mail.port, routing={"routes": routes},
        triggers={"repeat_reminder_hours": {}},
    )


async def _seed_action(sessions: Sessions, settings: Settings) -> None:
    await setup_directory(sessions, settings)
    async with sessions.begin() as s:
        # notified this month: owes no notification, so only the action is in play
        s.add(nominal(REF, last_notification_on=date(2026, 11, 1)))
        s.add(action("MAPP-40", REF, DUE))


async def _scan(sessions: Sessions, settings: Settings, at: str) -> tuple[ScanSummary, Context]:
    ctx = make_ctx(settings, utc(at))
    return await run_scan(sessions, ctx), ctx


async def _alert(sessions: Sessions, kind: str) -> Alert:
    async with sessions() as s:
        return (await s.execute(select(Alert).where(Alert.kind == kind))).scalar_one()


def _targets(rows: list[Delivery]) -> set[tuple[str, str]]:
    return {(d.channel, d.target) for d in rows}


async def test_an_overdue_action_steps_up_once_and_everyone_who_heard_is_told(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink
) -> None:
    opening = _settings(slack, mail, ROUTE_AT_OPENING)
    await _seed_action(sessions, opening)

    # Day 1 overdue: one alert, medium, to its route (owner by Slack DM, the team channel).
    summary, ctx = await _scan(sessions, opening, DAY_1)
    assert dict(summary.tally.opened) == {"action.overdue": 1} and not summary.tally.raised
    first = await _alert(sessions, "action.overdue")
    assert (first.severity, first.state, first.version) == ("medium", "open", 1)
    assert _targets(await deliveries(sessions, purpose="opened")) == {
        ("slack", "U0PC1234"), ("slack", "C0NORTH"),
    }
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    # Day 2: nobody acknowledged, so the medium chain's first step mails the supervisors.
    assert await escalate_due(sessions, make_ctx(opening, utc(DAY_2))) == [first.id]
    worker, _ = make_worker(sessions, make_ctx(opening, utc(DAY_2)))
    await worker.run_until_idle()
    [first_mail] = mail.messages
    assert first_mail["To"] == "sgt.north@force.example"

    # Day 27: still medium; nothing new is written.
    before = len(await deliveries(sessions))
    summary, _ = await _scan(sessions, opening, DAY_27)
    assert not summary.tally.opened and not summary.tally.raised and not summary.tally.resolved
    assert len(await deliveries(sessions)) == before
    assert (await _alert(sessions, "action.overdue")).severity == "medium"

    # Day 28: the same alert, high; audited; told again, with its route changed meanwhile.
    raising = _settings(slack, mail, ROUTE_AT_RAISE)
    summary, ctx = await _scan(sessions, raising, DAY_28)
    assert dict(summary.tally.raised) == {"action.overdue": 1} and not summary.tally.opened
    assert "alerts raised: 1" in summary.lines() and "  action.overdue: 1" in summary.lines()
    raised = await _alert(sessions, "action.overdue")
    assert (raised.id, raised.severity, raised.state) == (first.id, "high", "open")
    assert raised.version > first.version
    [entry] = await audits(sessions, "alert.severity_raised")
    assert entry.subject == first.id and entry.actor == "system"
    assert (entry.details["from"], entry.details["to"]) == ("medium", "high")
    told = await deliveries(sessions, purpose="raised")
    # the route of the day (owner, SPOC) and everyone who heard (owner, team channel,
    # supervisors), each once
    assert sorted((d.channel, d.target) for d in told) == [
        ("email", "north.spoc@force.example"), ("email", "sgt.north@force.example"),
        ("slack", "C0NORTH"), ("slack", "U0PC1234"),
    ]
    assert all(d.payload["severity"] == "high" and d.payload["raised_from"] == "medium" for d in told)
    # The open alert's escalation is re-armed for high from now: step 0, the high chain's first
    # wait (an hour, to the supervisors).
    assert raised.escalation_step == 0
    assert raised.next_escalation_at == utc(DAY_28) + timedelta(hours=1)
    assert raised.escalation_chain[0]["receivers"] == ["supervisors"]

    # Delivered: Slack messages are edited to HIGH and the raise is replied and broadcast in
    # their thread; the supervisors' mail is a reply to the first, subject with the new severity.
    seen = len(slack.calls)
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    updates = [c for c in slack.calls[seen:] if c.method == "chat.update"]
    assert len(updates) == 2 and all("[HIGH] action.overdue" in u.args["text"] for u in updates)
    replies = [c for c in slack.calls_to("chat.postMessage") if c.args.get("reply_broadcast")]
    assert len(replies) == 2
    assert all("Severity raised from medium to high" in r.args["text"] for r in replies)
    reply = next(m for m in mail.messages if m["To"] == "sgt.north@force.example" and m is not first_mail)
    assert reply["In-Reply-To"] == first_mail["Message-ID"]
    assert reply["Subject"].startswith(f"[casewatch] HIGH action.overdue {REF} {first.id}: Severity raised")
    spoc = next(m for m in mail.messages if m["To"] == "north.spoc@force.example")
    assert spoc["In-Reply-To"] is None  # the SPOC hears of it for the first time
    assert all(d.state == "sent" for d in await deliveries(sessions))

    # A re-run at day 28 changes nothing.
    count = len(await deliveries(sessions))
    again, _ = await _scan(sessions, raising, DAY_28)
    assert not again.tally.raised and not again.tally.opened and not again.tally.resolved
    assert "alerts raised: 0" in again.lines()
    assert len(await deliveries(sessions)) == count
    assert len(await audits(sessions, "alert.severity_raised")) == 1
    assert (await _alert(sessions, "action.overdue")).version == raised.version


async def test_an_acknowledged_alert_is_told_again_and_stays_acknowledged(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink
) -> None:
    settings = _settings(slack, mail, ROUTE_AT_OPENING)
    await _seed_action(sessions, settings)
    await _scan(sessions, settings, DAY_1)
    first = await _alert(sessions, "action.overdue")
    async with sessions.begin() as s:
        ctx = make_ctx(settings, utc(DAY_2))
        outcome = await acknowledge(s, first.id, "PC1234", "api", ctx, outcome="chased")
    assert outcome.status == "acknowledged"

    summary, _ = await _scan(sessions, settings, DAY_28)
    assert dict(summary.tally.raised) == {"action.overdue": 1}
    raised = await _alert(sessions, "action.overdue")
    assert (raised.severity, raised.state) == ("high", "acknowledged")
    assert (raised.acknowledged_by, raised.acknowledged_outcome) == ("PC1234", "chased")
    assert raised.next_escalation_at is None  # acknowledged: no chain runs again
    told = await deliveries(sessions, purpose="raised")
    assert _targets(told) == {("slack", "U0PC1234"), ("slack", "C0NORTH")}
    assert all(d.payload["state"] == "acknowledged" for d in told)
    [entry] = await audits(sessions, "alert.severity_raised")
    assert (entry.details["from"], entry.details["to"]) == ("medium", "high")


async def test_a_severity_is_never_lowered(sessions: Sessions, slack: SlackStandIn, mail: MailSink) -> None:
    """A rule asking for less than the live severity (a longer threshold configured since, say)
    leaves the alert as it is, and tells nobody."""
    settings = _settings(slack, mail, ROUTE_AT_OPENING)
    await _seed_action(sessions, settings)
    await _scan(sessions, settings, DAY_28)  # first seen 28 days late: opened high
    alert = await _alert(sessions, "action.overdue")
    assert alert.severity == "high"
    later = make_settings(
        slack_url=slack.url, smtp_port=mail.port, routing={"routes": ROUTE_AT_OPENING},
        triggers={"action_very_overdue_days": 60},
    )
    count = len(await deliveries(sessions))
    summary, _ = await _scan(sessions, later, "2026-12-19T00:00:00Z")
    assert not summary.tally.raised and not summary.tally.opened and not summary.tally.resolved
    after = await _alert(sessions, "action.overdue")
    assert (after.severity, after.version) == ("high", alert.version)
    assert len(await deliveries(sessions)) == count

    # Straight through reconcile.apply and lifecycle.raise_severity: lower or equal is no raise.
    ctx = make_ctx(settings, utc("2026-12-19T00:00:00Z"))
    spec = AlertSpec("action.overdue", "medium", REF, "north", "MAPP-40", summary="x")
    async with sessions.begin() as s:
        tally = await apply(s, RuleResult((spec,)), ctx, live=[LiveAlert(spec.kind, REF, "MAPP-40", "high")])
        assert not tally.raised and not tally.pending
        for severity in ("low", "medium", "high"):
            assert await raise_severity(s, "action.overdue", REF, "MAPP-40", severity, ctx) is None
    assert not await audits(sessions, "alert.severity_raised")


async def test_a_resolved_alert_is_not_raised(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink
) -> None:
    settings = _settings(slack, mail, ROUTE_AT_OPENING)
    await _seed_action(sessions, settings)
    await _scan(sessions, settings, DAY_1)
    ctx = make_ctx(settings, utc(DAY_28))
    async with sessions.begin() as s:
        alert = await s.get(Alert, (await _alert(sessions, "action.overdue")).id)
        assert alert is not None and await resolve(s, alert, "action done", ctx)
    async with sessions.begin() as s:
        # what a scan that read the alert as live before it resolved would ask for
        spec = AlertSpec("action.overdue", "high", REF, "north", "MAPP-40", summary="x")
        live = [LiveAlert(spec.kind, REF, "MAPP-40", "medium")]
        tally = await apply(s, RuleResult((spec,)), ctx, live=live)
    assert not tally.raised
    assert (await _alert(sessions, "action.overdue")).severity == "medium"
    assert not await deliveries(sessions, purpose="raised")


async def test_racing_raises_raise_once(pg_url: str, slack: SlackStandIn, mail: MailSink) -> None:
    """Two transactions raising the same alert at once (PostgreSQL, real row locks): the WHERE
    clause (still live, still lower) lets one through; the other finds it raised and does nothing."""
    engine = make_engine(pg_url)
    sessions = make_sessionmaker(engine)
    try:
        settings = _settings(slack, mail, ROUTE_AT_OPENING)
        await _seed_action(sessions, settings)
        await _scan(sessions, settings, DAY_1)
        ctx = make_ctx(settings, utc(DAY_28))
        first_in = asyncio.Event()

        async def one(hold: bool) -> Alert | None:
            async with sessions.begin() as s:
                raised = await raise_severity(s, "action.overdue", REF, "MAPP-40", "high", ctx)
                if hold:
                    first_in.set()
                    await asyncio.sleep(0.3)  # hold the row lock while the other one waits on it
                return raised

        async def second() -> Alert | None:
            await first_in.wait()
            return await one(False)

        results = await asyncio.gather(one(True), second())
        assert [r is not None for r in results] == [True, False]
        assert len(await audits(sessions, "alert.severity_raised")) == 1
        alert = await _alert(sessions, "action.overdue")
        assert (alert.severity, alert.version) == ("high", 2)
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("payload", "line"),
    [
        ({"raised_from": "high", "severity": "critical", "days_overdue": 28},
         "Severity raised from high to critical: now 28 days overdue"),
        ({"raised_from": "high", "severity": "critical", "days_overdue": 1},
         "Severity raised from high to critical: now 1 day overdue"),
        ({"raised_from": "medium", "severity": "high"}, "Severity raised from medium to high"),
    ],
)
def test_the_raise_is_rendered_from_what_to_what_and_why(payload: dict[str, Any], line: str) -> None:
    p = {
        "alert_id": "A-TEST40", "kind": "notification.missed", "visor_ref": REF, "team": "north",
        "state": "open", "change": "raised", "summary": "Missed periodic notification", **payload,
    }
    assert render.change_line(p) == line
    headline = f"{payload['severity'].upper()} notification.missed {REF} A-TEST40"
    assert render.subject(p) == f"[casewatch] {headline}: {line}"
    assert render.chat_text(p).endswith(f"| {line}")
    assert render.reply_text(p) == f"{line} (A-TEST40)"
    assert line in render.plain_text(p) and line in render.html_text(p)


def test_hostile_severities_in_a_raise_are_shown_not_obeyed() -> None:
    p = {
        "alert_id": "A-TEST41", "kind": "action.overdue", "visor_ref": REF, "team": "north",
        "state": "open", "change": "raised", "raised_from": "<!channel>\nBcc: x@evil.example",
        "severity": "high",
    }
    assert "<!channel>" not in render.chat_text(p) and "&lt;!channel&gt;" in render.chat_text(p)
    assert "\n" not in render.subject(p)


def test_missed_notification_steps_that_fall_are_refused(tmp_path: Path) -> None:
    """A later step lower than an earlier one would lower a live alert's severity: refused when
    the config is read (and so never applied; the raise never lowers anyway)."""
    path = tmp_path / "casewatch.toml"
    table = "[triggers.missed_notification_severity]\n"
    path.write_text(table + '1 = "critical"\n28 = "high"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"triggers\.missed_notification_severity.*must not fall"):
        load_config(path, environ={})
    path.write_text(table + '1 = "high"\n28 = "critical"\n', encoding="utf-8")
    assert load_config(path, environ={}).triggers.missed_notification_severity == {1: "high", 28: "critical"}


async def test_a_missed_notification_steps_up_from_high_to_critical(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink
) -> None:
    """SOA 2003 s.85(1): notified 20 Nov 2025, the periodic notification is due by the end of
    20 Nov 2026. Missed from 21 Nov (day 1 overdue: high); day 28 (18 Dec) is critical under the
    default triggers.missed_notification_severity {1: "high", 28: "critical"}."""
    opening = _settings(slack, mail, {"notification.missed": ["owner", "team_channel"]})
    await setup_directory(sessions, opening)
    async with sessions.begin() as s:
        s.add(nominal(REF, last_notification_on=date(2025, 11, 20)))

    summary, ctx = await _scan(sessions, opening, DAY_1)
    assert dict(summary.tally.opened) == {"notification.missed": 1}
    first = await _alert(sessions, "notification.missed")
    assert (first.subject, first.severity) == ("periodic:2026-11-20", "high")
    assert _targets(await deliveries(sessions, purpose="opened")) == {
        ("slack", "U0PC1234"), ("slack", "C0NORTH"),
    }
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()

    count = len(await deliveries(sessions))
    summary, _ = await _scan(sessions, opening, DAY_27)
    assert not summary.tally.opened and not summary.tally.raised and not summary.tally.resolved
    assert len(await deliveries(sessions)) == count
    assert (await _alert(sessions, "notification.missed")).severity == "high"

    raising = _settings(slack, mail, {"notification.missed": ["owner", "spoc"]})
    summary, ctx = await _scan(sessions, raising, DAY_28)
    assert dict(summary.tally.raised) == {"notification.missed": 1}
    raised = await _alert(sessions, "notification.missed")
    assert (raised.id, raised.severity, raised.state) == (first.id, "critical", "open")
    assert raised.details["days_overdue"] == 28
    [entry] = await audits(sessions, "alert.severity_raised")
    assert entry.subject == first.id
    assert entry.details == {"from": "high", "to": "critical", "days_overdue": 28}
    told = await deliveries(sessions, purpose="raised")
    assert _targets(told) == {
        ("slack", "U0PC1234"), ("slack", "C0NORTH"), ("email", "north.spoc@force.example"),
    }
    line = "Severity raised from high to critical: now 28 days overdue"
    assert all(render.change_line(d.payload) == line for d in told)
    assert raised.escalation_chain[0]["after_seconds"] == 15 * 60  # critical's chain, from now
    assert raised.next_escalation_at == utc(DAY_28) + timedelta(minutes=15)
    seen = len(slack.calls)
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    replies = [c for c in slack.calls[seen:] if c.args.get("reply_broadcast")]
    assert len(replies) == 2 and all(line in r.args["text"] for r in replies)
    [spoc] = [m for m in mail.messages if m["To"] == "north.spoc@force.example"]
    assert spoc["Subject"].startswith(f"[casewatch] CRITICAL notification.missed {REF} {first.id}: {line}")

    count = len(await deliveries(sessions))
    again, _ = await _scan(sessions, raising, DAY_28)
    assert not again.tally.raised and not again.tally.opened and not again.tally.resolved
    assert len(await deliveries(sessions)) == count
