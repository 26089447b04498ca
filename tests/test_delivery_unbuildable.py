"""A message that can never be built is a permanent failure: dead-lettered at its first attempt
with a reason that names the exception type and nothing of the payload, raising the
system.delivery_failed alert, while the alert's other deliveries go out as usual. And values
that used to make an email unbuildable (a line break in a header) now build.

On SQLite and PostgreSQL, with the real worker, the Slack Web API stand-in and a real SMTP
server on loopback. All data is fictional.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.context import Context
from casewatch.store.models import Alert, Delivery, DeliveryAttempt
from integrations import slack_notifier
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.test_delivery_support import (
    audits,
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
SECRET_VALUE = "Testperson-not-for-logs"  # in the broken payloads: must never reach an error or log
SPOC = "north.spoc@force.example"


def _ctx(slack: SlackStandIn, mail: MailSink) -> Context:
    # travel.unnotified goes to the team channel (Slack) and the SPOC inbox (email).
    return make_ctx(make_settings(slack_url=slack.url, smtp_port=mail.port))


async def _break_payload(sessions: Sessions, channel: str, payload: Any) -> None:
    async with sessions.begin() as session:
        await session.execute(update(Delivery).where(Delivery.channel == channel).values(payload=payload))


async def _system_alerts(sessions: Sessions) -> list[Alert]:
    async with sessions() as session:
        stmt = select(Alert).where(Alert.kind == "system.delivery_failed").order_by(Alert.opened_at)
        return list((await session.execute(stmt)).scalars())


async def _assert_dead_at_once(
    sessions: Sessions, alert: Alert, channel: str, caplog: pytest.LogCaptureFixture
) -> Delivery:
    [row] = await deliveries(sessions, channel=channel, alert_id=alert.id)
    assert row.state == "dead" and row.attempts == 1
    assert row.last_error is not None and "could not be built" in row.last_error
    assert SECRET_VALUE not in row.last_error
    async with sessions() as session:
        stmt = select(DeliveryAttempt.outcome).where(DeliveryAttempt.delivery_id == row.id)
        outcomes = (await session.execute(stmt)).scalars().all()
    assert list(outcomes) == ["dead"]
    [dead] = [a for a in await audits(sessions, "delivery.dead") if a.details["delivery"] == row.id]
    assert SECRET_VALUE not in str(dead.details)
    assert SECRET_VALUE not in caplog.text
    return row


@pytest.mark.parametrize(
    "broken",
    [
        {"kind": "travel.unnotified", "alert_id": "A-BROKEN", "summary": SECRET_VALUE},  # keys missing
        [SECRET_VALUE],  # not an object at all
    ],
    ids=["missing-keys", "not-an-object"],
)
async def test_an_email_that_cannot_be_built_is_dead_at_once_and_the_slack_sibling_is_sent(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink, broken: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = _ctx(slack, mail)
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)
    await _break_payload(sessions, "email", broken)
    worker, _ = make_worker(sessions, ctx)

    await worker.run_until_idle()

    row = await _assert_dead_at_once(sessions, alert, "email", caplog)
    assert row.target == SPOC
    [sibling] = await deliveries(sessions, channel="slack", alert_id=alert.id)
    assert sibling.state == "sent" and sibling.alert_id == alert.id
    assert len(slack.calls_to("chat.postMessage")) >= 1
    [system] = await _system_alerts(sessions)
    assert system.subject == f"unbuildable:email:{SPOC}"
    assert "could not be built" in system.summary and alert.id in system.summary
    assert system.details["delivery"] == row.id


async def test_a_slack_message_that_cannot_be_built_is_dead_at_once_and_the_email_sibling_is_sent(
    sessions: Sessions,
    slack: SlackStandIn,
    mail: MailSink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = _ctx(slack, mail)
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)

    def cannot_build(payload: dict[str, Any]) -> list[dict[str, Any]]:
        raise ValueError(f"cannot lay out {SECRET_VALUE}")

    monkeypatch.setattr(slack_notifier, "blocks", cannot_build)
    worker, _ = make_worker(sessions, ctx)

    await worker.run_until_idle()

    row = await _assert_dead_at_once(sessions, alert, "slack", caplog)
    assert "ValueError" in (row.last_error or "")
    assert slack.calls_to("chat.postMessage") == []  # nothing half-sent
    [sibling] = await deliveries(sessions, channel="email", alert_id=alert.id, purpose="opened")
    assert sibling.state == "sent" and sibling.alert_id == alert.id
    assert any(str(m["To"]) == SPOC for m in mail.messages)
    system = [a for a in await _system_alerts(sessions) if a.subject.startswith("unbuildable:")]
    assert [a.subject for a in system] == ["unbuildable:slack:C0NORTH"]


@pytest.mark.parametrize(
    "visor_ref",
    ["VS-0000001\nBcc: v@evil.example", "VS-0000001\r\nX-Injected: yes", "VS-0000001\u2028x\u0085y"],
    ids=["lf", "crlf", "separators"],
)
async def test_a_line_break_in_a_value_no_longer_makes_the_email_unbuildable(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink, visor_ref: str
) -> None:
    """It used to raise in the email library, and the delivery was retried for minutes."""
    ctx = _ctx(slack, mail)
    await setup_directory(sessions, ctx.settings)
    await open_test_alert(sessions, ctx, visor_ref=visor_ref)
    worker, _ = make_worker(sessions, ctx)

    await worker.run_until_idle()

    rows = await deliveries(sessions)
    assert sorted((r.channel, r.state, r.attempts) for r in rows) == [
        ("email", "sent", 1), ("slack", "sent", 1),
    ]
    [message] = mail.messages
    assert mail.envelopes[0][1] == [SPOC]  # nobody added by a forged header
    assert "Bcc" not in message and "X-Injected" not in message
    subject = str(message["Subject"])
    assert subject.startswith("[casewatch] HIGH travel.unnotified VS-0000001")
    assert "\n" not in subject and "\r" not in subject
    assert await _system_alerts(sessions) == []


class _RaisingNotifier:
    """A notifier with a bug: it raises instead of answering, quoting what it was sending."""

    channel = "slack"

    async def send(self, message: Any) -> Any:
        raise RuntimeError(f"bug while sending {SECRET_VALUE}")

    async def close(self) -> None:
        return None


async def test_a_notifier_that_raises_is_retried_and_what_it_quoted_is_never_kept(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a build failure (the notifier built nothing): retried, visibly, with the exception's
    type only in the error, the audit entry and the log."""
    ctx = make_ctx(make_settings(slack_url=slack.url, smtp_port=mail.port,
                                 routing={"routes": {"travel.unnotified": ["team_channel"]}}))
    await setup_directory(sessions, ctx.settings)
    await open_test_alert(sessions, ctx)
    worker, _ = make_worker(sessions, ctx, notifiers={"slack": _RaisingNotifier()})

    await worker.run_once()

    [row] = await deliveries(sessions)
    assert row.state == "pending" and row.attempts == 1
    assert row.last_error == "notifier raised RuntimeError"
    [retry] = await audits(sessions, "delivery.retry")
    assert SECRET_VALUE not in str(retry.details)
    assert "RuntimeError" in caplog.text and SECRET_VALUE not in caplog.text
