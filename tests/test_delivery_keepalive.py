"""The service's notifiers keep their connections between messages (issue 17, end to end):
one SMTP connection and one HTTP session serve several messages, a connection the server closed
or one left idle too long is replaced, a failed one is never reused, and close() ends them all."""

from __future__ import annotations

import asyncio

from casewatch.config.sections import SmtpSection
from casewatch.delivery.notifier import Retryable, Sent
from integrations.mail_sink import MailSink
from integrations.slack_notifier import SlackNotifier
from integrations.smtp_notifier import SmtpNotifier
from tests.slack_standin import SlackStandIn
from tests.test_delivery_smtp import _outbound
from tests.test_delivery_support import mail_fixture  # noqa: F401 (the `mail` fixture)

SPOC = "north.spoc@force.example"


def _notifier(mail: MailSink, **kw: float) -> SmtpNotifier:
    smtp = SmtpSection(host="127.0.0.1", port=mail.port)
    return SmtpNotifier(smtp, frozenset({SPOC}), max_idle=4, **kw)  # type: ignore[arg-type]


async def test_one_smtp_connection_carries_several_mails(mail: MailSink) -> None:
    notifier = _notifier(mail)
    try:
        for _ in range(3):
            assert isinstance(await notifier.send(_outbound(SPOC)), Sent)
        assert len(mail.messages) == 3
        assert notifier.connects == 1
    finally:
        await notifier.close()


async def test_concurrent_mails_each_get_a_connection_and_keep_it(mail: MailSink) -> None:
    notifier = _notifier(mail)
    try:
        outcomes = await asyncio.gather(*(notifier.send(_outbound(SPOC)) for _ in range(3)))
        assert all(isinstance(o, Sent) for o in outcomes)
        assert notifier.connects == 3
        await asyncio.gather(*(notifier.send(_outbound(SPOC)) for _ in range(3)))
        assert notifier.connects == 3 and len(mail.messages) == 6
    finally:
        await notifier.close()


async def test_an_idle_connection_is_closed_and_replaced(mail: MailSink) -> None:
    notifier = _notifier(mail, idle_seconds=0.05)
    try:
        assert isinstance(await notifier.send(_outbound(SPOC)), Sent)
        await asyncio.sleep(0.2)  # the reaper closes it
        assert notifier._idle == []
        assert isinstance(await notifier.send(_outbound(SPOC)), Sent)
        assert notifier.connects == 2 and len(mail.messages) == 2
    finally:
        await notifier.close()


async def test_a_failed_mail_does_not_reuse_its_connection(mail: MailSink) -> None:
    notifier = _notifier(mail)
    try:
        assert isinstance(await notifier.send(_outbound(SPOC)), Sent)
        mail.fail_next("451 4.3.0 Try again later")
        assert isinstance(await notifier.send(_outbound(SPOC)), Retryable)
        assert isinstance(await notifier.send(_outbound(SPOC)), Sent)
        assert notifier.connects == 2 and len(mail.messages) == 2
    finally:
        await notifier.close()


async def test_a_connection_the_server_dropped_is_not_used() -> None:
    first = MailSink()
    first.start()
    notifier = _notifier(first)
    try:
        assert isinstance(await notifier.send(_outbound(SPOC)), Sent)
        [(client, _)] = notifier._idle
        client.close()  # as if the server had hung up while it was idle
        assert isinstance(await notifier.send(_outbound(SPOC)), Sent)
        assert notifier.connects == 2 and len(first.messages) == 2
    finally:
        await notifier.close()
        first.stop()


async def test_slack_calls_share_one_http_session() -> None:
    async with SlackStandIn(token="xoxb-test-token") as slack:
        notifier = SlackNotifier(token="xoxb-test-token", api_url=slack.url, keep_alive=True)
        try:
            sent = [await notifier.send(_outbound("C0NORTH")) for _ in range(3)]
            assert all(isinstance(o, Sent) for o in sent)
            session = notifier._client.session
            assert session is not None and not session.closed
            assert len(slack.calls_to("chat.postMessage")) == 3
        finally:
            await notifier.close()
        assert session.closed


async def test_a_ring_during_a_round_that_found_nothing_is_not_lost() -> None:
    """The bell rings after the claim looked (and found nothing) but before the worker waits: it
    must claim again at once, not at its next poll (60 s here)."""
    from casewatch.delivery.worker import DeliveryWorker
    from tests.test_delivery_support import make_ctx, make_settings

    ctx = make_ctx(make_settings(delivery={"chat_log_path": "unused.log", "poll_seconds": 60}))
    worker = DeliveryWorker(None, ctx, {})  # type: ignore[arg-type] (_claim is replaced below)
    stop = asyncio.Event()
    rounds: list[float] = []

    async def claim(spare_in_flight: bool = False) -> list[object]:
        rounds.append(asyncio.get_running_loop().time())
        if len(rounds) == 1:
            worker.bell.ring()  # a commit lands while this claim is finishing
        else:
            stop.set()
        return []

    worker._claim = claim  # type: ignore[method-assign,assignment]
    await asyncio.wait_for(worker.run_forever(stop), timeout=5)
    assert len(rounds) == 2 and rounds[1] - rounds[0] < 1
