"""Review (tenth session) of the SMTP notifier's armed MAIL FROM against a relay that limits a
client's message requests (finding 2: Postfix's smtpd_client_message_rate_limit counts every MAIL
FROM, accepted or not), with the mail as alerts send it: an alert's mails go together (the SPOC
inbox and the owner's address, each on a connection of its own, at once), then nothing for longer
than the notifier keeps a connection idle. Each message must cost the relay one MAIL FROM, as on
the plain path: an arming the reaper then QUITs unused is a second one, and a relay whose limit
fits the alert mail refuses (450) what the plain path gets through."""

from __future__ import annotations

import asyncio

import pytest

from casewatch.config.sections import SmtpSection
from integrations.smtp_notifier import SmtpNotifier
from tests.test_delivery_smtp import _outbound
from tests.test_review10_smtp_relay import SENDER, Relay, _kept_each_sent_once, _kinds, _port, relay  # noqa: F401

OWNER = "pc1234@force.example"
SPOC = "north.spoc@force.example"
ALERTS = 3
LIMIT = 2 * ALERTS  # what the plain path asks: one MAIL FROM a message


# review10 finding 2 (fixed): an alert's mails each go on a new connection when alerts are sparse,
# and a connection is armed only when its message came on it while it idled (SmtpNotifier._keep).
@pytest.mark.parametrize("armed", [True, False])
async def test_sparse_alerts_of_two_mails_each_cost_one_mail_from_a_message(
    relay: Relay, armed: bool  # noqa: F811
) -> None:
    requests: list[int] = []

    def limited(connection: int, mail: int) -> str:
        requests.append(connection)
        return "reply:450 4.7.1 Error: too much mail from 127.0.0.1" if len(requests) > LIMIT else "ok"

    relay.on_mail = limited
    smtp = SmtpSection(host="127.0.0.1", port=await _port(relay), sender=SENDER, timeout_seconds=3)
    notifier = SmtpNotifier(smtp, frozenset({SPOC, OWNER}), max_idle=4, arm_idle=armed, idle_seconds=0.1)
    outcomes = []
    try:
        for n in range(ALERTS):
            outcomes += await asyncio.gather(*(
                notifier.send(_outbound(target, summary=f"Border check {n}.{k} (fictional)"))
                for k, target in enumerate((SPOC, OWNER))
            ))
            await asyncio.sleep(0.4)  # the next alert comes after the idle connections are reaped
    finally:
        await notifier.close()
    assert _kinds(outcomes) == ["Sent"] * 2 * ALERTS, (len(requests), _kinds(outcomes))
    assert len(relay.kept) == 2 * ALERTS
