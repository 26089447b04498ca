"""The worker under failure and concurrency: a crash mid-send, two workers on one database,
the background runner, and the demo's chat log."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.clock import SystemClock
from casewatch.context import Context
from casewatch.delivery.runner import start_delivery
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import AlertThread
from integrations.notifiers import build_notifiers
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
)

Sessions = async_sessionmaker[AsyncSession]
TEAM_ONLY = {"routes": {"travel.unnotified": ["team_channel"]}}


@pytest.mark.parametrize("reached_slack", [True, False], ids=["posted-before-kill", "lost-before-slack"])
async def test_worker_killed_mid_send_is_redelivered_after_its_lease(
    sessions: Sessions, slack: SlackStandIn, reached_slack: bool
) -> None:
    ctx = make_ctx(
        make_settings(
            slack_url=slack.url, routing=TEAM_ONLY, delivery={"lease_seconds": 60, "send_timeout_seconds": 10}
        )
    )
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)
    # The reply never comes before the kill; with reached_slack the message was posted all the same.
    slack.delay_next("chat.postMessage", 30.0, handle_first=reached_slack)
    doomed, _ = make_worker(sessions, ctx, worker_id="doomed")

    task = asyncio.create_task(doomed.run_once())
    await slack.wait_for_calls("chat.postMessage", 1)
    task.cancel()  # the process dies mid-send
    with contextlib.suppress(asyncio.CancelledError):
        await task
    [row] = await deliveries(sessions)
    assert row.state == "sending" and row.claimed_by == "doomed"

    successor, _ = make_worker(sessions, ctx, worker_id="successor")
    clock = clock_of(ctx)
    clock.advance(timedelta(seconds=59))
    assert await successor.run_until_idle() == 0  # the lease still holds
    clock.advance(timedelta(seconds=2))
    assert await successor.run_until_idle() == 1

    [row] = await deliveries(sessions)
    assert row.state == "sent" and row.claimed_by is None and row.alert_id == alert.id
    assert len(slack.calls_to("conversations.history")) == 1  # it looked before posting again
    # Nothing lost, and still one message in the channel: found if it was posted, else posted now.
    assert len(slack.calls_to("chat.postMessage")) == (1 if reached_slack else 2)
    if reached_slack:
        [(channel, ts)] = list(slack.messages)
        assert row.external_ref == f"{channel}:{ts}"
    async with sessions() as session:
        threads = (await session.execute(select(func.count()).select_from(AlertThread))).scalar_one()
    assert threads == 1


async def _two_workers_deliver_everything_once(url: str, slack: SlackStandIn, alerts: int) -> None:
    # Different channels so that pacing does not serialise the run.
    teams = [
        {"id": f"t{n}", "name": f"Team {n}", "channel": f"C0T{n}", "spoc_email": f"t{n}.spoc@force.example"}
        for n in range(alerts)
    ]
    settings = make_settings(
        slack_url=slack.url,
        routing=TEAM_ONLY,
        teams=teams,
        officers=[],
        delivery={"batch_size": 5, "chat_interval_seconds": 0},
    )
    engines = [make_engine(url), make_engine(url)]  # two "processes"
    try:
        makers = [make_sessionmaker(e) for e in engines]
        ctx = make_ctx(settings)
        await setup_directory(makers[0], settings)
        from casewatch.alerts.lifecycle import open_alert
        from casewatch.model.alerts import AlertSpec

        async with makers[0].begin() as session:
            for n in range(alerts):
                spec = AlertSpec(
                    kind="travel.unnotified",
                    severity="high",
                    visor_ref=f"VS-{n:07d}",
                    team=f"t{n}",
                    summary="border check",
                )
                assert await open_alert(session, spec, ctx) is not None
        for _ in range(alerts):
            slack.delay_next("chat.postMessage", 0.01)
        workers = [make_worker(m, ctx, worker_id=f"w{i}")[0] for i, m in enumerate(makers)]
        handled = await asyncio.gather(*(w.run_until_idle() for w in workers))

        rows = await deliveries(makers[0])
        assert len(rows) == alerts and all(r.state == "sent" and r.attempts == 1 for r in rows)
        posts = slack.calls_to("chat.postMessage")
        assert len(posts) == alerts  # no double sends
        assert sorted(c.args["channel"] for c in posts) == sorted(f"C0T{n}" for n in range(alerts))
        assert sum(handled) == alerts
    finally:
        for e in engines:
            await e.dispose()


@pytest.mark.postgres
async def test_two_workers_on_one_postgresql_never_double_send(pg_url: str, slack: SlackStandIn) -> None:
    await _two_workers_deliver_everything_once(pg_url, slack, alerts=40)


async def test_two_workers_on_one_sqlite_never_double_send(sqlite_url: str, slack: SlackStandIn) -> None:
    await _two_workers_deliver_everything_once(sqlite_url, slack, alerts=20)


async def test_background_runner_delivers_escalates_counts_and_stops(
    sessions: Sessions, slack: SlackStandIn
) -> None:
    from prometheus_client import CollectorRegistry

    settings = make_settings(
        slack_url=slack.url,
        routing={**TEAM_ONLY, "escalation": {"high": [{"after_seconds": 0, "receivers": ["control_room"]}]}},
        delivery={"poll_seconds": 0.05, "workers": 2, "escalation_tick_seconds": 0.05},
    )
    ctx = Context(settings, SystemClock())
    await setup_directory(sessions, settings)
    registry = CollectorRegistry()
    stop = await start_delivery(sessions, ctx, build_notifiers(settings), registry=registry)
    try:
        alert = await open_test_alert(sessions, ctx)
        await slack.wait_for_calls("chat.postMessage", 1, within=10)
        sent = None
        for _ in range(200):
            sent = registry.get_sample_value("casewatch_outbox_deliveries", {"state": "sent"})
            if sent == 3:  # the team message, its escalation update, and the control room
                break
            await asyncio.sleep(0.05)
        assert sent == 3
        rows = await deliveries(sessions)
        assert {(r.purpose, r.target, r.state) for r in rows} == {
            ("opened", "C0NORTH", "sent"),
            ("escalated", "C0NORTH", "sent"),
            ("escalated", "C0CONTROL", "sent"),
        }
        assert all(r.alert_id == alert.id for r in rows)
        assert (
            registry.get_sample_value(
                "casewatch_delivery_attempts_total", {"channel": "slack", "outcome": "sent"}
            )
            == 3
        )
    finally:
        await stop()


async def test_chat_log_records_messages_when_slack_is_off(sessions: Sessions, tmp_path: Path) -> None:
    log_path = tmp_path / "chat.log"
    settings = make_settings(
        slack={"mode": "off"}, routing=TEAM_ONLY, delivery={"chat_log_path": str(log_path)}
    )
    ctx = make_ctx(settings)
    await setup_directory(sessions, settings)
    alert = await open_test_alert(sessions, ctx)
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    from casewatch.alerts.lifecycle import acknowledge

    async with sessions.begin() as session:
        await acknowledge(session, alert.id, "PC1234", "api", ctx)
    await worker.run_until_idle()
    first, update = log_path.read_text(encoding="utf-8").splitlines()
    assert "#C0NORTH" in first and alert.id in first and "[HIGH] travel.unnotified VS-0000001" in first
    assert "[Acknowledge]" in first
    assert "update to chatlog:" in update and "Acknowledged by PC1234" in update


async def test_slack_off_without_chat_log_queues_no_chat(sessions: Sessions) -> None:
    settings = make_settings(slack={"mode": "off"}, routing=TEAM_ONLY)
    ctx = make_ctx(settings)
    await setup_directory(sessions, settings)
    await open_test_alert(sessions, ctx)
    [row] = await deliveries(sessions)
    assert row.channel == "email" and row.target == "north.spoc@force.example"  # nothing unrouted
