"""Review (sixth session, R2) of warming the notifiers at start-up (ebdc737,
integrations.notifiers.warm_up, SmtpNotifier.warm): what it does with a refused login and with a
server that accepts and never answers. Holds: nothing is sent, nothing raises, no connection is
kept or left open, the credentials are never logged, the start-up is not held past WARM_SECONDS.
Defect (minor, operability): a refused SMTP login found at start-up is dropped without a word; the
service only says so when the first alert is mailed, maybe hours later and beside a real alert."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import time
from pathlib import Path

import pytest

from casewatch.config.sections import SmtpSection
from integrations import notifiers as notifiers_module
from integrations.mail_sink import MailSink
from integrations.notifiers import warm_up
from integrations.smtp_notifier import SmtpNotifier
from tests.test_delivery_smtp import _self_signed

PASSWORD = "wrong-fictional-secret"
USERNAME = "cw-fictional-user"


def _refusing_sink(tmp_path: Path) -> tuple[MailSink, SmtpNotifier]:
    from aiosmtpd.smtp import AuthResult

    def check(server, session, envelope, mechanism, data):  # type: ignore[no-untyped-def]
        return AuthResult(success=False, handled=False)

    server_tls, client_tls = _self_signed(tmp_path)
    sink = MailSink(tls_context=server_tls, authenticator=check).start()
    section = SmtpSection(host="127.0.0.1", port=sink.port, starttls=True, username=USERNAME,
                          password=PASSWORD, timeout_seconds=3)
    notifier = SmtpNotifier(section, frozenset({"north.spoc@force.example"}), tls_context=client_tls,
                            max_idle=1)
    return sink, notifier


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@needs_openssl
async def test_review_a_refused_login_at_warm_up_sends_nothing_keeps_nothing_logs_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink, smtp = _refusing_sink(tmp_path)
    caplog.set_level(logging.DEBUG)
    try:
        started = time.monotonic()
        await warm_up({"email": smtp})  # no exception
        assert time.monotonic() - started < notifiers_module.WARM_SECONDS
        assert smtp.connects == 1 and smtp._idle == []
        assert sink.messages == []
    finally:
        await smtp.close()
        sink.stop()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert PASSWORD not in logged and USERNAME not in logged


@needs_openssl
async def test_review_a_refused_login_found_at_start_up_is_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink, smtp = _refusing_sink(tmp_path)
    caplog.set_level(logging.INFO)
    try:
        await warm_up({"email": smtp})
    finally:
        await smtp.close()
        sink.stop()
    told = [r for r in caplog.records if r.levelno >= logging.WARNING and "smtp" in r.getMessage().lower()]
    assert told, "warm-up met a refused login and said nothing"


async def test_review_a_server_that_never_answers_holds_start_up_only_warm_seconds_and_is_let_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifiers_module, "WARM_SECONDS", 0.3)
    with socket.socket() as listener:  # accepts, never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        section = SmtpSection(host="127.0.0.1", port=listener.getsockname()[1], timeout_seconds=30)
        smtp = SmtpNotifier(section, frozenset({"a@force.example"}), max_idle=1)
        started = time.monotonic()
        await warm_up({"email": smtp})
        assert time.monotonic() - started < 2
        assert smtp._idle == []
        loop = asyncio.get_running_loop()
        accepted, _ = await loop.sock_accept(listener)
        with accepted:
            async with asyncio.timeout(2):
                closed = await loop.sock_recv(accepted, 1)
        assert closed == b""  # the warm-up's connection was closed, not left open
        await smtp.close()
