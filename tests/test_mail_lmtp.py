"""Border-alert mail through the LMTP listener (aiosmtpd) for a forwarding rule, on SQLite and
PostgreSQL: smtplib speaks LMTP to it on loopback. 250 only after the commit; 451 when the
database cannot be reached; unreadable mail kept for a person with a feed.unreadable alert."""

from __future__ import annotations

import asyncio
import smtplib

import pytest

from casewatch.config.inbound_mail import InboundMailSection
from casewatch.store.engine import make_engine, make_sessionmaker
from integrations.mail_ingest.lmtp import UNAVAILABLE, LmtpListener
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
        # A forged sender: the display name says Border Force, the address does not.
        (border_alert_mail(checked=CHECKED).replace(
            b"Border Force Warnings Index <warnings-index@borderforce.example>",
            b'"warnings-index@borderforce.example" <someone@elsewhere.example>'), "expected sender"),
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


async def test_too_big_is_refused_by_size(db_url: str) -> None:
    async with mail_service(db_url, max_message_bytes=4096) as (service, processor):
        listener = await LmtpListener(processor, "127.0.0.1", 0, 4096).start()
        try:
            code, _ = await send(listener.port, border_alert_mail(checked=CHECKED) + b"x" * 8192)
        finally:
            await listener.stop()
        assert code == 552
        assert await kept_items(service) == [] and await border_events(service) == []
        # Over IMAP the first bytes are kept instead (the mail stays in the mailbox).
        outcome = await processor.handle(b"Subject: big\r\n\r\n" + b"x" * 4000, size=9000)
        assert outcome.kind == "kept" and "larger than max_message_bytes" in (outcome.reason or "")


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
