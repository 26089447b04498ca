"""Faults between casewatch and its receivers: Slack and SMTP down, then Slack answering 429 in
bursts and SMTP refusing with 4xx for a while. Afterwards every alert has reached every receiver
exactly once: nothing lost, no duplicates. On SQLite and PostgreSQL (the `sessions` fixture).
The delivery worker is the real one, on a fixed clock
that its sleeps move on, so the test waits for no backoff in real time. Fictional data only."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import open_alerts
from casewatch.context import Context
from casewatch.model.alerts import AlertSpec
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.test_delivery_support import (
    clock_of,
    deliveries,
    make_ctx,
    make_settings,
    make_worker,
    setup_directory,
)
from tests.test_delivery_support import mail_fixture as mail  # noqa: F401 (fixture)
from tests.test_delivery_support import slack_fixture as slack  # noqa: F401 (fixture)

Sessions = async_sessionmaker[AsyncSession]
ALERTS = 12
FAST = {"backoff_base_seconds": 1, "backoff_max_seconds": 30, "chat_interval_seconds": 0,
        "max_attempts": 50, "give_up_after_seconds": 86400, "fallback_after_seconds": 86400}


async def _open(sessions: Sessions, ctx: Context) -> list[str]:
    specs = [
        AlertSpec("recall.issued", "critical", f"VS-R{n:06d}", "north", subject=f"recall-{n}",
                  summary=f"Recall issued: VS-R{n:06d}")
        for n in range(ALERTS)
    ]
    async with sessions.begin() as session:
        opened = await open_alerts(session, specs, ctx)
    return [a.id for a in opened if a is not None]


async def test_every_alert_reaches_every_receiver_once_after_outages_and_429_bursts(
    sessions: Sessions, slack: SlackStandIn, mail: MailSink  # noqa: F811
) -> None:
    down = make_ctx(make_settings(delivery=FAST))  # Slack and SMTP on ports nothing listens on
    await setup_directory(sessions, down.settings)
    ids = await _open(sessions, down)
    assert len(ids) == ALERTS
    worker, _ = make_worker(sessions, down)
    await worker.run_until_idle()
    rows = await deliveries(sessions)
    receivers = {(r.channel, r.target) for r in rows}
    assert receivers == {("slack", "C0CONTROL"), ("slack", "C0NORTH"), ("email", "north.spoc@force.example")}
    assert len(rows) == 3 * ALERTS
    assert all(r.state == "pending" and r.attempts >= 1 for r in rows)  # kept for retry, not lost

    # Back up, but Slack throttles in bursts and the mail server defers for a while.
    up = Context(make_settings(slack_url=slack.url, smtp_port=mail.port, delivery=FAST), down.clock)
    for _ in range(3):
        slack.fail_next("chat.postMessage", status=429, retry_after=2)
    mail.fail_next("451 4.3.0 Try again later (fictional)", times=4)
    worker, _ = make_worker(sessions, up)
    for _ in range(40):
        clock_of(up).advance(timedelta(seconds=31))
        await worker.run_until_idle()
        if all(r.state == "sent" for r in await deliveries(sessions)):
            break
    rows = await deliveries(sessions)
    assert Counter(r.state for r in rows) == {"sent": 3 * ALERTS}

    # What Slack kept (a call answered 429 posted nothing), per channel and nominal.
    posted = Counter(
        (channel, _alert_of(message)) for (channel, _), message in slack.messages.items()
        if _alert_of(message) is not None
    )
    assert len(slack.calls_to("chat.postMessage")) > 2 * ALERTS  # the 429s were really answered
    mailed = Counter(
        (rcpt, _alert_in(str(m["Subject"]) + str(m.get_body(preferencelist=("plain",))), ids))
        for m, (_, rcpts) in zip(mail.messages, mail.envelopes, strict=True) for rcpt in rcpts
    )
    for alert_id in ids:
        ref = next(r.payload["visor_ref"] for r in rows if r.alert_id == alert_id)
        assert posted[("C0CONTROL", ref)] == 1 and posted[("C0NORTH", ref)] == 1, alert_id
        assert mailed[("north.spoc@force.example", alert_id)] == 1, alert_id


def _alert_of(args: dict[str, object]) -> str | None:
    """The ViSOR reference a posted Slack message is about (the fictional refs are unique)."""
    text = str(args.get("text", "")) + str(args.get("blocks", ""))
    return next((f"VS-R{n:06d}" for n in range(ALERTS) if f"VS-R{n:06d}" in text), None)


def _alert_in(text: str, ids: list[str]) -> str | None:
    return next((i for i in ids if i in text), None)
