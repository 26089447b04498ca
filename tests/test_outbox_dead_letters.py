"""`casewatch outbox dead|requeue`: dead letters listed without their content, requeued only when
dead and only to addresses still configured, audited, and then really delivered by a worker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.cli import main
from casewatch.delivery.dead_letters import Selector, list_dead, requeue
from casewatch.store.models import Delivery, DeliveryAttempt
from tests.slack_standin import SlackStandIn
from tests.test_delivery_support import (
    T0,
    TOKEN,
    audits,
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
NAME = "Testperson"  # in every seeded payload: must never be printed
LONG_ERROR = "channel_not_found: " + "x" * 300


def _config(tmp_path: Path, db_url: str, slack_url: str = "http://127.0.0.1:9/api/") -> Path:
    path = tmp_path / "casewatch.toml"
    path.write_text(
        f"""
[database]
url = "{db_url}"
[slack]
mode = "http"
bot_token = "{TOKEN}"
signing_secret = "s"
api_url = "{slack_url}"
[routing]
control_room_channel = "C0CONTROL"

[[teams]]
id = "north"
name = "North MOSOVO"
channel = "C0NORTH"
spoc_email = "north.spoc@force.example"
supervisor_emails = ["sgt.north@force.example"]
npt_channels = {{ N1 = "C0NPTN1" }}

