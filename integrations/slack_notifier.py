"""Alerts to Slack through the Web API (slack_sdk AsyncWebClient at slack.api_url).

New alerts are Block Kit messages with an Acknowledge button (action id "casewatch_ack", value the
alert id); later changes edit that message (chat.update with its ts) and, if configured, reply in
its thread; a raised severity and a reminder always reply, broadcast to the channel (an edit
notifies nobody).
A Slack user id target (U.../W...) is a DM, opened with conversations.open.
The external reference recorded for a message is "<channel id>:<ts>".
This notifier only classifies failures; retry, backoff and pacing are the delivery worker's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from casewatch.delivery import render
from casewatch.delivery.notifier import Outbound, Outcome, Permanent, Retryable, Sent, unbuildable
from casewatch.safe_text import clip, mrkdwn

log = logging.getLogger(__name__)
_SLACK_ERROR_CODE = re.compile(r"[a-z_]{1,64}")  # what Slack's `error` field holds, when it is one

# Slack errors worth trying again; any other error body is permanent (retrying cannot fix a missing
# channel, a revoked token or a malformed message).
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
     "team_added_to_org", "rate_limited"}
)
MESSAGE_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
# Posted messages carry their delivery id as message metadata, so that a resend after a crash
# can find the message an interrupted attempt may have posted.
METADATA_EVENT = "casewatch_delivery"
HISTORY_LOOKBACK = 100
SECTION_LIMIT = 3000  # Slack refuses a section text longer than this (invalid_blocks)
FIELD_LIMIT = 2000


@dataclass(frozen=True)
class SlackMessage:
    """What one delivery posts: the notification text, the blocks and, for a change of an
    alert, the thread reply. Built before any call, so a payload that cannot be built fails once,
    for good, without a half-sent message."""

    text: str
    blocks: list[dict[str, Any]]
    reply: str | None


def build(p: dict[str, Any]) -> SlackMessage:
    return SlackMessage(
        text=render.chat_text(p), blocks=blocks(p), reply=None if render.is_plain(p) else render.reply_text(p)
    )


class SlackNotifier:
    channel = "slack"

    def __init__(
        self,
        *,
        token: str,
        api_url: str,
        timeout_seconds: float = 15.0,
        thread_replies: bool = True,
        keep_alive: bool = False,
        allowed: Collection[str] | None = None,
    ) -> None:
        """With `keep_alive` (the service's notifiers: integrations.notifiers) one HTTP session
        serves every call; the owner then calls close() before its event loop ends. `allowed`:
        the channel and user ids it may post to (None: any; tests of the notifier alone)."""
        self._allowed = frozenset(allowed) if allowed is not None else None
        self._keep_alive_on = keep_alive
        self._timeout = max(1, int(timeout_seconds))
        self._client = AsyncWebClient(token=token, base_url=api_url, timeout=self._timeout, retry_handlers=[])
        self._thread_replies = thread_replies
        self._dm_channels: dict[str, str] = {}

    async def send(self, message: Outbound) -> Outcome:
        if self._allowed is not None and message.target not in self._allowed:
            # A row queued before the configuration dropped its channel (as SmtpNotifier does for
            # an address): dead-lettered and reported, the alert's fallback mail to the SPOC.
            return Permanent(f"{message.target} is not a configured Slack id; casewatch posts to no other")
        try:
            built = build(message.payload)
        except Exception as exc:  # noqa: BLE001 - whatever the payload holds, it cannot be sent
            return unbuildable(exc)
        if self._keep_alive_on:
            self._keep_alive()
        try:
            if message.thread_ref:
                return await self._update(message, built, message.thread_ref)
            return await self._post(message, built)
        except SlackApiError as exc:
            return classify(exc)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # The request may have reached Slack and taken effect: the next attempt looks first.
            return Retryable(f"{type(exc).__name__}: {str(exc)[:200]}", maybe_sent=True)

    def _keep_alive(self) -> None:
        """One HTTP session for every call, so its connections are kept alive between messages
        (without one, slack_sdk opens a session, and a TCP connection, per call). Made on first
        use: an aiohttp session belongs to the running event loop."""
        session = self._client.session
        if session is None or session.closed:
            self._client.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout), trust_env=False
            )

    async def warm(self) -> None:
        """With `keep_alive`: open the HTTP session and its first connection with auth.test (it
        posts nothing; Bolt makes the same call at start-up), so the first alert pays for neither.
        A failure is logged (a warning) and left to that alert, which connects (and is retried)
        as usual."""
        if not self._keep_alive_on:
            return
        self._keep_alive()
        try:
            await self._client.auth_test()
        except (SlackApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Said at start-up (a revoked token, Slack away), not first at the first alert. Slack's
            # error code only when it is one (letters and underscores), never its other text.
            error = _error(exc) if isinstance(exc, SlackApiError) else ""
            log.warning(
                "Slack warm-up at start-up failed (%s%s): Slack is tried again with the first message",
                type(exc).__name__, f" {error}" if _SLACK_ERROR_CODE.fullmatch(error) else "",
            )
            return

    async def close(self) -> None:
        session = getattr(self._client, "session", None)
        if session is not None and not session.closed:
            await session.close()

    async def _post(self, message: Outbound, built: SlackMessage) -> Outcome:
        channel = await self._channel_for(message.target)
        if message.maybe_sent:
            found = await self._find_posted(channel, message)
            if found is not None:
                return Sent(found)
        reply = await self._client.chat_postMessage(
            channel=channel, text=built.text, blocks=built.blocks,
            unfurl_links=False, unfurl_media=False, link_names=False, metadata=_metadata(message),
        )
        return Sent(f"{reply['channel']}:{reply['ts']}")

    async def _find_posted(self, channel: str, message: Outbound) -> str | None:
        """The message an earlier, interrupted attempt of this delivery posted, if any. If the
        history cannot be read (no history scope, say), post again: at least once."""
        try:
            reply = await self._client.conversations_history(
                channel=channel, limit=HISTORY_LOOKBACK, include_all_metadata=True
            )
        except SlackApiError as exc:
            if isinstance(classify(exc), Retryable):
                raise
            return None
        for posted in reply.get("messages") or []:
            if _is_of(posted, message):
                return f"{channel}:{posted['ts']}"
        return None

    async def _update(self, message: Outbound, built: SlackMessage, thread_ref: str) -> Outcome:
        channel, _, ts = thread_ref.partition(":")
        try:
            await self._client.chat_update(
                channel=channel, ts=ts, text=built.text, blocks=built.blocks, link_names=False
            )
        except SlackApiError as exc:
            if _error(exc) in MESSAGE_GONE:
                return await self._post(message, built)  # someone deleted the first message: post anew
            raise
        # An edit notifies nobody: a raised severity and a reminder are re-notified, so their
        # reply is posted whatever slack_thread_replies says, and shown in the channel too.
        told_again = message.change in ("raised", "reminder")
        if (self._thread_replies or told_again) and built.reply is not None:
            if not (message.maybe_sent and await self._replied(channel, ts, message)):
                await self._client.chat_postMessage(
                    channel=channel, thread_ts=ts, text=built.reply, link_names=False,
                    unfurl_links=False, unfurl_media=False, reply_broadcast=told_again or None,
                    metadata=_metadata(message),
                )
        return Sent(thread_ref)

    async def _replied(self, channel: str, ts: str, message: Outbound) -> bool:
        """Whether an earlier attempt of this delivery already posted its thread reply (a broadcast
        to the channel too, for a raise or a reminder): the edit is harmless to repeat, the reply
        is not. If the thread cannot be read (no history scope), reply again: at least once."""
        try:
            reply = await self._client.conversations_replies(
                channel=channel, ts=ts, limit=HISTORY_LOOKBACK, include_all_metadata=True
            )
        except SlackApiError as exc:
            if isinstance(classify(exc), Retryable):
                raise
            return False
        return any(_is_of(posted, message) for posted in reply.get("messages") or [])

    async def _channel_for(self, target: str) -> str:
        if not target.startswith(("U", "W")):
            return target
        if target not in self._dm_channels:
            reply = await self._client.conversations_open(users=target)
            self._dm_channels[target] = str(reply["channel"]["id"])
        return self._dm_channels[target]


def _metadata(message: Outbound) -> dict[str, Any]:
    """What every message casewatch posts carries, so that a retry can find one an interrupted
    attempt posted (the channel's history, a thread's replies)."""
    return {
        "event_type": METADATA_EVENT,
        "event_payload": {"delivery_id": message.delivery_id, "alert_id": message.alert_id},
    }


def _is_of(posted: dict[str, Any], message: Outbound) -> bool:
    """Whether a message read back from Slack is the one `message` posts (its metadata)."""
    return bool(posted.get("metadata") == _metadata(message))


def classify(exc: SlackApiError) -> Outcome:
    """Turn a Slack Web API failure into retryable or permanent."""
    response = exc.response
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    error = _error(exc)
    if status == 429 or error in ("ratelimited", "rate_limited"):
        headers = getattr(response, "headers", None) or {}
        try:
            retry_after = float(headers.get("Retry-After", "1"))
        except ValueError:
            retry_after = 1.0
        return Retryable("ratelimited (HTTP 429)", retry_after=retry_after)
    if isinstance(status, int) and status >= 500:
        return Retryable(f"HTTP {status}" + (f" {error}" if error else ""))
    if error in RETRYABLE_ERRORS:
        return Retryable(error)
    return Permanent(error or f"HTTP {status}")


def _error(exc: SlackApiError) -> str:
    response = exc.response
    data = getattr(response, "data", None)
    if isinstance(data, dict):
        return str(data.get("error") or "")
    return ""


def blocks(p: dict[str, Any]) -> list[dict[str, Any]]:
    """Block Kit: headline and summary, the fields that let someone act, the state, the button.
    Every value is escaped (casewatch.safe_text.mrkdwn); only the bold labels are markup."""
    if render.is_plain(p):
        if isinstance(p.get("blocks"), list) and p["blocks"]:
            return list(p["blocks"])  # a digest brings its own (already escaped) blocks
        return [_section(mrkdwn(p.get("text", ""), keep_lines=True))]
    head = f"*{mrkdwn(render.headline(p))}*"
    if p.get("summary"):
        head += f"\n{mrkdwn(p['summary'])}"
    out: list[dict[str, Any]] = [
        _section(head),
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": clip(f"*{mrkdwn(k)}*\n{mrkdwn(v)}", FIELD_LIMIT)}
                for k, v in render.fields(p)[:10]
            ],
        },
        {"type": "context",
         "elements": [{"type": "mrkdwn", "text": clip(mrkdwn(render.state_line(p)), SECTION_LIMIT)}]},
    ]
    if p.get("state") == "open" and not p.get("for_information"):  # NPT: would be refused
        out.append(
            {
                "type": "actions",
                "block_id": "casewatch_alert",
                "elements": [
                    {
                        "type": "button",
                        "action_id": render.ACK_ACTION_ID,
                        "value": str(p["alert_id"]),
                        "style": "primary",
                        "text": {"type": "plain_text", "text": "Acknowledge"},
                    }
                ],
            }
        )
    return out


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_LIMIT)}}
