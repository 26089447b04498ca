"""Routing: default routes for every trigger, configured routes, receivers resolved to addresses."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.config import ConfigError, Settings
from casewatch.config.routing import DEFAULT_ROUTES, RECEIVERS
from casewatch.routing.outbox import build_payload
from casewatch.routing.routing import Directory, Target, allowed_emails, targets_for
from casewatch.store.models import Alert, Nominal
from integrations.slack_notifier import blocks
from tests.test_delivery_support import (
    add_nominal,
    make_ctx,
    make_settings,
    open_test_alert,
    setup_directory,
    sqlite_sessions_fixture,  # noqa: F401 (`sessions` on SQLite only)
)

Sessions = async_sessionmaker[AsyncSession]


async def resolve_receivers(
    session: AsyncSession, alert: Alert, receivers: list[str], settings: Settings
) -> list[Target]:
    nominal = await session.get(Nominal, alert.visor_ref)
    return targets_for(alert, receivers, nominal, settings, Directory.of(settings))[0]

TRIGGER_KINDS = [
    "travel.unnotified",
    "travel.record_fta",
    "travel.confirmed",
    "travel.unmatched_nominal",
    "notification.due_soon",
    "notification.missed",
    "action.due_soon",
    "action.overdue",
    "mappa.level_changed",
    "mappa.visor_update_due",
    "mappa.decrease_without_rationale",
    "recall.issued",
]


def test_every_trigger_kind_has_a_default_route_of_known_receivers() -> None:
    settings = make_settings()
    for kind in TRIGGER_KINDS:
        assert kind in DEFAULT_ROUTES, kind
        receivers = settings.routing.receivers_for(kind)
        assert receivers and set(receivers) <= set(RECEIVERS), kind


@pytest.mark.parametrize(
    ("kind", "receivers"),
    [
        ("travel.unnotified", ["spoc", "team_channel"]),
        ("recall.issued", ["control_room", "team_channel", "npt", "spoc"]),
        ("action.overdue", ["owner"]),
        ("mappa.level_changed", ["team_channel", "npt"]),
        ("something.new", ["team_channel", "spoc"]),  # unknown kinds are never unrouted
    ],
)
def test_defaults(kind: str, receivers: list[str]) -> None:
    assert make_settings().routing.receivers_for(kind) == receivers


def test_configured_route_replaces_only_its_kind_and_default_catches_unknown() -> None:
    routing = make_settings(
        routing={"routes": {"recall.issued": ["control_room"], "default": ["spoc"]}}
    ).routing
    assert routing.receivers_for("recall.issued") == ["control_room"]
    assert routing.receivers_for("travel.unnotified") == ["spoc", "team_channel"]
    assert routing.receivers_for("something.new") == ["spoc"]


def test_route_naming_an_unknown_receiver_is_a_start_up_error() -> None:
    with pytest.raises(ConfigError, match="routes.recall.issued: unknown receiver 'duty_inspector'"):
        make_settings(routing={"routes": {"recall.issued": ["team_channel", "duty_inspector"]}})
    with pytest.raises(ConfigError, match="names no receiver"):
        make_settings(routing={"routes": {"recall.issued": []}})


async def _targets(sessions: Sessions, settings_kw: dict, kind: str, **alert_kw: object):  # type: ignore[no-untyped-def,type-arg]
    ctx = make_ctx(make_settings(**settings_kw))
    await setup_directory(sessions, ctx.settings)
    await add_nominal(sessions)
    alert = await open_test_alert(sessions, ctx, kind=kind, **alert_kw)  # type: ignore[arg-type]
    async with sessions() as session:
        row = await session.get(Alert, alert.id)
        assert row is not None
        return await resolve_receivers(session, row, ctx.settings.routing.receivers_for(kind), ctx.settings)


async def test_recall_reaches_control_room_team_npt_for_the_area_and_spoc(sessions: Sessions) -> None:
    targets = await _targets(sessions, {}, "recall.issued", severity="critical")
    assert [(t.receiver, t.channel, t.address) for t in targets] == [
        ("control_room", "slack", "C0CONTROL"),
        ("team:north", "slack", "C0NORTH"),
        ("npt:north:N1", "slack", "C0NPTN1"),
        ("spoc:north", "email", "north.spoc@force.example"),
    ]
    assert not any(t.personal_data for t in targets)


async def test_overdue_action_goes_to_its_owner_by_dm_or_email(sessions: Sessions) -> None:
    [dm] = await _targets(sessions, {}, "action.overdue", subject="A1")
    assert (dm.receiver, dm.channel, dm.address) == ("officer:PC1234", "slack", "U0PC1234")


async def test_owner_without_slack_is_emailed(sessions: Sessions) -> None:
    [mail] = await _targets(sessions, {}, "action.overdue", subject="A2", owner="PC5678")
    assert (mail.channel, mail.address) == ("email", "pc5678@force.example")


async def test_owner_via_both(sessions: Sessions) -> None:
    targets = await _targets(sessions, {"routing": {"owner_via": "both"}}, "action.overdue", subject="A3")
    assert {(t.channel, t.address) for t in targets} == {
        ("slack", "U0PC1234"),
        ("email", "pc1234@force.example"),
    }


async def test_owner_falls_back_to_the_offender_manager(sessions: Sessions) -> None:
    targets = await _targets(
        sessions,
        {"routing": {"routes": {"notification.missed": ["owner"]}}},
        "notification.missed",
        owner=None,
        visor_ref="VS-0000001",
    )
    assert [(t.receiver, t.address) for t in targets] == [("officer:PC1234", "U0PC1234")]


async def test_nothing_resolvable_goes_to_the_spoc_inbox(sessions: Sessions) -> None:
    targets = await _targets(
        sessions, {"slack": {"mode": "off"}}, "mappa.level_changed", severity="medium"
    )  # team channel and NPT are chat, and chat is off
    assert [(t.channel, t.address) for t in targets] == [("email", "north.spoc@force.example")]


async def test_personal_data_only_for_cleared_targets(sessions: Sessions) -> None:
    targets = await _targets(
        sessions, {"routing": {"personal_data_targets": ["C0CONTROL"]}}, "recall.issued", severity="critical"
    )
    cleared = {t.address for t in targets if t.personal_data}
    assert cleared == {"C0CONTROL"}


def test_only_configured_addresses_may_be_mailed() -> None:
    settings = make_settings(routing={"control_room_email": "control@force.example"})
    assert allowed_emails(settings) == {
        "north.spoc@force.example",
        "sgt.north@force.example",
        "pc1234@force.example",
        "pc5678@force.example",
        "control@force.example",
    }


async def test_npt_channel_is_told_for_information_without_an_acknowledge_button(sessions: Sessions) -> None:
    # A neighbourhood team is not the alert's team: an Acknowledge button there would only be
    # refused (casewatch.alerts.authority), so its message has none and says who acknowledges.
    ctx = make_ctx(make_settings())
    await setup_directory(sessions, ctx.settings)
    await add_nominal(sessions)
    alert = await open_test_alert(sessions, ctx, kind="recall.issued", severity="critical")
    async with sessions() as session:
        row = await session.get(Alert, alert.id)
        assert row is not None
        route = ctx.settings.routing.receivers_for(row.kind)
        targets = await resolve_receivers(session, row, route, ctx.settings)
        by_receiver = {t.receiver: build_payload(row, "opened", t, ctx.settings, None) for t in targets}
    npt, team = by_receiver["npt:north:N1"], by_receiver["team:north"]
    assert npt["for_information"] is True and "for_information" not in team
    assert not [b for b in blocks(npt) if b["type"] == "actions"]
    buttons = [b["elements"][0]["action_id"] for b in blocks(team) if b["type"] == "actions"]
    assert buttons == ["casewatch_ack"]
    assert "for information; team north acknowledges" in str(blocks(npt))
