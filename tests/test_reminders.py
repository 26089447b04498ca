"""Issue 15 end to end on SQLite and PostgreSQL: signed events in through the real HTTP app, the
scan as of chosen instants (`run_scan(at=...)`, what `casewatch scan --at` runs), and the outbox
rows it writes.

- "an acknowledgement means owned, not done": an acknowledged action.overdue reminds its owner
  every `repeat_reminder_hours` [72] hours, and not before, until the action is done;
- recall: `recall.unlawfully_at_large` opens at the scan for a recall not returned, repeats every
  12 hours to the control room and the team while live, acknowledged or not, and resolves on
  `recall.returned`, which opens the offender manager's risk review (`recall.risk_review_due`);
- overdue actions escalate in severity: medium from day 1, high from day 28
  (`action_overdue_severity`), or from `action_very_overdue_days` where only that is set;
- in Slack a reminder's thread reply is broadcast to the channel (an edit notifies nobody).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import acknowledge
from casewatch.clock import FixedClock
from casewatch.delivery import render
from casewatch.store.models import Alert, AuditEntry, Delivery
from casewatch.triggers.scan import ScanSummary, run_scan
from casewatch.wiring import Service
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.support import envelope, nominal_data, service_client, signed_post
from tests.test_delivery_support import (
    mail_fixture,  # noqa: F401 (the `mail` fixture)
    make_ctx,
    make_settings,
    make_worker,
    setup_directory,
    slack_fixture,  # noqa: F401 (the `slack` fixture)
)
from tests.test_triggers_case_data import action as case_action
from tests.test_triggers_case_data import nominal as case_nominal
from tests.test_triggers_case_data import utc

ACTION_REF = "VIS-TEST-0151"
RECALL_REF = "VIS-TEST-0152"
STEPS_REF = "VIS-TEST-0153"
# Due 20 Nov 2026; overdue from the start of 21 Nov (Europe/London is UTC in winter).
DAY_1 = utc("2026-11-21T00:00:00Z")
ISSUED = utc("2026-11-20T09:00:00Z")
CONTROL = "C0CONTROL"
OWNER_DM = "U0PC1234"
TEAM = "C0NORTH"


@asynccontextmanager
async def _service(db_url: str, **triggers: Any) -> AsyncIterator[tuple[Service, Any, FixedClock]]:
    clock = FixedClock(utc("2026-11-20T09:00:00Z"))
    overrides: dict[str, Any] = {
        "slack": {"mode": "http", "bot_token": "xoxb-test-not-real", "signing_secret": "s"},
        "routing": {"control_room_channel": CONTROL},
    }
    if triggers:
        overrides["triggers"] = triggers
    async with service_client(db_url, clock=clock, **overrides) as (service, client):
        await setup_directory(service.sessions, service.ctx.settings)  # who may acknowledge
        yield service, client, clock


async def _post(client: Any, *events: dict[str, Any]) -> None:
    resp = await signed_post(client, "/api/v1/events", list(events))
    assert resp.status == 202, await resp.text()


async def _scan(service: Service, clock: FixedClock, at: datetime) -> ScanSummary:
    clock.set(at)
    return await run_scan(service.sessions, service.ctx, at)


async def _alert(service: Service, kind: str) -> Alert:
    async with service.sessions() as s:
        return (await s.execute(select(Alert).where(Alert.kind == kind))).scalar_one()


async def _rows(service: Service, purpose: str, alert_id: str | None = None) -> list[Delivery]:
    async with service.sessions() as s:
        stmt = select(Delivery).where(Delivery.purpose == purpose).order_by(Delivery.id)
        if alert_id is not None:
            stmt = stmt.where(Delivery.alert_id == alert_id)
        return list((await s.execute(stmt)).scalars())


async def _reminded(service: Service) -> list[AuditEntry]:
    async with service.sessions() as s:
        stmt = select(AuditEntry).where(AuditEntry.action == "alert.reminded").order_by(AuditEntry.id)
        return list((await s.execute(stmt)).scalars())


async def _ack(service: Service, alert_id: str, at: datetime, clock: FixedClock) -> None:
    clock.set(at)
    async with service.sessions.begin() as s:
        outcome = await acknowledge(s, alert_id, "PC1234", "api", service.ctx, outcome="owned")
    assert outcome.status == "acknowledged"


def _action(ref: str, status: str = "open", n: int = 1) -> dict[str, Any]:
    return envelope(
        "action.upsert", id=f"rem-{ref}-action-{n}", visor_ref=ref, occurred_at=f"2026-11-1{n}T10:00:00Z",
        action_id=f"MAPP-{ref[-3:]}", due_on="2026-11-20", status=status,
    )


def _nominal(ref: str, **data: Any) -> dict[str, Any]:
    return envelope(
        "nominal.upsert", nominal_data(**data), id=f"rem-{ref}-upsert", visor_ref=ref,
        occurred_at="2026-11-01T00:00:00Z",
    )


async def test_an_acknowledged_overdue_action_reminds_its_owner_every_72_hours(db_url: str) -> None:
    async with _service(db_url) as (service, client, clock):
        await _post(client, _nominal(ACTION_REF), _action(ACTION_REF))
        summary = await _scan(service, clock, DAY_1)
        assert dict(summary.tally.opened) == {"action.overdue": 1} and not summary.tally.reminded
        alert = await _alert(service, "action.overdue")
        assert [(d.channel, d.target) for d in await _rows(service, "opened")] == [("slack", OWNER_DM)]
        # The owner owns it: acknowledged, not done. The reminders go on.
        await _ack(service, alert.id, DAY_1 + timedelta(hours=1), clock)

        summary = await _scan(service, clock, DAY_1 + timedelta(hours=71, minutes=59))
        assert not summary.tally.reminded and "alerts reminded: 0" in summary.lines()
        assert await _rows(service, "reminder") == []

        summary = await _scan(service, clock, DAY_1 + timedelta(hours=72))
        assert dict(summary.tally.reminded) == {"action.overdue": 1}
        assert "alerts reminded: 1" in summary.lines() and "  action.overdue: 1" in summary.lines()
        [first] = await _rows(service, "reminder")
        assert (first.alert_id, first.channel, first.target) == (alert.id, "slack", OWNER_DM)
        assert (first.payload["state"], first.payload["open_hours"]) == ("acknowledged", 72)
        assert render.change_line(first.payload) == (
            "Reminder: still outstanding after 3 days; acknowledged by PC1234, not yet done"
        )
        assert first.payload["summary"].startswith(f"Action MAPP-151 overdue: {ACTION_REF}, due 2026-11-20")
        [entry] = await _reminded(service)
        assert (entry.subject, entry.actor, entry.nominals) == (alert.id, "system", [alert.visor_ref])
        assert entry.purpose.endswith("after 72 hours, so it is acted on: action.overdue")
        assert entry.details["state"] == "acknowledged" and entry.details["open_hours"] == 72

        # Idempotent: a re-run as of the same instant sends nothing new.
        again = await _scan(service, clock, DAY_1 + timedelta(hours=72))
        assert not again.tally.reminded and len(await _rows(service, "reminder")) == 1

        # Every 72 hours from the last reminder, not before.
        assert not (await _scan(service, clock, DAY_1 + timedelta(hours=143))).tally.reminded
        assert dict((await _scan(service, clock, DAY_1 + timedelta(hours=144))).tally.reminded) == {
            "action.overdue": 1
        }
        assert [d.payload["open_hours"] for d in await _rows(service, "reminder")] == [72, 144]
        assert len(await _reminded(service)) == 2

        # Done: the alert resolves, and nothing reminds of it again.
        clock.set(DAY_1 + timedelta(hours=150))
        await _post(client, _action(ACTION_REF, "done", n=2))
        summary = await _scan(service, clock, DAY_1 + timedelta(hours=216))
        assert not summary.tally.reminded
        assert (await _alert(service, "action.overdue")).state == "resolved"
        assert len(await _rows(service, "reminder")) == 2


async def test_a_recall_repeats_while_unlawfully_at_large_and_the_return_opens_the_risk_review(
    db_url: str,
) -> None:
    async with _service(db_url) as (service, client, clock):
        clock.set(ISSUED)
        issued = envelope(
            "recall.issued", id="rem-recall-152", visor_ref=RECALL_REF, occurred_at=ISSUED.isoformat(),
            recall_type="standard", issued_at="2026-11-20T09:00:00Z",
        )
        await _post(client, _nominal(RECALL_REF, on_licence=True), issued)
        recall_alert = await _alert(service, "recall.issued")  # from the event, as before

        opened_at = ISSUED + timedelta(minutes=15)
        summary = await _scan(service, clock, opened_at)
        assert dict(summary.tally.opened) == {"recall.unlawfully_at_large": 1}
        at_large = await _alert(service, "recall.unlawfully_at_large")
        assert (at_large.severity, at_large.subject, at_large.owner) == (
            "critical", "rem-recall-152", "PC1234",
        )
        assert at_large.escalation_chain == [] and at_large.next_escalation_at is None  # it repeats instead
        assert at_large.summary.startswith(f"Unlawfully at large: {RECALL_REF}: recall (standard) issued")
        told = await _rows(service, "opened", at_large.id)
        assert sorted((d.channel, d.target) for d in told) == [("slack", CONTROL), ("slack", TEAM)]
        # A second scan opens nothing more.
        assert not (await _scan(service, clock, opened_at + timedelta(minutes=15))).tally.opened

        # Acknowledged by the control room's contact: the repeats go on all the same.
        await _ack(service, at_large.id, opened_at + timedelta(minutes=20), clock)
        await _ack(service, recall_alert.id, opened_at + timedelta(minutes=21), clock)
        assert not (await _scan(service, clock, opened_at + timedelta(hours=11, minutes=59))).tally.reminded

        summary = await _scan(service, clock, opened_at + timedelta(hours=12))
        # Only the kinds in repeat_reminder_hours repeat: not recall.issued.
        assert dict(summary.tally.reminded) == {"recall.unlawfully_at_large": 1}
        reminders = await _rows(service, "reminder")
        assert sorted((d.channel, d.target) for d in reminders) == [("slack", CONTROL), ("slack", TEAM)]
        assert all(d.alert_id == at_large.id and d.payload["state"] == "acknowledged" for d in reminders)
        assert render.change_line(reminders[0].payload) == (
            "Reminder: still outstanding after 12 hours; acknowledged by PC1234, not yet done"
        )
        summary = await _scan(service, clock, opened_at + timedelta(hours=24))
        assert dict(summary.tally.reminded) == {"recall.unlawfully_at_large": 1}
        assert len(await _rows(service, "reminder")) == 4

        # Returned to custody: both recall alerts resolve; the offender manager gets the review.
        clock.set(opened_at + timedelta(hours=30))
        returned = envelope(
            "recall.returned", id="rem-return-152", visor_ref=RECALL_REF,
            occurred_at=clock.now().isoformat(), returned_at=clock.now().isoformat(),
        )
        await _post(client, returned)
        for kind in ("recall.issued", "recall.unlawfully_at_large"):
            gone = await _alert(service, kind)
            assert (gone.state, gone.resolved_reason) == ("resolved", "returned to custody")
        review = await _alert(service, "recall.risk_review_due")
        assert (review.state, review.severity, review.subject, review.owner) == (
            "open", "medium", "rem-recall-152", "PC1234",
        )
        assert review.summary.startswith(f"Review the risk assessment after the recall: {RECALL_REF}")
        assert [(d.channel, d.target) for d in await _rows(service, "opened", review.id)] == [
            ("slack", OWNER_DM)
        ]
        summary = await _scan(service, clock, opened_at + timedelta(hours=36))
        assert not summary.tally.reminded and not summary.tally.opened
        assert len(await _rows(service, "reminder")) == 4


async def test_an_overdue_action_steps_from_medium_to_high_on_day_28(db_url: str) -> None:
    async with _service(db_url, repeat_reminder_hours={}) as (service, client, clock):
        await _post(client, _nominal(STEPS_REF), _action(STEPS_REF))
        await _scan(service, clock, DAY_1)
        first = await _alert(service, "action.overdue")
        assert (first.severity, first.details["days_overdue"]) == ("medium", 1)
        assert not (await _scan(service, clock, utc("2026-12-17T12:00:00Z"))).tally.raised  # day 27
        summary = await _scan(service, clock, utc("2026-12-18T00:00:00Z"))  # day 28
        assert dict(summary.tally.raised) == {"action.overdue": 1}
        raised = await _alert(service, "action.overdue")
        assert (raised.id, raised.severity, raised.details["days_overdue"]) == (first.id, "high", 28)
        [told] = await _rows(service, "raised")
        assert told.target == OWNER_DM
        assert render.change_line(told.payload) == "Severity raised from medium to high: now 28 days overdue"


async def test_action_very_overdue_days_alone_is_the_high_step(db_url: str) -> None:
    """A configuration written before action_overdue_severity keeps working."""
    legacy = _service(db_url, action_very_overdue_days=14, repeat_reminder_hours={})
    async with legacy as (service, client, clock):
        assert service.ctx.settings.triggers.action_overdue_steps == {1: "medium", 14: "high"}
        await _post(client, _nominal(STEPS_REF), _action(STEPS_REF))
        await _scan(service, clock, utc("2026-12-03T12:00:00Z"))  # day 13
        assert (await _alert(service, "action.overdue")).severity == "medium"
        summary = await _scan(service, clock, utc("2026-12-04T00:00:00Z"))  # day 14
        assert dict(summary.tally.raised) == {"action.overdue": 1}
        assert (await _alert(service, "action.overdue")).severity == "high"


async def test_a_reminder_is_replied_in_the_thread_and_shown_in_the_channel(
    sessions: async_sessionmaker[AsyncSession], slack: SlackStandIn, mail: MailSink
) -> None:
    """An edit of the first message notifies nobody: the reminder's thread reply is broadcast."""
    settings = make_settings(slack_url=slack.url, smtp_port=mail.port, routing={"routes": {
        "action.overdue": ["owner", "team_channel"],
    }})
    await setup_directory(sessions, settings)
    async with sessions.begin() as s:
        s.add(case_nominal(ACTION_REF, last_notification_on=date(2026, 11, 1)))
        s.add(case_action("MAPP-151", ACTION_REF, date(2026, 11, 20)))
    ctx = make_ctx(settings, DAY_1)
    await run_scan(sessions, ctx)
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    seen = len(slack.calls)
    later = make_ctx(settings, DAY_1 + timedelta(hours=72))
    assert dict((await run_scan(sessions, later)).tally.reminded) == {"action.overdue": 1}
    worker, _ = make_worker(sessions, later)
    await worker.run_until_idle()
    replies = [c for c in slack.calls[seen:] if c.method == "chat.postMessage"]
    assert len(replies) == 2  # the owner's DM and the team channel
    assert all(r.args.get("reply_broadcast") and r.args.get("thread_ts") for r in replies)
    assert all(r.args["text"].startswith("Reminder: still outstanding after 3 days (A-") for r in replies)


