"""Review (nineteenth session, a reliability reviewer): rows queued for (or updates addressed to) a
Slack id or a clearance that the configuration no longer has were still sent.

routing.routing says "Only configured addresses are ever produced", and dead_letters.requeue
refuses a Slack id no longer configured ("the message must go to the channel that replaced it").
But nothing checks a Slack row against the configuration when it is sent (SlackNotifier has no
`allowed` set, unlike SmtpNotifier), `_previous_targets` (routing/outbox.py) addresses every
later update (acknowledged, resolved, escalated, raised) to whatever ids earlier rows used, and a
payload rendered with the nominal's name for a cleared target keeps it after the clearance is
withdrawn. A channel taken out of the configuration because the wrong people are in it kept
receiving alerts. Now SlackNotifier posts only to configured ids (a queued row for another is
dead-lettered and reported, its alert falls back to the SPOC's mail), updates go only to addresses
still configured, and a payload's name and markers are left out for a target no longer cleared.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import acknowledge
from tests.slack_standin import SlackStandIn
from tests.test_delivery_support import (
    TEAM,
    add_nominal,
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
MOVED = {**TEAM, "channel": "C0NORTHNEW"}  # C0NORTH is no longer the team's channel


def _to(slack: SlackStandIn, channel: str) -> list[Any]:
    return [c for c in slack.calls if c.args.get("channel") == channel]


async def test_a_row_queued_for_a_channel_since_removed_is_not_posted_there(
    sessions: Sessions, slack: SlackStandIn
) -> None:
    before = make_ctx(make_settings(slack_url=slack.url, routing=TEAM_ONLY))
    await setup_directory(sessions, before.settings)
    await open_test_alert(sessions, before)  # queued for C0NORTH, not sent yet

    # The service restarts with C0NORTH taken out of the configuration.
    after = make_ctx(make_settings(slack_url=slack.url, routing=TEAM_ONLY, teams=[MOVED]))
    await setup_directory(sessions, after.settings)
    worker, _ = make_worker(sessions, after)
    await worker.run_until_idle()

    rows = await deliveries(sessions)
    assert _to(slack, "C0NORTH") == [], (
        f"posted to the removed channel: {[c.method for c in _to(slack, 'C0NORTH')]}; "
        f"rows {[(r.target, r.state) for r in rows]}"
    )


async def test_an_update_after_the_channel_was_removed_goes_to_the_configured_channel_only(
    sessions: Sessions, slack: SlackStandIn
) -> None:
    before = make_ctx(make_settings(slack_url=slack.url, routing=TEAM_ONLY))
    await setup_directory(sessions, before.settings)
    alert = await open_test_alert(sessions, before)
    worker, _ = make_worker(sessions, before)
    await worker.run_until_idle()
    assert len(_to(slack, "C0NORTH")) == 1
    slack.calls.clear()

    after = make_ctx(make_settings(slack_url=slack.url, routing=TEAM_ONLY, teams=[MOVED]))
    await setup_directory(sessions, after.settings)
    async with sessions.begin() as session:
        outcome = await acknowledge(
            session, alert.id, "PC1234", "slack_command", after, outcome="spoke to him"
        )
    assert outcome.status == "acknowledged"
    worker, _ = make_worker(sessions, after)
    await worker.run_until_idle()

    rows = await deliveries(sessions, purpose="acknowledged")
    assert [(r.target, r.state) for r in rows] != [("C0NORTH", "sent")] and _to(slack, "C0NORTH") == [], (
        f"acknowledgement (with its outcome text) sent to the removed channel: "
        f"{[(c.method, c.args.get('text', '')[:60]) for c in _to(slack, 'C0NORTH')]}; "
        f"rows {[(r.receiver, r.target, r.state) for r in rows]}"
    )


async def test_a_queued_message_keeps_no_name_once_the_clearance_is_withdrawn(
    sessions: Sessions, slack: SlackStandIn
) -> None:
    cleared = {**TEAM_ONLY, "personal_data_targets": ["C0NORTH"]}
    before = make_ctx(make_settings(slack_url=slack.url, routing=cleared))
    await setup_directory(sessions, before.settings)
    await add_nominal(sessions)
    await open_test_alert(sessions, before)  # rendered with the name, for a cleared channel

    # The channel's clearance is withdrawn (someone in it may not see names) and the service restarts.
    after = make_ctx(make_settings(slack_url=slack.url, routing=TEAM_ONLY))
    await setup_directory(sessions, after.settings)
    worker, _ = make_worker(sessions, after)
    await worker.run_until_idle()

    [post] = slack.calls_to("chat.postMessage")
    assert "Testperson" not in str(post.args), "the nominal's name went to a channel no longer cleared for it"
