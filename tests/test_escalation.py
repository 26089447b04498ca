"""Escalation chains: snapshotted at opening, advanced by the tick on a fixed clock, stopped by
acknowledgement or resolution, consistent when they race."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import acknowledge, open_alert, resolve
from casewatch.config import ConfigError
from casewatch.model.alerts import AlertSpec
from casewatch.routing.escalation import chain_for, escalate_due, escalate_one
from casewatch.store.models import Alert
from tests.test_delivery_support import (
    OFFICERS,
    T0,
    TEAM,
    audits,
    clock_of,
    deliveries,
    make_ctx,
    make_settings,
    open_test_alert,
    setup_directory,
)

Sessions = async_sessionmaker[AsyncSession]


def test_default_chains_per_severity_and_reminders_never_escalate() -> None:
    ctx = make_ctx(make_settings())
    critical = chain_for("recall.issued", "critical", ctx)
    assert critical == [
        {"after_seconds": 900, "receivers": ["supervisors"]},
        {"after_seconds": 2700, "receivers": ["control_room", "spoc"]},
    ]
    assert chain_for("action.overdue", "high", ctx)[0] == {
        "after_seconds": 3600,
        "receivers": ["supervisors"],
    }
    assert chain_for("action.overdue", "low", ctx) == []
    assert chain_for("action.due_soon", "high", ctx) == []  # a reminder asks no acknowledgement


def test_configured_chains_override_defaults() -> None:
    ctx = make_ctx(
        make_settings(
            routing={
                "escalation": {"high": [{"after_seconds": 60, "receivers": ["spoc"]}]},
                "escalation_by_kind": {
                    "recall.issued": [{"after_seconds": 5, "receivers": ["control_room"]}]
                },
            }
        )
    )
    assert chain_for("x", "high", ctx) == [{"after_seconds": 60, "receivers": ["spoc"]}]
    assert chain_for("x", "critical", ctx)[0]["after_seconds"] == 900  # untouched severities keep theirs
    assert chain_for("recall.issued", "critical", ctx) == [
        {"after_seconds": 5, "receivers": ["control_room"]}
    ]
    assert chain_for("action.due_soon", "high", ctx) == []


def test_escalation_step_naming_an_unknown_receiver_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown receiver 'sergeant'"):
        make_settings(routing={"escalation": {"high": [{"after_seconds": 60, "receivers": ["sergeant"]}]}})
    with pytest.raises(ConfigError, match="unknown severity"):
        make_settings(routing={"escalation": {"urgent": []}})


async def test_escalation_timing_with_a_fixed_clock(sessions: Sessions) -> None:
    ctx = make_ctx(make_settings(routing={"routes": {"recall.issued": ["team_channel"]}}))
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx, kind="recall.issued", severity="critical")
    assert alert.escalation_chain == chain_for("recall.issued", "critical", ctx)
    assert alert.next_escalation_at == T0 + timedelta(minutes=15)
    clock = clock_of(ctx)

    clock.set(T0 + timedelta(minutes=14, seconds=59))
    assert await escalate_due(sessions, ctx) == []

    clock.set(T0 + timedelta(minutes=15))
    assert await escalate_due(sessions, ctx) == [alert.id]
    assert await escalate_due(sessions, ctx) == []  # once per step
    async with sessions() as session:
        row = await session.get(Alert, alert.id)
        assert row is not None
        assert row.escalation_step == 1 and row.next_escalation_at == T0 + timedelta(minutes=60)
    escalated = await deliveries(sessions, purpose="escalated")
    assert {(d.channel, d.target) for d in escalated} == {
        ("slack", "C0NORTH"),  # the team's message is updated...
        ("email", "sgt.north@force.example"),  # ...and the supervisors told
    }
    assert all(d.payload["escalated_to"] == ["supervisors"] for d in escalated)
    [audit] = await audits(sessions, "alert.escalated")
    assert audit.subject == alert.id and audit.details == {"step": 1, "receivers": ["supervisors"]}

    clock.set(T0 + timedelta(minutes=60))
    assert await escalate_due(sessions, ctx) == [alert.id]
    second = await deliveries(sessions, purpose="escalated")
    assert {d.target for d in second[2:]} >= {"C0CONTROL", "north.spoc@force.example"}
    async with sessions() as session:
        row = await session.get(Alert, alert.id)
        assert row is not None and row.escalation_step == 2 and row.next_escalation_at is None

    clock.set(T0 + timedelta(days=3))
    assert await escalate_due(sessions, ctx) == []  # the end of the chain


async def test_acknowledge_and_resolve_stop_escalation(sessions: Sessions) -> None:
    ctx = make_ctx(make_settings())
    await setup_directory(sessions, ctx.settings)
    acked = await open_test_alert(sessions, ctx, kind="recall.issued", severity="critical", visor_ref="VS-1")
    solved = await open_test_alert(sessions, ctx, kind="recall.issued", severity="critical", visor_ref="VS-2")
    async with sessions.begin() as session:
        assert (await acknowledge(session, acked.id, "PC1234", "slack_button", ctx)).status == "acknowledged"
        live = await session.get(Alert, solved.id)
        assert live is not None and await resolve(session, live, "returned to custody", ctx)
    clock_of(ctx).advance(timedelta(hours=5))
    assert await escalate_due(sessions, ctx) == []
    assert await deliveries(sessions, purpose="escalated") == []


SOUTH_TEAM = {**TEAM, "id": "south", "name": "South MOSOVO", "channel": "C0SOUTH",
              "spoc_email": "south.spoc@force.example", "npt_channels": {}}
SOUTH_OFFICER = {"id": "PC9001", "name": "PC Southern", "email": "pc9001@force.example",
                 "slack_user_id": "U0PC9001", "team": "south"}


async def test_a_refused_acknowledgement_does_not_stop_escalation(sessions: Sessions) -> None:
    ctx = make_ctx(make_settings(teams=[TEAM, SOUTH_TEAM], officers=[*OFFICERS, SOUTH_OFFICER]))
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx, kind="recall.issued", severity="critical", owner=None)
    async with sessions.begin() as session:
        for officer in ("PC9001", "NOT-IN-DIRECTORY"):  # another team's officer; a stranger
            refused = await acknowledge(session, alert.id, officer, "slack_button", ctx, outcome="done")
            assert (refused.status, refused.alert) == ("refused", None)
    async with sessions() as session:
        row = await session.get(Alert, alert.id)
        assert row is not None
        assert (row.state, row.acknowledged_by, row.acknowledged_outcome) == ("open", None, None)
    assert [(a.actor, a.subject) for a in await audits(sessions, "alert.ack_refused")] == [
        ("PC9001", alert.id), ("NOT-IN-DIRECTORY", alert.id),
    ]
    assert await deliveries(sessions, purpose="acknowledged") == []
    clock_of(ctx).advance(timedelta(minutes=15))
    assert await escalate_due(sessions, ctx) == [alert.id]


async def test_an_alert_of_an_unconfigured_team_is_for_the_team_that_hears_of_it(sessions: Sessions) -> None:
    ctx = make_ctx(make_settings(teams=[TEAM, SOUTH_TEAM], officers=[*OFFICERS, SOUTH_OFFICER]))
    await setup_directory(sessions, ctx.settings)
    async with sessions.begin() as session:
        spec = AlertSpec("travel.unmatched_nominal", "high", "VS-9999999", "nowhere", subject="e1")
        alert = await open_alert(session, spec, ctx)
        assert alert is not None
    async with sessions.begin() as session:  # routed to the first team, north: not south
        assert (await acknowledge(session, alert.id, "PC9001", "slack_command", ctx)).status == "refused"
        assert (await acknowledge(session, alert.id, "PC1234", "slack_command", ctx)).status == "acknowledged"


@pytest.mark.postgres
async def test_ack_racing_escalation_leaves_one_consistent_state(pg_url: str) -> None:
    """The escalation read the alert as open; an ack commits before its update: no escalation."""
    from casewatch.store.engine import make_engine, make_sessionmaker

    engine = make_engine(pg_url)
    try:
        sessions = make_sessionmaker(engine)
        ctx = make_ctx(make_settings())
        await setup_directory(sessions, ctx.settings)
        alert = await open_test_alert(sessions, ctx, kind="recall.issued", severity="critical")
        clock_of(ctx).advance(timedelta(minutes=20))
        async with sessions.begin() as escalation:
            stale = await escalation.get(Alert, alert.id)  # read while still open
            assert stale is not None and stale.state == "open"
            async with sessions.begin() as ack:
                assert (
                    await acknowledge(ack, alert.id, "PC1234", "slack_button", ctx)
                ).status == "acknowledged"
            assert await escalate_one(escalation, alert.id, ctx) is False
        async with sessions() as session:
            row = await session.get(Alert, alert.id)
            assert row is not None
            assert row.state == "acknowledged" and row.escalation_step == 0 and row.next_escalation_at is None
        assert await deliveries(sessions, purpose="escalated") == []
    finally:
        await engine.dispose()


async def test_concurrent_ticks_escalate_once(sessions: Sessions) -> None:
    import asyncio

    ctx = make_ctx(make_settings())
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx, kind="recall.issued", severity="critical")
    clock_of(ctx).advance(timedelta(minutes=16))
    results = await asyncio.gather(escalate_due(sessions, ctx), escalate_due(sessions, ctx))
    assert sorted(results) == [[], [alert.id]]
    assert len(await audits(sessions, "alert.escalated")) == 1
