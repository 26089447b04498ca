"""Building the notifiers the delivery workers use, from the settings (called by wiring)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from casewatch.config import Settings
from casewatch.delivery.notifier import Notifier
from casewatch.routing.routing import allowed_emails, configured_slack_ids
from integrations.chat_log import ChatLogNotifier
from integrations.slack_notifier import SlackNotifier
from integrations.smtp_notifier import MAX_IDLE, SmtpNotifier

log = logging.getLogger(__name__)
WARM_SECONDS = 5.0


def build_notifiers(settings: Settings, *, keep_alive: bool = True) -> dict[str, Notifier]:
    """Email always; chat through Slack, or the chat log when Slack is off and a path is set.
    With `keep_alive` (the service) HTTP and SMTP connections stay open between messages, and the
    caller closes the notifiers (delivery.runner does) before its event loop ends."""
    notifiers: dict[str, Notifier] = {
        "email": SmtpNotifier(settings.smtp, allowed_emails(settings), max_idle=MAX_IDLE if keep_alive else 0)
    }
    if settings.slack.mode != "off":
        notifiers["slack"] = SlackNotifier(
            token=settings.slack.bot_token.get_secret_value(),
            api_url=settings.slack.api_url,
            timeout_seconds=settings.delivery.send_timeout_seconds,
            thread_replies=settings.delivery.slack_thread_replies,
            keep_alive=keep_alive,
            allowed=configured_slack_ids(settings),
        )
    elif settings.delivery.chat_log_path:
        notifiers["slack"] = ChatLogNotifier(settings.delivery.chat_log_path)
    return notifiers


async def warm_up(notifiers: Mapping[str, Notifier]) -> None:
    """Open the keep-alive notifiers' first connections before the first alert needs them (the
    service's start-up: they are not in its path). Sends no message; a failure is logged as a
    warning by the notifier and met again by the first send, which retries as without this."""
    warm = [n.warm() for n in notifiers.values() if isinstance(n, SlackNotifier | SmtpNotifier)]
    try:
        async with asyncio.timeout(WARM_SECONDS):
            await asyncio.gather(*warm)
    except TimeoutError:
        log.info("notifiers: warming up took over %gs; the first messages connect themselves", WARM_SECONDS)
