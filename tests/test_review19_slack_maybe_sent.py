"""Review (nineteenth session, a reliability reviewer): a Slack message that may already be in
the channel was posted a second time.

The notifier looks for a message an interrupted attempt may have posted (its delivery id in the
message metadata, `_find_posted`) only when the attempt follows a lapsed lease
(`Outbound.maybe_sent`, i.e. `last_error == LEASE_EXPIRED`). Two realistic faults leave a posted
message behind without that flag:

  * chat.postMessage takes effect but its answer is later than send_timeout_seconds (Slack slow,
    a proxy holding the reply): the attempt is a timeout, `Retryable`, and the retry posts again;
  * after a restart mid-send, the successor's conversations.history answers 429 (Tier 3, and far
    tighter for apps created since 2025): the attempt is `Retryable("ratelimited")`, its
    last_error replaces LEASE_EXPIRED, and the next attempt posts without looking.

Either way the team channel showed the alert twice (two messages with Acknowledge buttons; later
updates edit only one of them). Now an attempt that may have sent (Retryable.maybe_sent: a
timeout, a dropped connection) says so on the row, and every later failed attempt keeps saying so
until one sends (delivery.claim.MAYBE_SENT), so each retry looks before posting; a thread reply
(a raise or a reminder, broadcast to the channel) is looked for among the thread's replies
(conversations.replies) by the metadata every message now carries.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.slack_standin import SlackStandIn
from tests.test_delivery_support import (
    clock_of,
    deliveries,
    make_ctx,
    make_settings,
    make_worker,
    open_test_alert,
    setup_directory,
    slack_fixture,  # noqa: F401 (the `slack` fixture)
    sqlite_sessions_fixture,  # noqa: F401 (the `sessions` fixture)
)

Sessions = async_sessionmaker[AsyncSession]
TEAM_ONLY = {"routes": {"travel.unnotified": ["team_channel"]}}


def _top_level(slack: SlackStandIn, channel: str) -> list[dict[str, object]]:
    return [m for (c, _), m in slack.messages.items() if c == channel and not m.get("thread_ts")]


async def test_a_post_that_took_effect_but_answered_after_the_send_timeout_is_not_posted_again(
    sessions: Sessions, slack: SlackStandIn
) -> None:
    ctx = make_ctx(make_settings(
        slack_url=slack.url, routing=TEAM_ONLY, delivery={"send_timeout_seconds": 0.3, "lease_seconds": 10},
    ))
    await setup_directory(sessions, ctx.settings)
    await open_test_alert(sessions, ctx)
    # Slack posts the message at once; its answer comes after the worker's send timeout.
    slack.delay_next("chat.postMessage", 1.5, handle_first=True)
    worker, _ = make_worker(sessions, ctx)

    await worker.run_until_idle()
    [row] = await deliveries(sessions)
    assert row.state == "pending" and "timed out" in (row.last_error or "")
    assert len(_top_level(slack, "C0NORTH")) == 1  # the first attempt did post it

    slack.cut_delays_short()
    clock_of(ctx).set(row.next_attempt_at)
    await worker.run_until_idle()
    [row] = await deliveries(sessions)
    assert row.state == "sent"
    # The retry should have looked for the message (conversations.history) before posting again.
    assert len(_top_level(slack, "C0NORTH")) == 1, (
        f"the alert is in the channel {len(_top_level(slack, 'C0NORTH'))} times; "
        f"history looked at {len(slack.calls_to('conversations.history'))} times"
    )


async def test_a_rate_limited_history_look_after_a_restart_does_not_lose_maybe_sent(
    sessions: Sessions, slack: SlackStandIn
) -> None:
    ctx = make_ctx(make_settings(
        slack_url=slack.url, routing=TEAM_ONLY, delivery={"lease_seconds": 60, "send_timeout_seconds": 10},
    ))
    await setup_directory(sessions, ctx.settings)
    await open_test_alert(sessions, ctx)
    # The process dies after Slack posted the message, before the answer came back.
    slack.delay_next("chat.postMessage", 30.0, handle_first=True)
    doomed, _ = make_worker(sessions, ctx, worker_id="doomed")
    task = asyncio.create_task(doomed.run_once())
    await slack.wait_for_calls("chat.postMessage", 1)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    slack.cut_delays_short()
    assert len(_top_level(slack, "C0NORTH")) == 1

    # The restarted service looks for it, but Slack rate-limits conversations.history.
    slack.fail_next("conversations.history", status=429, retry_after=2)
    successor, _ = make_worker(sessions, ctx, worker_id="successor")
    clock = clock_of(ctx)
    clock.advance(timedelta(seconds=61))
    await successor.run_until_idle()
    [row] = await deliveries(sessions)
    assert row.state == "pending" and "ratelimited" in (row.last_error or "")

    clock.set(row.next_attempt_at)
    await successor.run_until_idle()
    [row] = await deliveries(sessions)
    assert row.state == "sent"
    assert len(_top_level(slack, "C0NORTH")) == 1, (
        f"the alert is in the channel {len(_top_level(slack, 'C0NORTH'))} times; "
        f"history looked at {len(slack.calls_to('conversations.history'))} times"
    )


async def test_a_raise_broadcast_that_answered_late_is_not_broadcast_twice(
    sessions: Sessions, slack: SlackStandIn
) -> None:
    """The same for an update: chat.update, then the thread reply broadcast to the channel (a
    raised severity, a reminder). The reply takes effect but answers after the send timeout; the
    retry edits again (harmless) and broadcasts the reply again (never looked for)."""
    from casewatch.alerts.lifecycle import raise_severity

    ctx = make_ctx(make_settings(
        slack_url=slack.url, routing=TEAM_ONLY, delivery={"send_timeout_seconds": 0.3, "lease_seconds": 10},
    ))
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    async with sessions.begin() as session:
        assert await raise_severity(session, alert.kind, alert.visor_ref, alert.subject, "critical", ctx)
    slack.delay_next("chat.postMessage", 1.5, handle_first=True)  # the broadcast reply
    await worker.run_until_idle()
    [row] = await deliveries(sessions, purpose="raised")
    assert row.state == "pending" and "timed out" in (row.last_error or "")

    slack.cut_delays_short()
    clock_of(ctx).set(row.next_attempt_at)
    await worker.run_until_idle()
    [row] = await deliveries(sessions, purpose="raised")
    assert row.state == "sent"
    broadcasts = [c for c in slack.calls_to("chat.postMessage") if c.args.get("reply_broadcast")]
    assert len(broadcasts) == 1, f"'severity raised' broadcast to the channel {len(broadcasts)} times"
