"""Slack delivery through the worker against the local Slack Web API stand-in."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import acknowledge, resolve
from casewatch.store.models import Alert, AlertThread, DeliveryAttempt
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.test_delivery_support import (
    add_nominal,
    audits,
    clock_of,
    deliveries,
    mail_fixture,  # noqa: F401 (the `mail` fixture)
    make_ctx,
    make_settings,
    make_worker,
    open_test_alert,
    setup_directory,
    slack_fixture,  # noqa: F401 (the `slack` fixture)
)

Sessions = async_sessionmaker[AsyncSession]


def _ctx(slack: SlackStandIn, mail: MailSink | None = None, **sections: dict[str, object]):  # type: ignore[no-untyped-def]
    ctx = make_ctx(make_settings(slack_url=slack.url, smtp_port=mail.port if mail else 9, **sections))
    return ctx


async def test_alert_posts_block_kit_message_with_ack_button_and_records_thread(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink
) -> None:
    ctx = _ctx(slack, mail)
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)  # travel.unnotified: team channel + SPOC inbox
    worker, _ = make_worker(sessions, ctx)

    assert await worker.run_until_idle() == 2

    posts = slack.calls_to("chat.postMessage")
    assert len(posts) == 1
    call = posts[0]
    assert call.token == "xoxb-test-token"
    assert call.args["channel"] == "C0NORTH"
    actions = [b for b in call.args["blocks"] if b["type"] == "actions"]
    button = actions[0]["elements"][0]
    assert button["action_id"] == "casewatch_ack" and button["value"] == alert.id
    text = call.args["text"]
    assert "VS-0000001" in text and "travel.unnotified" in text and "HIGH" in text
    assert "Testperson" not in str(call.args)  # no names in chat by default
    assert call.args["metadata"]["event_type"] == "casewatch_delivery"  # found again after a crash
    rows = await deliveries(sessions, channel="slack")
    assert [r.state for r in rows] == ["sent"]
    ts = slack.calls_to("chat.postMessage")[0]
    async with sessions() as session:
        thread = (
            await session.execute(select(AlertThread).where(AlertThread.channel == "slack"))
        ).scalar_one()
    assert thread.alert_id == alert.id and thread.target == "C0NORTH"
    assert thread.external_ref == f"C0NORTH:{list(slack.messages)[0][1]}"
    assert ts.args["channel"] == "C0NORTH"
    # every attempt audited with receiver, channel, time, outcome, content hash and purpose
    sent = await audits(sessions, "delivery.sent")
    assert len(sent) == 2
    slack_audit = next(a for a in sent if a.details["channel"] == "slack")
    assert slack_audit.subject == alert.id and slack_audit.nominals == [alert.visor_ref]
    assert slack_audit.purpose == (
        "delivered a new alert for the team's channel, so they act on it: travel.unnotified"
    )
    assert slack_audit.details["receiver"] == "team:north"
    assert slack_audit.details["content_hash"] == rows[0].content_hash and len(rows[0].content_hash) == 64
    assert slack_audit.at == clock_of(ctx).now()
    assert len(mail.messages) == 1


async def test_messages_to_one_channel_are_paced(sessions: Sessions, slack: SlackStandIn) -> None:
    ctx = _ctx(slack, routing={"routes": {"travel.unnotified": ["team_channel"]}})
    await setup_directory(sessions, ctx.settings)
    for n in range(3):
        await open_test_alert(sessions, ctx, visor_ref=f"VS-000000{n}")
    worker, sleep = make_worker(sessions, ctx)

    await worker.run_until_idle()

    assert len(slack.calls_to("chat.postMessage")) == 3
    assert sleep.waits == [1.0, 1.0]  # about one message a second to one channel


async def test_a_send_woken_late_does_not_let_the_next_follow_it_closer_than_the_pace(
    sessions: Sessions, slack: SlackStandIn
) -> None:
    """The pace counts from when a send started, not from the slot it was given: a task woken
    0.3 s late (a busy machine) sends at 1.3 s, and the next waits a whole second from there (it
    waited 0.7 s before, and reached Slack 0.7 s after the one before it)."""
    ctx = _ctx(slack, routing={"routes": {"travel.unnotified": ["team_channel"]}})
    await setup_directory(sessions, ctx.settings)
    for n in range(3):
        await open_test_alert(sessions, ctx, visor_ref=f"VS-000000{n}")
    worker, sleep = make_worker(sessions, ctx)
    sleep.late = 0.3

    await worker.run_until_idle()

    assert len(slack.calls_to("chat.postMessage")) == 3
    assert sleep.waits == [1.0, 1.0]


async def test_429_retry_after_is_honoured(sessions: Sessions, slack: SlackStandIn) -> None:
    ctx = _ctx(slack, routing={"routes": {"travel.unnotified": ["team_channel"]}})
    await setup_directory(sessions, ctx.settings)
    await open_test_alert(sessions, ctx)
    slack.fail_next("chat.postMessage", status=429, retry_after=7)
    worker, _ = make_worker(sessions, ctx)
    clock = clock_of(ctx)
    start = clock.now()

    await worker.run_until_idle()
    [row] = await deliveries(sessions)
    assert row.state == "pending" and row.attempts == 1
    assert row.next_attempt_at >= start + timedelta(seconds=7)
    assert "429" in (row.last_error or "")

    clock.advance(timedelta(seconds=6.9))
    assert await worker.run_until_idle() == 0  # not before Retry-After
    assert len(slack.calls_to("chat.postMessage")) == 1

    clock.set(row.next_attempt_at)
    await worker.run_until_idle()
    [row] = await deliveries(sessions)
    assert row.state == "sent" and row.attempts == 2
    assert len(slack.calls_to("chat.postMessage")) == 2
    async with sessions() as session:
        outcomes = (
            await session.execute(select(DeliveryAttempt.outcome).order_by(DeliveryAttempt.id))
        ).scalars()
        assert list(outcomes) == ["retry", "sent"]


async def test_5xx_is_retried_with_growing_backoff_then_sent(sessions: Sessions, slack: SlackStandIn) -> None:
    ctx = _ctx(
        slack,
        routing={"routes": {"travel.unnotified": ["team_channel"]}},
        delivery={"backoff_base_seconds": 2, "jitter": 0.5},
    )
    await setup_directory(sessions, ctx.settings)
    await open_test_alert(sessions, ctx)
    slack.fail_next("chat.postMessage", status=503, times=2)
    worker, _ = make_worker(sessions, ctx)
    clock = clock_of(ctx)
    delays = []
    for _ in range(3):
        before = clock.now()
        await worker.run_until_idle()
        [row] = await deliveries(sessions)
        if row.state == "sent":
            break
        delays.append((row.next_attempt_at - before).total_seconds())
        assert "503" in (row.last_error or "")
        clock.set(row.next_attempt_at)
    assert row.state == "sent" and row.attempts == 3
    assert 1.0 <= delays[0] <= 2.0 and 2.0 <= delays[1] <= 4.0  # 2 s then 4 s, half of each random
    assert len(await audits(sessions, "delivery.retry")) == 2


async def test_slow_reply_times_out_and_is_retried(sessions: Sessions, slack: SlackStandIn) -> None:
    ctx = _ctx(
        slack,
        routing={"routes": {"travel.unnotified": ["team_channel"]}},
        delivery={"send_timeout_seconds": 0.2, "lease_seconds": 10},
    )
    await setup_directory(sessions, ctx.settings)
    await open_test_alert(sessions, ctx)
    slack.delay_next("chat.postMessage", 1.0)
    worker, _ = make_worker(sessions, ctx)

    await worker.run_until_idle()
    [row] = await deliveries(sessions)
    assert row.state == "pending" and "timed out" in (row.last_error or "")
    clock_of(ctx).set(row.next_attempt_at)
    await worker.run_until_idle()
    [row] = await deliveries(sessions)
    assert row.state == "sent"


async def test_permanent_error_is_dead_lettered_reported_and_falls_back_to_spoc_email(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink
) -> None:
    ctx = _ctx(slack, mail, routing={"routes": {"travel.unnotified": ["team_channel"]}})
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx, severity="high")
    slack.channel_errors["C0NORTH"] = "channel_not_found"
    worker, _ = make_worker(sessions, ctx)

    await worker.run_until_idle()

    slack_row, fallback = [r for r in await deliveries(sessions) if r.alert_id == alert.id]
    assert slack_row.state == "dead" and slack_row.attempts == 1
    assert slack_row.last_error == "channel_not_found"
    assert fallback.purpose == "fallback" and fallback.channel == "email"
    assert fallback.target == "north.spoc@force.example" and fallback.state == "sent"
    [dead] = await audits(sessions, "delivery.dead")
    assert dead.subject == alert.id and dead.details["error"] == "channel_not_found"
    [reported] = await audits(sessions, "delivery.fallback")
    assert (
        reported.details["target"] == "C0NORTH"
        and reported.details["fallback_to"] == "north.spoc@force.example"
    )
    assert worker.metrics.value("casewatch_deliveries_dead_total", channel="slack") == 1
    assert worker.metrics.value("casewatch_delivery_fallbacks_total") == 1
    # The fallback email and the report of the failing address, both to the SPOC inbox.
    assert worker.metrics.value("casewatch_delivery_attempts_total", channel="email", outcome="sent") == 2
    # The failing address is itself an alert, to the admins (none configured here: the SPOC).
    failed = await _system_alerts(sessions)
    assert [(a.kind, a.severity, a.subject) for a in failed] == [
        ("system.delivery_failed", "high", "slack:C0NORTH")
    ]
    message, report = sorted(mail.messages, key=lambda m: "system." in str(m["Subject"]))
    assert str(report["Subject"]).startswith("[casewatch] HIGH system.delivery_failed SYSTEM")
    assert message["To"] == "north.spoc@force.example"
    assert message["Subject"].startswith(f"[casewatch] HIGH travel.unnotified VS-0000001 {alert.id}")
    assert "C0NORTH" in message.get_body(("plain",)).get_content()
    assert "channel_not_found" in message.get_body(("plain",)).get_content()


async def test_low_severity_dead_letter_gets_no_fallback(sessions: Sessions, slack: SlackStandIn) -> None:
    ctx = _ctx(slack, routing={"routes": {"mappa.level_changed": ["team_channel"]}})
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx, kind="mappa.level_changed", severity="low")
    slack.channel_errors["C0NORTH"] = "not_in_channel"
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    rows = [r for r in await deliveries(sessions) if r.alert_id == alert.id]
    assert [(r.channel, r.state) for r in rows] == [("slack", "dead")]
    assert len(await audits(sessions, "delivery.dead")) == 1
    # No fallback, but the failing address is still reported to the admins.
    assert [(a.kind, a.severity) for a in await _system_alerts(sessions)] == [
        ("system.delivery_failed", "medium")
    ]


async def test_a_second_dead_message_to_the_same_address_raises_no_second_report(
    sessions: Sessions, slack: SlackStandIn
) -> None:
    ctx = _ctx(slack, routing={"routes": {"mappa.level_changed": ["team_channel"]}})
    await setup_directory(sessions, ctx.settings)
    for ref in ("VS-0000001", "VS-0000002"):
        await open_test_alert(sessions, ctx, kind="mappa.level_changed", severity="low", visor_ref=ref)
    slack.channel_errors["C0NORTH"] = "not_in_channel"
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    assert len(await audits(sessions, "delivery.dead")) == 2
    assert len(await _system_alerts(sessions)) == 1


async def _system_alerts(sessions: Sessions) -> list[Alert]:
    async with sessions() as session:
        stmt = select(Alert).where(Alert.kind.like("system.%")).order_by(Alert.opened_at)
        return list((await session.execute(stmt)).scalars())


async def test_slack_failing_past_fallback_time_emails_spoc_once(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink
) -> None:
    ctx = _ctx(
        slack,
        mail,
        routing={"routes": {"recall.issued": ["team_channel"]}},
        delivery={"fallback_after_seconds": 60, "backoff_base_seconds": 20, "jitter": 0},
    )
    await setup_directory(sessions, ctx.settings)
    await open_test_alert(sessions, ctx, kind="recall.issued", severity="critical")
    slack.fail_next("chat.postMessage", status=500, times=10)
    worker, _ = make_worker(sessions, ctx)
    clock = clock_of(ctx)
    for _ in range(4):  # attempts at 0, 20, 60, 140 s
        await worker.run_until_idle()
        [slack_row, *_] = await deliveries(sessions)
        clock.set(slack_row.next_attempt_at)
    rows = await deliveries(sessions)
    fallbacks = [r for r in rows if r.purpose == "fallback"]
    assert len(fallbacks) == 1 and fallbacks[0].state == "sent"
    assert rows[0].state == "pending"  # Slack keeps being retried too
    assert len(mail.messages) == 1 and mail.messages[0]["Subject"].startswith(
        "[casewatch] CRITICAL recall.issued"
    )


async def test_acknowledge_updates_the_same_message(sessions: Sessions, slack: SlackStandIn) -> None:
    ctx = _ctx(slack, routing={"routes": {"travel.unnotified": ["team_channel"]}})
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    [(channel, ts)] = list(slack.messages)

    async with sessions.begin() as session:
        outcome = await acknowledge(session, alert.id, "PC1234", "slack_button", ctx)
    assert outcome.status == "acknowledged"
    await worker.run_until_idle()

    [update] = slack.calls_to("chat.update")
    assert update.args["channel"] == channel and update.args["ts"] == ts
    assert "Acknowledged by PC1234" in update.args["text"]
    assert not [b for b in update.args["blocks"] if b["type"] == "actions"]  # no button any more
    posts = slack.calls_to("chat.postMessage")
    assert len(posts) == 2 and posts[1].args["thread_ts"] == ts  # the change, replied in the thread
    assert [r.state for r in await deliveries(sessions)] == ["sent", "sent"]


async def test_update_waits_for_the_first_message_instead_of_posting_another(
    sessions: Sessions, slack: SlackStandIn
) -> None:
    ctx = _ctx(
        slack,
        routing={"routes": {"travel.unnotified": ["team_channel"]}},
        delivery={"backoff_base_seconds": 30, "jitter": 0},
    )
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)
    slack.fail_next("chat.postMessage", status=503)
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()  # the first message failed; retry in 30 s
    async with sessions.begin() as session:
        live = await session.get(Alert, alert.id)
        assert live is not None
        await resolve(session, live, "border check matched a notification", ctx)

    await worker.run_until_idle()
    opened, resolved = await deliveries(sessions)
    assert opened.state == "pending" and resolved.state == "pending" and resolved.attempts == 0
    assert len(slack.calls_to("chat.postMessage")) == 1 and not slack.calls_to("chat.update")

    clock_of(ctx).advance(timedelta(seconds=31))
    await worker.run_until_idle()
    await worker.run_until_idle()
    opened, resolved = await deliveries(sessions)
    assert opened.state == "sent" and resolved.state == "sent"
    posted = [c for c in slack.calls_to("chat.postMessage") if "thread_ts" not in c.args]
    assert len(posted) == 2  # the failed try and the one that went: still one message in Slack
    assert len(slack.messages) == 2  # the message and its thread reply
    [update] = slack.calls_to("chat.update")
    assert update.args["ts"] == opened.external_ref.split(":")[1]  # type: ignore[union-attr]


async def test_owner_is_reached_by_direct_message(sessions: Sessions, slack: SlackStandIn) -> None:
    ctx = _ctx(slack)
    await setup_directory(sessions, ctx.settings)
    await add_nominal(sessions)
    await open_test_alert(sessions, ctx, kind="action.overdue", severity="medium", subject="ACT-1")
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    [opened] = slack.calls_to("conversations.open")
    assert opened.args["users"] == "U0PC1234"
    [post] = slack.calls_to("chat.postMessage")
    assert post.args["channel"] == "D0PC1234"
    [row] = await deliveries(sessions)
    assert row.receiver == "officer:PC1234" and row.state == "sent"
    assert row.external_ref == f"D0PC1234:{list(slack.messages)[0][1]}"


async def test_deleted_message_is_posted_again_on_update(sessions: Sessions, slack: SlackStandIn) -> None:
    ctx = _ctx(
        slack,
        routing={"routes": {"travel.unnotified": ["team_channel"]}},
        delivery={"slack_thread_replies": False},
    )
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    slack.messages.clear()  # someone deleted it
    async with sessions.begin() as session:
        await acknowledge(session, alert.id, "PC1234", "slack_command", ctx)
    await worker.run_until_idle()
    assert len(slack.calls_to("chat.postMessage")) == 2
    [(channel, ts)] = list(slack.messages)
    async with sessions() as session:
        thread = (await session.execute(select(AlertThread))).scalar_one()
    assert thread.external_ref == f"{channel}:{ts}"


async def test_resend_posts_anyway_when_history_cannot_be_read(slack: SlackStandIn) -> None:
    from casewatch.delivery.notifier import Outbound, Sent
    from integrations.slack_notifier import SlackNotifier

    notifier = SlackNotifier(token="xoxb-test-token", api_url=slack.url)
    slack.fail_next("conversations.history", error="missing_scope")
    payload = {
        "alert_id": "A-TEST22",
        "kind": "recall.issued",
        "severity": "critical",
        "visor_ref": "VS-0000009",
        "state": "open",
        "change": "opened",
    }
    outcome = await notifier.send(
        Outbound(5, "A-TEST22", "opened", "C0NORTH", payload, "0" * 64, maybe_sent=True)
    )
    assert isinstance(outcome, Sent)
    assert len(slack.calls_to("conversations.history")) == 1 and len(slack.calls_to("chat.postMessage")) == 1
    await notifier.close()


async def test_escalation_edits_the_message_and_mails_the_supervisors(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink
) -> None:
    from casewatch.routing.escalation import escalate_due

    ctx = _ctx(slack, mail, routing={"routes": {"recall.issued": ["team_channel"]}})
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx, kind="recall.issued", severity="critical")
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    [(channel, ts)] = list(slack.messages)

    clock_of(ctx).advance(timedelta(minutes=15))
    assert await escalate_due(sessions, ctx) == [alert.id]
    await worker.run_until_idle()

    [update] = slack.calls_to("chat.update")
    assert (update.args["channel"], update.args["ts"]) == (channel, ts)
    reply = slack.calls_to("chat.postMessage")[-1]
    assert reply.args["thread_ts"] == ts and "Escalated (step 1) to supervisors" in reply.args["text"]
    [message] = mail.messages
    assert message["To"] == "sgt.north@force.example"
    assert message["Subject"].startswith(
        f"[casewatch] CRITICAL recall.issued VS-0000001 {alert.id}: Escalated"
    )
    assert all(d.state == "sent" for d in await deliveries(sessions))


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ({"error": "channel_not_found"}, ("permanent", "channel_not_found")),
        ({"error": "not_in_channel"}, ("permanent", "not_in_channel")),
        ({"error": "invalid_auth"}, ("permanent", "invalid_auth")),
        ({"error": "account_inactive"}, ("permanent", "account_inactive")),
        ({"error": "is_archived"}, ("permanent", "is_archived")),
        ({"error": "internal_error"}, ("retry", "internal_error")),
        ({"error": "service_unavailable"}, ("retry", "service_unavailable")),
        ({"status": 500}, ("retry", "HTTP 500")),
        ({"status": 502}, ("retry", "HTTP 502")),
        ({"status": 429, "retry_after": 12}, ("retry", "ratelimited (HTTP 429)")),
    ],
)
async def test_slack_failures_are_classified(
    slack: SlackStandIn, script: dict[str, Any], expected: tuple[str, str]
) -> None:
    from casewatch.delivery.notifier import Outbound, Permanent, Retryable
    from integrations.slack_notifier import SlackNotifier

    notifier = SlackNotifier(token="xoxb-test-token", api_url=slack.url)
    slack.fail_next("chat.postMessage", **script)
    payload = {
        "alert_id": "A-TEST22",
        "kind": "recall.issued",
        "severity": "critical",
        "visor_ref": "VS-0000009",
        "state": "open",
        "change": "opened",
    }
    outcome = await notifier.send(Outbound(5, "A-TEST22", "opened", "C0NORTH", payload, "0" * 64))
    kind, error = expected
    assert isinstance(outcome, Permanent if kind == "permanent" else Retryable)
    assert outcome.error.startswith(error)
    if "retry_after" in script:
        assert isinstance(outcome, Retryable) and outcome.retry_after == 12


async def test_bad_token_is_permanent(slack: SlackStandIn) -> None:
    from casewatch.delivery.notifier import Outbound, Permanent
    from integrations.slack_notifier import SlackNotifier

    notifier = SlackNotifier(token="xoxb-wrong", api_url=slack.url)
    payload = {
        "alert_id": "A-TEST22",
        "kind": "recall.issued",
        "severity": "critical",
        "visor_ref": "VS-0000009",
        "state": "open",
        "change": "opened",
    }
    outcome = await notifier.send(Outbound(5, "A-TEST22", "opened", "C0NORTH", payload, "0" * 64))
    assert outcome == Permanent("invalid_auth")


async def test_unreachable_slack_is_retryable() -> None:
    import socket

    from casewatch.delivery.notifier import Outbound, Retryable
    from integrations.slack_notifier import SlackNotifier

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notifier = SlackNotifier(token="xoxb-test-token", api_url=f"http://127.0.0.1:{port}/api/")
    payload = {
        "alert_id": "A-TEST22",
        "kind": "recall.issued",
        "severity": "critical",
        "visor_ref": "VS-0000009",
        "state": "open",
        "change": "opened",
    }
    outcome = await notifier.send(Outbound(5, "A-TEST22", "opened", "C0NORTH", payload, "0" * 64))
    assert isinstance(outcome, Retryable)
