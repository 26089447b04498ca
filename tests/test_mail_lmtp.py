"""Border-alert mail through the LMTP listener (aiosmtpd) for a forwarding rule, on SQLite and
PostgreSQL: smtplib speaks LMTP to it on loopback. 250 only after the commit; 451 when the
database cannot be reached; unreadable mail kept for a person with a feed.unreadable alert."""

from __future__ import annotations

import asyncio
import smtplib
import socket

import pytest

from casewatch.config.inbound_mail import InboundMailSection
from casewatch.store.engine import make_engine, make_sessionmaker
from integrations.mail_ingest.lmtp import KEPT, STORED, UNAVAILABLE, LmtpListener
from integrations.mail_ingest.process import MailProcessor
from integrations.mail_ingest.samples import border_alert_mail
from integrations.mail_ingest.template import load_template
from tests.test_mail_support import (
    CHECKED,
    REF,
    SENDER,
    UNKNOWN_REF,
    alert_kinds,
    border_events,
    count_events,
    free_port,
    kept_items,
    mail_service,
)


def _send(port: int, raw: bytes, recipients: tuple[str, ...] = ("spoc@force.example",)) -> tuple[int, str]:
    """(code, text) of the LMTP reply to DATA."""
    with smtplib.LMTP("127.0.0.1", port, timeout=30) as client:
        try:
            client.sendmail(SENDER, list(recipients), raw)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        except smtplib.SMTPSenderRefused as exc:
            return exc.smtp_code, exc.smtp_error.decode()
    return 250, "OK"


async def send(port: int, raw: bytes) -> tuple[int, str]:
    return await asyncio.to_thread(_send, port, raw)


