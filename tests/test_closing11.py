"""Connections are closed even when the work closing them is cut short (the CI flake of session
11: an 'unclosed transport' left by one test failed a later one at garbage collection). The
SMTP notifier's reaper closed idle connections in tasks of their own that close() knew nothing
of, and _close skipped the close when its QUIT was cancelled: a test ending while a reaped QUIT
was under way (an idle_seconds of 0.1 s, under load) left the transport to the collector."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from casewatch.config.sections import SmtpSection
from casewatch.delivery.notifier import Sent
from integrations import smtp_notifier
from integrations.mail_sink import MailSink
from integrations.smtp_notifier import SmtpNotifier
from tests.test_delivery_smtp import _outbound
from tests.test_delivery_support import mail_fixture  # noqa: F401 (the `mail` fixture)

SPOC = "north.spoc@force.example"


def _recording(notifier: SmtpNotifier) -> list[asyncio.BaseTransport]:
    """The transports of the connections `notifier` opens, from now on."""
    opened: list[asyncio.BaseTransport] = []
    real = notifier._connect

    async def connect() -> aiosmtplib.SMTP:
        client = await real()
        assert client.transport is not None
        opened.append(client.transport)
        return client

    notifier._connect = connect  # type: ignore[method-assign]
    return opened


def _stuck_quit(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """QUIT never answered (a stalled relay); the event is set once one is under way."""
    quitting = asyncio.Event()

    async def stuck(self: aiosmtplib.SMTP, **_kw: object) -> None:
        quitting.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(aiosmtplib.SMTP, "quit", stuck)
    return quitting


async def test_close_ends_a_connection_the_reaper_is_closing(
    mail: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier = SmtpNotifier(
        SmtpSection(host="127.0.0.1", port=mail.port, timeout_seconds=3), frozenset({SPOC}),
        max_idle=2, idle_seconds=0.05,
    )
    opened = _recording(notifier)
    quitting = _stuck_quit(monkeypatch)
    monkeypatch.setattr(smtp_notifier, "QUIT_SECONDS", 0.2)
    try:
        assert isinstance(await notifier.send(_outbound(SPOC)), Sent)
        await asyncio.wait_for(quitting.wait(), 5)  # reaped: its QUIT is under way
        assert notifier._idle == []
    finally:
        await asyncio.wait_for(notifier.close(), 5)
    assert len(opened) == 1 and opened[0].is_closing()


async def test_a_close_cancelled_during_its_quit_still_drops_the_connection(
    mail: MailSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier = SmtpNotifier(
        SmtpSection(host="127.0.0.1", port=mail.port, timeout_seconds=3), frozenset({SPOC}), max_idle=2,
    )
    opened = _recording(notifier)
    assert isinstance(await notifier.send(_outbound(SPOC)), Sent)
    quitting = _stuck_quit(monkeypatch)
    closing = asyncio.create_task(notifier.close())
    await asyncio.wait_for(quitting.wait(), 5)
    closing.cancel()  # a shutdown's grace ran out
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert len(opened) == 1 and opened[0].is_closing()