def _recall_issued(ref: str, issued_at: str, n: int = 1) -> dict[str, Any]:
    return envelope(
        "recall.issued", id=f"rem-recall-{ref}-{n}", visor_ref=ref, occurred_at=issued_at,
        recall_type="standard", issued_at=issued_at,
    )


async def _at_large(service: Service) -> list[Alert]:
    async with service.sessions() as s:
        stmt = select(Alert).where(Alert.kind == "recall.unlawfully_at_large").order_by(Alert.visor_ref)
        return list((await s.execute(stmt)).scalars())


async def test_custody_on_record_ends_the_time_at_large_without_a_return(db_url: str) -> None:
    """CJA 2003 s.254(6): unlawfully at large until back in custody. A detention started after
    the recall is custody: the live alert resolves at once (dispatch), and nothing repeats."""
    async with _service(db_url) as (service, client, clock):
        clock.set(ISSUED)
        issued = _recall_issued(RECALL_REF, ISSUED.isoformat())
        await _post(client, _nominal(RECALL_REF, on_licence=True), issued)
        await _scan(service, clock, ISSUED + timedelta(minutes=15))
        [alert] = await _at_large(service)
        assert alert.state == "open"

        clock.set(ISSUED + timedelta(hours=5))
        await _post(client, envelope(
            "detention.started", id="rem-held-152", visor_ref=RECALL_REF, occurred_at=clock.now().isoformat(),
            kind="remand", started_on="2026-11-20",
        ))
        [alert] = await _at_large(service)
        assert (alert.state, alert.resolved_reason) == (
            "resolved", "in custody since the recall (detention started)",
        )
        summary = await _scan(service, clock, ISSUED + timedelta(hours=36))
        assert "recall.unlawfully_at_large" not in summary.tally.opened and not summary.tally.reminded
        assert await _rows(service, "reminder") == []


