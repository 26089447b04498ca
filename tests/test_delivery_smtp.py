"""Email delivery through the worker against a real aiosmtpd server on loopback."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import acknowledge
from casewatch.config.sections import SmtpSection
from casewatch.delivery.notifier import Outbound, Permanent, Retryable, Sent
from integrations.mail_sink import MailSink
from integrations.smtp_notifier import SmtpNotifier
from tests.test_delivery_support import (
    audits,
    clock_of,
    deliveries,
    mail_fixture,  # noqa: F401 (the `mail` fixture)
    make_ctx,
    make_settings,
    make_worker,
    open_test_alert,
    setup_directory,
    sqlite_sessions_fixture,  # noqa: F401 (`sessions` on SQLite only)
)

Sessions = async_sessionmaker[AsyncSession]
SPOC_ONLY = {"routes": {"travel.unnotified": ["spoc"]}}


async def test_alert_email_is_multipart_with_message_id_and_contract_subject(
    sessions: Sessions, mail: MailSink
) -> None:
    ctx = make_ctx(make_settings(smtp_port=mail.port, routing=SPOC_ONLY))
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx, severity="critical")
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()

    [message] = mail.messages
    assert mail.envelopes == [("casewatch@force.example", ["north.spoc@force.example"])]
    assert message["Subject"].startswith(f"[casewatch] CRITICAL travel.unnotified VS-0000001 {alert.id}")
    assert message.is_multipart() and message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "VS-0000001" in plain and f"/ack {alert.id}" in plain
    assert "<table>" in html and "VS-0000001" in html
    assert "North MOSOVO" in plain  # the SPOC inbox gets a little more than chat...
    assert "Testperson" not in plain  # ...but no names or markers by default
    message_id = message["Message-ID"]
    assert message_id.startswith("<casewatch.") and message_id.endswith("@force.example>")
    [row] = await deliveries(sessions)
    assert row.state == "sent" and row.external_ref == message_id


async def test_updates_reply_to_the_first_mail(sessions: Sessions, mail: MailSink) -> None:
    ctx = make_ctx(make_settings(smtp_port=mail.port, routing=SPOC_ONLY))
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    async with sessions.begin() as session:
        await acknowledge(session, alert.id, "PC1234", "slack_command", ctx)
    await worker.run_until_idle()

    first, reply = mail.messages
    assert reply["In-Reply-To"] == first["Message-ID"]
    assert reply["References"] == first["Message-ID"]
    assert reply["Message-ID"] != first["Message-ID"]
    assert reply["Subject"].startswith("[casewatch] HIGH travel.unnotified VS-0000001")
    assert "Acknowledged by PC1234" in reply["Subject"]


async def test_4xx_is_retried_then_sent(sessions: Sessions, mail: MailSink) -> None:
    ctx = make_ctx(make_settings(smtp_port=mail.port, routing=SPOC_ONLY))
    await setup_directory(sessions, ctx.settings)
    await open_test_alert(sessions, ctx)
    mail.fail_next("451 4.3.0 Mailbox busy, try later")
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    [row] = await deliveries(sessions)
    assert row.state == "pending" and row.last_error is not None and row.last_error.startswith("451")
    assert not mail.messages
    clock_of(ctx).set(row.next_attempt_at)
    await worker.run_until_idle()
    [row] = await deliveries(sessions)
    assert row.state == "sent" and row.attempts == 2
    assert len(mail.messages) == 1


async def test_5xx_is_dead_lettered_and_reported(sessions: Sessions, mail: MailSink) -> None:
    ctx = make_ctx(make_settings(smtp_port=mail.port, routing=SPOC_ONLY))
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)
    mail.fail_next("550 5.1.1 Mailbox unavailable")
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    [row] = [r for r in await deliveries(sessions) if r.alert_id == alert.id]
    assert row.state == "dead" and row.attempts == 1 and (row.last_error or "").startswith("550")
    [dead] = await audits(sessions, "delivery.dead")
    assert dead.subject == alert.id and dead.details["channel"] == "email"
    # Reported as an alert of its own (to the admins; with none configured, the SPOC inbox).
    [report] = [r for r in await deliveries(sessions) if r.alert_id != alert.id]
    assert report.payload["kind"] == "system.delivery_failed" and report.state == "sent"
    clock_of(ctx).advance(timedelta(hours=1))
    assert await worker.run_until_idle() == 0  # dead stays dead (and stays in the outbox)


async def test_connection_refused_is_retried(sessions: Sessions) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = make_ctx(make_settings(smtp_port=port, routing=SPOC_ONLY))
    await setup_directory(sessions, ctx.settings)
    await open_test_alert(sessions, ctx)
    worker, _ = make_worker(sessions, ctx)
    await worker.run_until_idle()
    [row] = await deliveries(sessions)
    assert row.state == "pending" and row.attempts == 1


async def test_gives_up_after_max_attempts(sessions: Sessions, mail: MailSink) -> None:
    ctx = make_ctx(make_settings(smtp_port=mail.port, routing=SPOC_ONLY, delivery={"max_attempts": 3}))
    await setup_directory(sessions, ctx.settings)
    alert = await open_test_alert(sessions, ctx)
    mail.fail_next("421 4.7.0 Try again later", times=5)
    worker, _ = make_worker(sessions, ctx)
    for _ in range(3):
        await worker.run_until_idle()
        [row] = [r for r in await deliveries(sessions) if r.alert_id == alert.id]
        clock_of(ctx).set(row.next_attempt_at)
    assert row.state == "dead" and (row.last_error or "").startswith("gave up after 3 attempts")
    assert len([a for a in await audits(sessions, "delivery.retry") if a.subject == alert.id]) == 2
    assert len([a for a in await audits(sessions, "delivery.dead") if a.subject == alert.id]) == 1


def _outbound(target: str, **payload: object) -> Outbound:
    body = {
        "alert_id": "A-TEST22",
        "kind": "action.overdue",
        "severity": "medium",
        "visor_ref": "VS-0000009",
        "state": "open",
        "change": "opened",
        **payload,
    }
    return Outbound(1, "A-TEST22", "opened", target, body, "0" * 64)


async def test_a_long_subject_still_starts_with_casewatch(mail: MailSink) -> None:
    smtp = SmtpSection(host="127.0.0.1", port=mail.port)
    notifier = SmtpNotifier(smtp, frozenset({"north.spoc@force.example"}))
    long_kind = _outbound("north.spoc@force.example", kind="mappa.decrease_without_rationale")
    assert isinstance(await notifier.send(long_kind), Sent)
    [received] = mail.messages
    subject = str(received["Subject"])
    assert subject.startswith("[casewatch] MEDIUM mappa.decrease_without_rationale VS-0000009"), subject


async def test_only_configured_addresses_are_mailed(mail: MailSink) -> None:
    smtp = SmtpSection(host="127.0.0.1", port=mail.port)
    notifier = SmtpNotifier(smtp, frozenset({"north.spoc@force.example"}))
    refused = await notifier.send(_outbound("someone@elsewhere.example"))
    assert isinstance(refused, Permanent) and "not a configured address" in refused.error
    assert isinstance(await notifier.send(_outbound("North.Spoc@force.example")), Sent)
    assert len(mail.messages) == 1


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a throw-away certificate for 127.0.0.1, and a client context trusting it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_starttls_and_login_and_refused_login(tmp_path: Path) -> None:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def check(server, session, envelope, mechanism, data):  # type: ignore[no-untyped-def]
        assert session.ssl is not None  # credentials only ever cross an encrypted connection
        ok = isinstance(data, LoginPassword) and data.password == b"right"
        return AuthResult(success=ok, handled=False)

    server_tls, client_tls = _self_signed(tmp_path)
    sink = MailSink(tls_context=server_tls, authenticator=check).start()
    try:
        allowed = frozenset({"north.spoc@force.example"})

        def notifier(password: str, starttls: bool = True) -> SmtpNotifier:
            section = SmtpSection(
                host="127.0.0.1",
                port=sink.port,
                starttls=starttls,
                username="cw",
                password=password,
                timeout_seconds=3,
            )
            return SmtpNotifier(section, allowed, tls_context=client_tls)

        assert isinstance(await notifier("right").send(_outbound("north.spoc@force.example")), Sent)
        refused = await notifier("wrong").send(_outbound("north.spoc@force.example"))
        # A refused login is a configuration fault: kept queued and retried, not dead-lettered.
        assert isinstance(refused, Retryable) and refused.error.startswith("535")
        plain = await notifier("right", starttls=False).send(_outbound("north.spoc@force.example"))
        assert not isinstance(plain, Sent)  # the server insists on STARTTLS
        assert len(sink.messages) == 1
    finally:
        sink.stop()


async def test_timeout_is_retryable(mail: MailSink) -> None:
    with socket.socket() as listener:  # accepts but never speaks: the greeting times out
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        smtp = SmtpSection(host="127.0.0.1", port=listener.getsockname()[1], timeout_seconds=0.3)
        outcome = await SmtpNotifier(smtp, frozenset({"a@force.example"})).send(_outbound("a@force.example"))
    assert isinstance(outcome, Retryable)