async def test_a_report_becomes_one_border_alert_and_the_travel_alerts(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        listener = await LmtpListener(processor, "127.0.0.1", 0, 1024 * 1024).start()
        try:
            assert await send(listener.port, border_alert_mail(checked=CHECKED)) == (250, "OK")
            # The same mail again (a redelivery): a duplicate, still 250.
            assert await send(listener.port, border_alert_mail(checked=CHECKED)) == (250, "OK")
        finally:
            await listener.stop()
        [(event_id, ref)] = await border_events(service)
        assert ref == REF and event_id.startswith("mail-")
        # A registered nominal with no travel notification: unnotified travel (rules.border_travel).
        assert await alert_kinds(service, REF) == ["travel.record_fta", "travel.unnotified"]
        assert [o.kind for o in listener.handler.outcomes] == ["ingested", "duplicate"]
        assert await kept_items(service) == []


async def test_a_well_formed_unknown_reference_is_ingested_for_the_spoc(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        outcome = await processor.handle(border_alert_mail(UNKNOWN_REF, checked=CHECKED))
        assert outcome.kind == "ingested"
        assert await border_events(service) == [(outcome.event_id, UNKNOWN_REF)]
        assert await alert_kinds(service, UNKNOWN_REF) == ["travel.unmatched_nominal"]


async def test_no_reference_matched_by_surname_and_date_of_birth(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        # "TESTPERSON" in capitals against the stored "Testperson": names are folded.
        outcome = await processor.handle(border_alert_mail(None, checked=CHECKED, message_id="<a@x.example>"))
        assert outcome.kind == "ingested"
        assert [ref for _, ref in await border_events(service)] == [REF]
        # No such person (another date of birth): kept for a person, nothing ingested.
        other = border_alert_mail(
            None, checked=CHECKED, date_of_birth="02/02/1980", message_id="<b@x.example>"
        )
        kept = await processor.handle(other)
        assert kept.kind == "kept" and "match no single nominal" in (kept.reason or "")
        assert len(await border_events(service)) == 1
        [item] = await kept_items(service)
        assert item.media_type == "message/rfc822" and item.content == other
        # Nothing identifying went into the reason, the alert or the event.
        assert "TESTPERSON" not in item.reason and "1980" not in item.reason


async def test_unreadable_mail_is_kept_with_a_feed_unreadable_alert(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        listener = await LmtpListener(processor, "127.0.0.1", 0, 1024 * 1024).start()
        bad = border_alert_mail(checked="sometime last week")
        try:
            assert (await send(listener.port, bad))[0] == 250
            assert (await send(listener.port, bad))[0] == 250  # redelivered: kept once
        finally:
            await listener.stop()
        [item] = await kept_items(service)
        assert item.source == "mail" and item.team == "north" and item.content == bad
        assert "checked_at" in item.reason
        assert await alert_kinds(service) == ["feed.unreadable"]
        assert await border_events(service) == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # Control characters in a field: refused by the events' own validation.
        (border_alert_mail(checked=CHECKED, port="Dover\x1b[2J Docks"), "a field is not valid: data.port"),
        # A huge line and an unknown charset.
        (border_alert_mail(checked="X" * 5000), "checked_at"),
        (border_alert_mail(checked=CHECKED).replace(b'charset="utf-8"', b'charset="x-nope"'), "decoded"),
    ],
)
async def test_hostile_mail_is_kept_not_ingested(db_url: str, raw: bytes, reason: str) -> None:
    async with mail_service(db_url) as (service, processor):
        listener = await LmtpListener(processor, "127.0.0.1", 0, 1024 * 1024).start()
        try:
            assert (await send(listener.port, raw))[0] == 250
        finally:
            await listener.stop()
        [item] = await kept_items(service)
        assert reason in item.reason
        assert await border_events(service) == []


def lmtp_session(port: int, raw: bytes, recipients: int) -> list[str]:
    """One LMTP transaction by hand (smtplib reads a single reply to DATA): the replies to DATA,
    one expected per recipient, each read with a timeout (a missing one fails the test)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        stream = conn.makefile("rb")

        def reply() -> str:
            line = stream.readline()
            while line[3:4] == b"-":
                line = stream.readline()
            return line.decode().rstrip()

        assert reply().startswith("220")
        for command in [b"LHLO test", b"MAIL FROM:<" + SENDER.encode() + b">"] + [
            b"RCPT TO:<spoc%d@force.example>" % n for n in range(recipients)
        ]:
            conn.sendall(command + b"\r\n")
            assert reply().startswith("250")
        conn.sendall(b"DATA\r\n")
        assert reply().startswith("354")
        body = b"".join(
            b"." + line if line.startswith(b".") else line for line in raw.splitlines(keepends=True)
        )
        conn.sendall(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        replies = [reply() for _ in range(recipients)]
        conn.sendall(b"QUIT\r\n")
        assert reply().startswith("221")  # nothing more was said after the replies
    return replies


async def test_too_big_gets_one_reply_per_recipient_and_its_first_bytes_kept(db_url: str) -> None:
    async with mail_service(db_url, max_message_bytes=4096) as (service, processor):
        listener = await LmtpListener(processor, "127.0.0.1", 0, 4096).start()
        # A line that starts with a dot (unstuffed on the way in) within the kept bytes.
        big = border_alert_mail(checked=CHECKED) + b".hidden dot\r\n" + (b"x" * 998 + b"\r\n") * 1100
        try:
            replies = await asyncio.to_thread(lmtp_session, listener.port, big, 2)
        finally:
            await listener.stop()
        assert replies == [KEPT, KEPT]
        [item] = await kept_items(service)
        assert item.content == big[:4096] and f"{len(big)} bytes" in item.reason
        assert await alert_kinds(service) == ["feed.unreadable"]
        assert await border_events(service) == []


async def test_a_long_line_is_read_and_every_recipient_answered(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        listener = await LmtpListener(processor, "127.0.0.1", 0, 1024 * 1024).start()
        raw = border_alert_mail(checked=CHECKED) + b"y" * 200_000 + b"\r\n"
        try:
            replies = await asyncio.to_thread(lmtp_session, listener.port, raw, 2)
            plain = border_alert_mail(checked=CHECKED)
            again = await asyncio.to_thread(lmtp_session, listener.port, plain, 3)
        finally:
            await listener.stop()
        assert replies == [STORED, STORED] and again == [STORED] * 3
        assert [ref for _, ref in await border_events(service)] == [REF]
        assert [o.kind for o in listener.handler.outcomes] == ["ingested", "duplicate"]


async def test_database_unavailable_answers_451_and_stores_nothing(db_url: str) -> None:
    async with mail_service(db_url) as (service, _):
        before = await count_events(service)
        gone = make_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none")
        processor = MailProcessor(
            make_sessionmaker(gone), service.ctx, InboundMailSection(), load_template(None)
        )
        listener = await LmtpListener(processor, "127.0.0.1", 0, 1024 * 1024).start()
        try:
            code, text = await send(listener.port, border_alert_mail(checked=CHECKED))
        finally:
            await listener.stop()
            await gone.dispose()
        assert (code, text) == (451, UNAVAILABLE.split(" ", 1)[1])
        assert await count_events(service) == before
        assert await kept_items(service) == []


def test_the_listener_is_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        LmtpListener(None, "0.0.0.0", 0, 1024)  # type: ignore[arg-type]  # noqa: S104


async def test_the_demo_sends_its_sample_through_lmtp(db_url: str) -> None:
    from integrations.mail_ingest.demo import send_sample_border_alert

    async with mail_service(db_url) as (service, _):
        outcome = await send_sample_border_alert(service.sessions, service.ctx, REF)
        assert outcome.kind == "ingested"
        assert [ref for _, ref in await border_events(service)] == [REF]
        again = await send_sample_border_alert(service.sessions, service.ctx, REF)
        assert again.kind == "duplicate"  # the demo run again in the same folder