async def test_the_first_scan_opens_no_alert_for_a_recall_served_long_ago(db_url: str) -> None:
    """First deployment: a feed replayed from years back carries recalls whose return it never
    sent. Custody or liberty after the recall on record, or no nominal: not at large, no alert."""
    held, released, recalled_again, unknown, at_large = (f"VIS-TEST-016{n}" for n in range(1, 6))
    async with _service(db_url) as (service, client, clock):
        clock.set(ISSUED)
        await _post(
            client,
            _nominal(held), _recall_issued(held, "2024-03-01T10:00:00Z"),
            envelope("detention.started", id="rem-held-161", visor_ref=held,
                     occurred_at="2024-05-02T10:00:00Z", kind="sentence", started_on="2024-05-02"),
            _nominal(released, release_date="2025-01-10"), _recall_issued(released, "2024-03-01T10:00:00Z"),
            _nominal(recalled_again, on_licence=True),
            _recall_issued(recalled_again, "2024-03-01T10:00:00Z", n=1),
            _recall_issued(recalled_again, "2025-06-01T10:00:00Z", n=2),
            envelope("recall.returned", id="rem-return-163", visor_ref=recalled_again,
                     occurred_at="2025-06-03T10:00:00Z", returned_at="2025-06-03T10:00:00Z"),
            _recall_issued(unknown, "2024-03-01T10:00:00Z"),
            _nominal(at_large, on_licence=True, release_date="2023-12-01"),
            _recall_issued(at_large, "2024-03-01T10:00:00Z"),
        )
        summary = await _scan(service, clock, ISSUED)
        assert summary.tally.opened["recall.unlawfully_at_large"] == 1  # other kinds are not this test's
        [alert] = await _at_large(service)
        assert alert.visor_ref == at_large
        # The summary gives the service's time: 10:00 UTC in winter is 10:00 in London.
        assert alert.summary == (
            f"Unlawfully at large: {at_large}: recall (standard) issued 2024-03-01 10:00 (London time), "
            "not returned to custody"
        )

        # Released again later (the nightly extract's release date): the feed missed the return.
        clock.set(ISSUED + timedelta(hours=1))
        await _post(client, envelope(
            "nominal.upsert", nominal_data(release_date="2026-11-19"), id="rem-released-165",
            visor_ref=at_large, occurred_at=clock.now().isoformat(),
        ))
        summary = await _scan(service, clock, ISSUED + timedelta(hours=12))
        assert summary.tally.resolved["recall.unlawfully_at_large"] == 1 and not summary.tally.reminded
        [alert] = await _at_large(service)
        assert (alert.state, alert.resolved_reason) == (
            "resolved", "released after the recall (the return was not received)",
        )
