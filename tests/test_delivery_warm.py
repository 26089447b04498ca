"""Warming the service's notifiers at start-up (integrations.notifiers.warm_up): the SMTP connection
and the Slack session are opened before the first alert, without sending anything, and the first
message uses them; a server that is away costs the start-up nothing but the attempt."""

from __future__ import annotations

import logging
import time

import pytest

from casewatch.delivery.notifier import Sent
from integrations.mail_sink import MailSink
from integrations.notifiers import build_notifiers, warm_up
from integrations.slack_notifier import SlackNotifier
from integrations.smtp_notifier import SmtpNotifier
from tests.slack_standin import SlackStandIn
from tests.test_delivery_smtp import _outbound
from tests.test_delivery_support import TOKEN, mail_fixture, make_settings, slack_fixture  # noqa: F401


async def test_warming_opens_connections_and_sends_nothing(slack: SlackStandIn, mail: MailSink) -> None:
    notifiers = build_notifiers(make_settings(slack_url=slack.url, smtp_port=mail.port))
    smtp, chat = notifiers["email"], notifiers["slack"]
    assert isinstance(smtp, SmtpNotifier) and isinstance(chat, SlackNotifier)
    try:
        await warm_up(notifiers)
        assert smtp.connects == 1
        assert [c.method for c in slack.calls] == ["auth.test"]
        assert mail.messages == []
        outcome = await smtp.send(_outbound("north.spoc@force.example"))
        assert isinstance(outcome, Sent) and smtp.connects == 1  # the warm connection
        assert len(mail.messages) == 1
    finally:
        for notifier in notifiers.values():
            await notifier.close()


async def test_warming_without_keep_alive_does_nothing(slack: SlackStandIn, mail: MailSink) -> None:
    notifiers = build_notifiers(make_settings(slack_url=slack.url, smtp_port=mail.port), keep_alive=False)
    await warm_up(notifiers)
    smtp = notifiers["email"]
    assert isinstance(smtp, SmtpNotifier) and smtp.connects == 0
    assert slack.calls == []


async def test_servers_away_cost_the_start_up_only_the_attempt() -> None:
    notifiers = build_notifiers(make_settings())  # Slack and SMTP on port 9: nothing listens
    started = time.monotonic()
    try:
        await warm_up(notifiers)  # no exception
    finally:
        for notifier in notifiers.values():
            await notifier.close()
    assert time.monotonic() - started < 3


async def test_a_refused_token_or_a_server_away_is_told_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    """Start-up is the moment to say the settings are wrong, not the first alert hours later: one
    warning a notifier, with the error's type and Slack's error code, never the token or the host."""
    caplog.set_level(logging.INFO)
    async with SlackStandIn(token="xoxb-another-token") as revoked:  # our token: invalid_auth
        notifiers = build_notifiers(make_settings(slack_url=revoked.url))  # SMTP on port 9: away
        try:
            await warm_up(notifiers)
        finally:
            for notifier in notifiers.values():
                await notifier.close()
    told = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    slack_told = "Slack warm-up at start-up failed (SlackApiError invalid_auth)"
    assert any(m.startswith(slack_told) for m in told), told
    assert any(m.startswith("SMTP warm-up at start-up failed (") for m in told), told
    logged = caplog.text
    assert TOKEN not in logged and "127.0.0.1" not in logged
