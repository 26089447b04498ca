"""The outbox: rows written in the alert's own transaction, with payloads fit for their receiver."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import acknowledge, open_alert
from casewatch.model.alerts import AlertSpec
from casewatch.routing.outbox import due_text
from casewatch.store.models import Alert, Delivery
from tests.test_delivery_support import (
    TEAM,
    add_nominal,
    deliveries,
    make_ctx,
    make_settings,
    open_test_alert,
    setup_directory,
)

Sessions = async_sessionmaker[AsyncSession]


async def test_deliveries_are_written_in_the_alerts_transaction(sessions: Sessions) -> None:
    ctx = make_ctx(make_settings())
    await setup_directory(sessions, ctx.settings)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with sessions.begin() as session:
            spec = AlertSpec(kind="recall.issued", severity="critical", visor_ref="VS-0000001", team="north")
            alert = await open_alert(session, spec, ctx)
            assert alert is not None
            await session.flush()
            queued = (await session.execute(select(func.count()).select_from(Delivery))).scalar_one()
            assert queued >= 3  # control room, team, SPOC: queued inside the transaction
            raise Boom
    async with sessions() as session:
        assert (await session.execute(select(func.count()).select_from(Alert))).scalar_one() == 0
        assert (await session.execute(select(func.count()).select_from(Delivery))).scalar_one() == 0

    alert = await open_test_alert(sessions, ctx, kind="recall.issued", severity="critical")
    rows = await deliveries(sessions)
    assert {(r.receiver, r.channel, r.target) for r in rows} == {
        ("control_room", "slack", "C0CONTROL"),
        ("team:north", "slack", "C0NORTH"),
        ("spoc:north", "email", "north.spoc@force.example"),
    }  # no nominal row yet, so no area and no NPT channel
    assert all(r.alert_id == alert.id and r.state == "pending" and r.purpose == "opened" for r in rows)
    assert all(len(r.content_hash) == 64 for r in rows)
    assert len({r.content_hash for r in rows}) == 3


async def test_chat_payload_carries_the_least_that_lets_someone_act(sessions: Sessions) -> None:
    ctx = make_ctx(make_settings(routing={"personal_data_targets": ["C0CONTROL"]}))
    await setup_directory(sessions, ctx.settings)
    await add_nominal(sessions)
    await open_test_alert(sessions, ctx, kind="recall.issued", severity="critical")
    rows = {r.target: r.payload for r in await deliveries(sessions)}

    team = rows["C0NORTH"]
    assert team["visor_ref"] == "VS-0000001" and team["kind"] == "recall.issued"
    assert team["severity"] == "critical" and team["owner"] == "PC1234" and team["due"]
    assert "personal" not in team and "more" not in team
    assert "Testperson" not in str(team) and "Violence" not in str(team)

    control = rows["C0CONTROL"]  # configured to allow names and (unrestricted) markers
    assert control["personal"] == {"name": "Ada Testperson", "markers": ["Violence"]}
    assert "Restricted thing" not in str(control)

    spoc = rows["north.spoc@force.example"]  # a little more, still no names or markers
    assert spoc["more"]["team_name"] == "North MOSOVO" and spoc["more"]["owner_name"] == "PC Example"
    assert "personal" not in spoc
    assert rows["C0NPTN1"]["kind"] == "recall.issued"


async def test_acknowledgement_updates_every_address_that_heard_of_the_alert(sessions: Sessions) -> None:
    ctx = make_ctx(make_settings())
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)
    async with sessions.begin() as session:
        await acknowledge(session, alert.id, "PC1234", "api", ctx)
    opened = {(r.channel, r.target) for r in await deliveries(sessions, purpose="opened")}
    updates = await deliveries(sessions, purpose="acknowledged")
    assert {(r.channel, r.target) for r in updates} == opened
    assert all(
        r.payload["state"] == "acknowledged" and r.payload["acknowledged_by"] == "PC1234" for r in updates
    )


async def test_plain_messages_go_through_the_same_outbox(sessions: Sessions, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from casewatch.delivery.stats import outbox_counts
    from casewatch.routing.outbox import enqueue_message
    from integrations.mail_sink import MailSink
    from tests.test_delivery_support import make_worker

    sink = MailSink().start()
    try:
        ctx = make_ctx(make_settings(smtp_port=sink.port))
        async with sessions.begin() as session:
            with pytest.raises(ValueError, match="not a configured email address"):
                await enqueue_message(
                    session,
                    ctx,
                    purpose="digest",
                    receiver="x",
                    channel="email",
                    target="stranger@elsewhere.example",
                    subject="s",
                    text="t",
                )
            await enqueue_message(
                session,
                ctx,
                purpose="digest",
                receiver="spoc:north",
                channel="email",
                target="north.spoc@force.example",
                subject="[casewatch] digest north",
                text="3 open alerts",
            )
        async with sessions() as session:
            assert (await outbox_counts(session))["pending"] == 1
        worker, _ = make_worker(sessions, ctx)
        await worker.run_until_idle()
        [message] = sink.messages
        assert message["Subject"] == "[casewatch] digest north"
        assert "3 open alerts" in message.get_body(("plain",)).get_content()
        async with sessions() as session:
            assert await outbox_counts(session) == {"pending": 0, "sending": 0, "sent": 1, "dead": 0}
    finally:
        sink.stop()


@pytest.mark.parametrize("unmatched_team", ["", "south"])
async def test_an_alert_for_a_team_not_configured_goes_to_the_fallback_team(
    sessions: Sessions, unmatched_team: str
) -> None:
    """An unknown ViSOR reference, or a nominal on a team this force does not list: the alert is
    routed as the fallback team's (triggers.unmatched_team, else the first team), never to nobody."""
    south = {
        "id": "south", "name": "South MOSOVO", "channel": "C0SOUTH", "spoc_email": "south.spoc@force.example"
    }
    ctx = make_ctx(make_settings(teams=[TEAM, south], triggers={"unmatched_team": unmatched_team}))
    await setup_directory(sessions, ctx.settings)
    async with sessions.begin() as session:
        spec = AlertSpec(kind="travel.unnotified", severity="high", visor_ref="VS-0000001", team="nowhere")
        assert await open_alert(session, spec, ctx) is not None
    expected = "south" if unmatched_team else "north"
    assert {(r.receiver, r.target) for r in await deliveries(sessions)} == {
        (f"team:{expected}", f"C0{expected.upper()}"),
        (f"spoc:{expected}", f"{expected}.spoc@force.example"),
    }


def test_an_unmatched_team_that_is_not_configured_is_a_config_error() -> None:
    from casewatch.config import ConfigError

    with pytest.raises(ConfigError, match="triggers.unmatched_team: unknown team 'west'"):
        make_settings(triggers={"unmatched_team": "west"})


@pytest.mark.parametrize(
    ("due_at", "shown"),
    [
        (datetime(2026, 11, 26, 0, 0, tzinfo=UTC), "end of 2026-11-25"),  # GMT midnight
        (datetime(2026, 7, 10, 23, 0, tzinfo=UTC), "end of 2026-07-10"),  # BST midnight
        (datetime(2026, 7, 10, 12, 30, tzinfo=UTC), "2026-07-10 13:30 BST"),
        (None, None),
    ],
)
def test_a_due_at_local_midnight_reads_as_the_end_of_that_day(
    due_at: datetime | None, shown: str | None
) -> None:
    assert due_text(due_at, make_settings()) == shown
