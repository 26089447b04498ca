"""Review (nineteenth session, a reliability reviewer): once an admin acknowledged a
system.delivery_failed report, later dead letters to the same address were never reported again.

The report is "one alert per failing address while it is live" (worker._report_dead opens it
with subject `<channel>:<address>`), and docs/alerts.md says it resolves when acknowledged
("after fixing the address"). But acknowledging leaves an alert live (state "acknowledged",
live_key kept) and nothing ever resolves an acknowledged system.delivery_failed. So after the
first failure is acknowledged, every message that dies at that address (weeks later, a new
fault) is dead-lettered with no report: open_alert finds the live key taken and opens nothing.
An email dead letter has no fallback either, so the SPOC never gets the alert and nobody is told.
Now a failure after the acknowledgement resolves the acknowledged report and opens a new one.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import acknowledge
from casewatch.store.models import Alert
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.test_delivery_support import (
    OFFICERS,
    clock_of,
    deliveries,
    mail_fixture,  # noqa: F401 (the `mail` fixture)
    make_ctx,
    make_settings,
    make_worker,
    open_test_alert,
    setup_directory,
    slack_fixture,  # noqa: F401 (the `slack` fixture)
    sqlite_sessions_fixture,  # noqa: F401 (the `sessions` fixture)
)

Sessions = async_sessionmaker[AsyncSession]
ADMIN = {"id": "ADM1", "name": "Admin One", "email": "adm1@force.example", "slack_user_id": "U0ADM1",
         "team": "north", "roles": ["admin"]}


async def _reports(sessions: Sessions) -> list[Alert]:
    async with sessions() as session:
        stmt = select(Alert).where(Alert.kind == "system.delivery_failed").order_by(Alert.opened_at)
        return list((await session.execute(stmt)).scalars())


async def test_a_dead_letter_after_the_first_report_was_acknowledged_is_reported_again(
    sessions: Sessions, mail: MailSink, slack: SlackStandIn
) -> None:
    ctx = make_ctx(make_settings(
        slack_url=slack.url, smtp_port=mail.port, officers=[*OFFICERS, ADMIN],
        routing={"routes": {"travel.unnotified": ["spoc"]}},
    ))
    await setup_directory(sessions, ctx.settings)
    worker, _ = make_worker(sessions, ctx)

    # First fault: the SPOC inbox refuses; the admins are told (Slack DM) and acknowledge it.
    mail.fail_next("550 5.1.1 Mailbox unavailable")
    first = await open_test_alert(sessions, ctx, visor_ref="VS-0000001")
    await worker.run_until_idle()
    [report] = await _reports(sessions)
    async with sessions.begin() as session:
        assert (await acknowledge(session, report.id, "ADM1", "slack_button", ctx)).status == "acknowledged"
    await worker.run_until_idle()
    told_before = len(slack.calls_to("chat.postMessage"))

    # Weeks later the inbox refuses again: another alert's only message dies.
    clock_of(ctx).advance(timedelta(days=30))
    mail.fail_next("550 5.1.1 Mailbox unavailable")
    second = await open_test_alert(sessions, ctx, visor_ref="VS-0000002")
    await worker.run_until_idle()

    [dead] = [d for d in await deliveries(sessions) if d.alert_id == second.id]
    assert dead.state == "dead" and first.id != second.id
    reports = await _reports(sessions)
    told_after = len(slack.calls_to("chat.postMessage"))
    assert [r.state for r in reports] == ["resolved", "open"], [(r.id, r.state) for r in reports]
    assert reports[0].resolved_reason == "acknowledged; the address failed again"
    assert reports[1].subject == reports[0].subject and told_after > told_before  # the admins told anew
