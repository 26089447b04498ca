"""SmtpNotifier arms a kept connection (sends the next message's MAIL FROM while it idles) only
when its message came on it while it idled, i.e. mail comes closer than idle_seconds (review10
finding 2: an arming reaped unused is one more MAIL FROM for the relay's rate limit). Sparse mail
costs one MAIL FROM a message, as the plain path; a burst is armed from its second message on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from casewatch.config.sections import SmtpSection
from casewatch.delivery.notifier import Sent
from integrations.smtp_notifier import SmtpNotifier
from tests.test_delivery_smtp import _outbound
from tests.test_review10_smtp_relay import SENDER, SPOC, Relay


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    r = Relay()
    await r.start()
    yield r
    await r.stop()


def _counting(relay: Relay) -> list[int]:
    mails: list[int] = []

    def on_mail(connection: int, mail: int) -> str:
        mails.append(connection)
        return "ok"

    relay.on_mail = on_mail
    return mails


async def _send(relay: Relay, gaps: list[float], idle_seconds: float) -> SmtpNotifier:
    assert relay.server is not None
    port = int(relay.server.sockets[0].getsockname()[1])
    notifier = SmtpNotifier(
        SmtpSection(host="127.0.0.1", port=port, sender=SENDER, timeout_seconds=3), frozenset({SPOC}),
        max_idle=2, idle_seconds=idle_seconds,
    )
    try:
        for n, gap in enumerate(gaps):
            await asyncio.sleep(gap)
            outcome = await notifier.send(_outbound(SPOC, summary=f"Border check {n} (fictional)"))
            assert isinstance(outcome, Sent)
        await asyncio.sleep(0.1)  # an arming of the last connection, if any, answered
    finally:
        await notifier.close()
    return notifier


async def test_sparse_mail_is_one_mail_from_a_message(relay: Relay) -> None:
    mails = _counting(relay)
    notifier = await _send(relay, [0.0, 0.25, 0.25, 0.25], idle_seconds=0.1)
    assert len(mails) == 4 and len(relay.kept) == 4
    assert notifier.connects == 4  # each idle connection reaped before the next message


async def test_a_burst_is_armed_from_its_second_message(relay: Relay) -> None:
    mails = _counting(relay)
    notifier = await _send(relay, [0.0, 0.05, 0.05, 0.05], idle_seconds=5.0)
    # Messages 1 and 2 send their own MAIL; after message 2 (close to message 1) each idle
    # connection sends the next one's at once: 3 and 4 start at RCPT, and one more MAIL waits
    # for a fifth (QUIT ends it at close).
    assert len(mails) == 5 and len(relay.kept) == 4
    assert notifier.connects == 1