[[officers]]
id = "PC1234"
name = "PC Example"
email = "pc1234@force.example"
slack_user_id = "U0PC1234"
team = "north"
""",
        encoding="utf-8",
    )
    return path


async def _add(
    sessions: Sessions,
    *,
    state: str = "dead",
    channel: str = "slack",
    target: str = "C0NORTH",
    alert_id: str | None = None,
    purpose: str = "digest",
    error: str | None = "channel_not_found",
    attempts: int = 1,
) -> int:
    """A delivery as the worker leaves it, with its attempts (the last one an hour after T0)."""
    async with sessions.begin() as session:
        d = Delivery(
            alert_id=alert_id, purpose=purpose, receiver="team:north", channel=channel, target=target,
            payload={"text": f"{NAME} Ada, VS-0000001"}, content_hash="h", state=state,
            attempts=attempts, next_attempt_at=T0, claimed_by="w1" if state == "sending" else None,
            claimed_until=T0 + timedelta(minutes=1) if state == "sending" else None,
            last_error=error if state in ("dead", "pending") else None, created_at=T0,
            sent_at=T0 if state == "sent" else None,
        )
        session.add(d)
        await session.flush()
        for n in range(attempts):
            session.add(
                DeliveryAttempt(
                    delivery_id=d.id, attempted_at=T0 + timedelta(minutes=60 * (n + 1) / attempts),
                    outcome="dead" if state == "dead" and n == attempts - 1 else "retry", error=error,
                )
            )
        return d.id


async def _cli(*argv: str) -> int:
    # main() runs its own event loop: off this one.
    return await asyncio.to_thread(main, list(argv))


async def _states(sessions: Sessions) -> dict[int, str]:
    return {d.id: d.state for d in await deliveries(sessions)}


async def test_dead_lists_only_dead_deliveries_and_never_their_content(
    sessions: Sessions, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = make_ctx(make_settings())
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)  # queues pending deliveries of its own
    dead_alert = await _add(sessions, alert_id=alert.id, purpose="opened", error=LONG_ERROR, attempts=3)
    dead_digest = await _add(sessions, channel="email", target="sgt.north@force.example", error="550 refused")
    sent = await _add(sessions, state="sent")
    pending = await _add(sessions, state="pending")

    async with sessions() as session:
        listed = await list_dead(session)
    assert [d.id for d in listed] == [dead_alert, dead_digest]
    assert listed[0].died_at == T0 + timedelta(minutes=60) and listed[0].attempts == 3

    config = _config(tmp_path, db_url)
    assert await _cli("outbox", "dead", "--config", str(config)) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[-1] == "2 dead deliveries"
    assert lines[0].startswith(f"{dead_alert}  alert {alert.id}  slack C0NORTH  team:north  attempts 3  ")
    assert "died 2026-11-23T10:00:00+00:00" in lines[0]
    error_shown = lines[0].split("error: ", 1)[1]
    assert error_shown.startswith("channel_not_found: xxx") and error_shown.endswith("...")
    assert len(error_shown) == 120
    assert lines[1].startswith(f"{dead_digest}  digest  email sgt.north@force.example  team:north  ")
    assert "error: 550 refused" in lines[1]
    assert not any(line.startswith((f"{sent} ", f"{pending} ")) for line in lines)
    assert NAME not in out and "Ada" not in out


async def test_requeue_by_id_resets_the_row_keeps_the_payload_and_audits(
    sessions: Sessions, db_url: str
) -> None:
    ctx = make_ctx(make_settings(), at=T0 + timedelta(days=2))
    first = await _add(sessions, attempts=5, error="gave up after 5 attempts: timed out")
    second = await _add(sessions, channel="email", target="North.SPOC@force.example", error="550 no")
    untouched = await _add(sessions)

    async with sessions.begin() as session:
        result = await requeue(session, ctx, Selector(ids=(first, second)))
    assert result.requeued == [first, second] and result.skipped == []

    rows = {d.id: d for d in await deliveries(sessions)}
    for delivery_id in (first, second):
        d = rows[delivery_id]
        assert (d.state, d.attempts, d.last_error) == ("pending", 0, None)
        assert d.claimed_by is None and d.claimed_until is None
        assert d.next_attempt_at == ctx.clock.now() and d.created_at == ctx.clock.now()
        assert d.payload == {"text": f"{NAME} Ada, VS-0000001"}
    assert rows[untouched].state == "dead"

    entries = await audits(sessions, "delivery.requeued")
    assert [(e.actor, e.subject) for e in entries] == [("cli", str(first)), ("cli", str(second))]
    assert entries[0].details["channel"] == "slack" and entries[0].details["target"] == "C0NORTH"
    assert entries[0].details["previous_error"] == "gave up after 5 attempts: timed out"
    assert entries[1].details["target"] == "North.SPOC@force.example"
    assert entries[1].details["previous_error"] == "550 no"
    assert entries[0].details["created_at"] == T0.isoformat()
    assert all(e.at == ctx.clock.now() for e in entries)


async def test_requeue_by_target_moves_exactly_that_targets_dead_rows(
    sessions: Sessions, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    north = [await _add(sessions), await _add(sessions)]
    elsewhere = await _add(sessions, target="C0NPTN1")
    sent_north = await _add(sessions, state="sent")
    mail = await _add(sessions, channel="email", target="north.spoc@force.example")

    config = _config(tmp_path, db_url)
    assert await _cli("outbox", "requeue", "--target", "C0NORTH", "--config", str(config)) == 0
    assert f"requeued 2 ({north[0]}, {north[1]}); skipped 0" in capsys.readouterr().out
    states = await _states(sessions)
    assert [states[i] for i in north] == ["pending", "pending"]
    assert (states[elsewhere], states[sent_north], states[mail]) == ("dead", "sent", "dead")
    assert [e.subject for e in await audits(sessions, "delivery.requeued")] == [str(i) for i in north]

    # Email addresses match whatever their case.
    upper = "NORTH.spoc@force.example"
    assert await _cli("outbox", "requeue", "--target", upper, "--config", str(config)) == 0
    assert (await _states(sessions))[mail] == "pending"
    assert [d.attempts for d in await deliveries(sessions, id=mail)] == [0]


async def test_requeue_all_moves_every_dead_row_and_nothing_else(
    sessions: Sessions, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = [
        await _add(sessions, target="C0NORTH"),
        await _add(sessions, target="C0CONTROL"),
        await _add(sessions, target="U0PC1234"),
        await _add(sessions, channel="email", target="pc1234@force.example"),
    ]
    others = {await _add(sessions, state=s): s for s in ("pending", "sending", "sent")}

    config = _config(tmp_path, db_url)
    assert await _cli("outbox", "requeue", "--all", "--config", str(config)) == 0
    assert "requeued 4" in capsys.readouterr().out
    states = await _states(sessions)
    assert all(states[i] == "pending" for i in dead)
    assert {i: states[i] for i in others} == others
    rows = {d.id: d for d in await deliveries(sessions)}
    assert all(rows[i].attempts == 0 for i in dead) and rows[next(iter(others))].attempts == 1
    assert len(await audits(sessions, "delivery.requeued")) == 4

    # Nothing dead is left: a second run requeues nothing and says so.
    assert await _cli("outbox", "requeue", "--all", "--config", str(config)) == 0
    captured = capsys.readouterr()
    assert "requeued 0; skipped 0" in captured.out and "no dead deliveries matched" in captured.err


async def test_requeue_skips_an_id_that_is_not_dead_and_exits_1(
    sessions: Sessions, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = await _add(sessions)
    sent = await _add(sessions, state="sent")
    config = _config(tmp_path, db_url)
    code = await _cli(
        "outbox", "requeue", "--id", str(dead), "--id", str(sent), "--id", "999999", "--config", str(config)
    )
    assert code == 1
    captured = capsys.readouterr()
    assert f"requeued 1 ({dead}); skipped 2" in captured.out
    assert f"delivery {sent} skipped: is sent, not dead" in captured.err
    assert "delivery 999999 skipped: no such delivery" in captured.err
    states = await _states(sessions)
    assert (states[dead], states[sent]) == ("pending", "sent")
    assert [e.subject for e in await audits(sessions, "delivery.requeued")] == [str(dead)]


def test_requeue_without_a_selector_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "requeue", "--config", "/nonexistent/casewatch.toml"]) == 2
    assert "--id N (repeatable), --target ADDRESS or --all" in capsys.readouterr().err


async def test_requeue_refuses_addresses_no_longer_configured(
    sessions: Sessions, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_channel = await _add(sessions, target="C0OLDNORTH")
    old_mail = await _add(sessions, channel="email", target="old.spoc@force.example", error="550 no mailbox")
    good = await _add(sessions, target="C0NPTN1")

    config = _config(tmp_path, db_url)
    assert await _cli("outbox", "requeue", "--all", "--config", str(config)) == 1
    captured = capsys.readouterr()
    assert f"requeued 1 ({good}); skipped 2" in captured.out
    assert f"delivery {old_channel} skipped: Slack id C0OLDNORTH is no longer in the configuration" in (
        captured.err
    )
    assert (
        f"delivery {old_mail} skipped: email address old.spoc@force.example is no longer in the configuration"
        in captured.err
    )
    states = await _states(sessions)
    assert (states[old_channel], states[old_mail], states[good]) == ("dead", "dead", "pending")
    assert [e.subject for e in await audits(sessions, "delivery.requeued")] == [str(good)]

    # With Slack switched off nothing would carry a Slack message: refused too.
    settings = make_settings(slack={"mode": "off"})
    again = await _add(sessions, target="C0NORTH")
    async with sessions.begin() as session:
        result = await requeue(session, make_ctx(settings), Selector(ids=(again,)))
    assert result.requeued == [] and "Slack is off" in result.skipped[0].reason


async def test_dead_slack_message_requeued_after_the_fix_is_delivered_by_a_worker(
    sessions: Sessions, db_url: str, slack: SlackStandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(slack_url=slack.url, routing={"routes": {"travel.unnotified": ["team_channel"]}})
    ctx = make_ctx(settings)
    await setup_directory(sessions, settings)
    slack.channel_errors["C0NORTH"] = "not_in_channel"  # the bot was never invited
    alert = await open_test_alert(sessions, ctx, severity="medium")
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    [dead] = await deliveries(sessions, alert_id=alert.id)
    assert dead.state == "dead" and dead.last_error and "not_in_channel" in dead.last_error
    assert not slack.messages

    del slack.channel_errors["C0NORTH"]  # an admin invites the bot
    config = _config(tmp_path, db_url, slack.url)
    assert await _cli("outbox", "dead", "--config", str(config)) == 0
    assert f"{dead.id}  alert {alert.id}  slack C0NORTH" in capsys.readouterr().out
    assert await _cli("outbox", "requeue", "--id", str(dead.id), "--config", str(config)) == 0

    # The command stamped the row with the real time; the worker's fixed clock catches up.
    clock = clock_of(ctx)
    clock.advance(datetime.now(UTC) - clock.now() + timedelta(seconds=1))
    assert await worker.run_until_idle() >= 1
    [row] = await deliveries(sessions, alert_id=alert.id)
    assert row.state == "sent" and row.attempts == 1 and row.last_error is None
    [(channel, _ts)] = list(slack.messages)
    assert channel == "C0NORTH"
    assert [e.outcome for e in await _attempts(sessions, row.id)] == ["dead", "sent"]


async def _attempts(sessions: Sessions, delivery_id: int) -> list[DeliveryAttempt]:
    async with sessions() as session:
        stmt = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
        stmt = stmt.order_by(DeliveryAttempt.id)
        return list((await session.execute(stmt)).scalars())
