"""One mail through MailProcessor (and the LMTP listener where the reply matters), on SQLite and
PostgreSQL: nothing escapes both the event and the kept item; the same check re-sent is one
event; mail not from an allowed sender is neither read nor kept; implausible times are kept for a
person on the nominal; names match with forenames when the report gives them."""

from __future__ import annotations

import asyncio
import logging

import pytest

from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.models import Alert
from integrations.mail_ingest import process
from integrations.mail_ingest.lmtp import KEPT, NOT_READ, LmtpListener
from integrations.mail_ingest.process import FAILED_REASON, Tally
from integrations.mail_ingest.samples import border_alert_mail
from tests.support import envelope
from tests.test_mail_lmtp import lmtp_session
from tests.test_mail_support import (
    CHECKED,
    REF,
    alert_kinds,
    border_events,
    kept_items,
    mail_service,
)

HEADERS = (
    b"From: warnings-index@borderforce.example\r\nSubject: x\r\nMessage-ID: <%s@borderforce.example>\r\n"
)
HOSTILE = {
    # html.parser raises AssertionError on it (the reviewer's fuzz).
    "html": HEADERS % b"p1" + b"Content-Type: text/html\r\n\r\n<p>hi</p><![bogus[ x ]]>\r\n",
    # astimezone raises OverflowError.
    "year 1": HEADERS % b"p2" + b"\r\nViSOR reference: VS-0001234\r\nPort: Dover\r\nDirection: Arrival\r\n"
    b"Date/time of check: 0001-01-01T00:00:00+0100\r\n",
    "year 9999": HEADERS % b"p3" + b"\r\nViSOR reference: VS-0001234\r\nPort: Dover\r\nDirection: Arrival\r\n"
    b"Date/time of check: 9999-12-31T23:59:00-0100\r\n",
}
COLLEAGUE = (
    b"From: colleague@force.example\r\nSubject: Re: case conference\r\nMessage-ID: <o1@force.example>\r\n\r\n"
    b"Minutes of the case conference about Jo Example (DOB 01/01/1970), 1 Fake Street.\r\n"
)


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_mail_is_kept_with_an_alert_and_lmtp_answers_250(db_url: str, name: str) -> None:
    async with mail_service(db_url) as (service, processor):
        listener = await LmtpListener(processor, "127.0.0.1", 0, 1024 * 1024).start()
        try:
            replies = await asyncio.to_thread(lmtp_session, listener.port, HOSTILE[name], 2)
        finally:
            await listener.stop()
        assert replies == [KEPT, KEPT]  # not 451 for ever
        [item] = await kept_items(service)
        assert item.content == HOSTILE[name]
        assert await alert_kinds(service) == ["feed.unreadable"]
        assert await border_events(service) == []


async def test_an_unforeseen_error_keeps_the_mail_with_a_fixed_reason(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> object:
        raise RuntimeError("Surname: TESTPERSON")  # an exception quoting the mail

    async with mail_service(db_url) as (service, processor):
        monkeypatch.setattr(process, "extract", broken)
        raw = border_alert_mail(checked=CHECKED)
        with caplog.at_level(logging.INFO):
            outcome = await processor.handle(raw)
            again = await processor.handle(raw)  # read again (a crash before the mark): kept once
        assert outcome.kind == "kept" and outcome.failed and outcome.reason == FAILED_REASON
        assert again.item_id == outcome.item_id
        [item] = await kept_items(service)
        assert item.content == raw and item.reason == FAILED_REASON
        assert await alert_kinds(service) == ["feed.unreadable"]
        assert "TESTPERSON" not in caplog.text and "RuntimeError" in caplog.text
        tally = Tally()
        tally.add(outcome)
        assert tally.any_failed and "reading 1 failed (kept)" in tally.summary()


async def test_the_same_check_resent_with_another_message_id_is_one_event(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        first = await processor.handle(border_alert_mail(checked=CHECKED, message_id="<one@bf.example>"))
        resent = await processor.handle(
            # Re-sent: a new Message-ID, the port's spacing and case changed, the time with an offset.
            border_alert_mail(
                checked="2026-11-19T18:05:00+0000", port="DOVER  eastern docks", message_id="<two@x.example>"
            )
        )
        assert (first.kind, resent.kind) == ("ingested", "duplicate")
        assert resent.event_id == first.event_id
        other = await processor.handle(
            border_alert_mail(checked=CHECKED, direction="Departure", message_id="<three@x.example>")
        )
        assert other.kind == "ingested" and other.event_id != first.event_id
        assert len(await border_events(service)) == 2
        # One set of travel alerts per check (the departure is a check of its own).
        assert (await alert_kinds(service, REF)).count("travel.record_fta") == 2
        assert await kept_items(service) == []


async def test_mail_not_from_an_allowed_sender_is_not_read_nor_kept(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        forged = border_alert_mail(checked=CHECKED).replace(
            b"Border Force Warnings Index <warnings-index@borderforce.example>",
            b'"warnings-index@borderforce.example" <someone@elsewhere.example>',
        )
        listener = await LmtpListener(processor, "127.0.0.1", 0, 1024 * 1024).start()
        try:
            for raw in (COLLEAGUE, forged, b"From: colleague@force.example\r\n\r\n" + b"z" * 5_000_000):
                assert await asyncio.to_thread(lmtp_session, listener.port, raw, 2) == [NOT_READ, NOT_READ]
        finally:
            await listener.stop()
        assert await kept_items(service) == [] and await alert_kinds(service) == []
        assert await border_events(service) == []
        assert listener.handler.outcomes.counts["ignored"] == 3
        assert "3 not from an allowed sender" in listener.handler.outcomes.summary()


async def test_a_check_in_the_future_is_kept_on_the_nominal(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        # The test clock is 20 Nov 2026 09:30 UTC; [ingest] max_clock_skew_seconds is 300.
        outcome = await processor.handle(border_alert_mail(checked="21/11/2027 09:30"))
        assert outcome.kind == "kept" and "future" in (outcome.reason or "")
        soon_mail = border_alert_mail(checked="20/11/2026 09:33", message_id="<s@x.example>")
        soon = await processor.handle(soon_mail)
        assert soon.kind == "ingested"  # within the allowed clock skew
        async with service.sessions() as session:
            alert = await session.get(Alert, outcome.alerts[0])
        assert alert is not None and alert.kind == "feed.unreadable" and alert.visor_ref == REF


async def test_a_field_the_events_refuse_is_kept_on_the_nominal(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        outcome = await processor.handle(border_alert_mail(checked=CHECKED, port="Dover\x1b[2J Docks"))
        assert outcome.kind == "kept"
        assert await alert_kinds(service, REF) == ["feed.unreadable"]


async def test_forenames_narrow_the_name_match(db_url: str) -> None:
    async with mail_service(db_url) as (service, processor):
        twin = envelope(
            "nominal.upsert", id="mail-test-upsert-twin", visor_ref="VS-0005678",
            surname="Testperson", forenames="Jordan Example", date_of_birth="1980-02-01",
        )
        envelopes, errors = parse_envelopes(twin)
        assert not errors
        await ingest(service.sessions, envelopes, service.ctx, source="test")

        alex = await processor.handle(border_alert_mail(None, checked=CHECKED, message_id="<a@x.example>"))
        assert alex.kind == "ingested"
        jordan = await processor.handle(
            border_alert_mail(None, checked=CHECKED, forenames="JORDAN", message_id="<j@x.example>")
        )
        assert jordan.kind == "ingested"
        assert sorted(ref for _, ref in await border_events(service)) == [REF, "VS-0005678"]
        # No forenames given: two people share the surname and date of birth, so no match.
        nameless = border_alert_mail(None, checked=CHECKED, message_id="<n@x.example>").replace(
            b"Forenames: ALEX SAMPLE\r\n", b""
        )
        assert b"Forenames" not in nameless
        kept = await processor.handle(nameless)
        assert kept.kind == "kept" and "match no single nominal" in (kept.reason or "")
        # Forenames that match nobody: no match either.
        sam = await processor.handle(
            border_alert_mail(None, checked=CHECKED, forenames="SAM", message_id="<s@x.example>")
        )
        assert sam.kind == "kept"


def test_the_tally_keeps_only_the_last_outcomes() -> None:
    tally = Tally()
    for _ in range(process.RECENT_OUTCOMES + 50):
        tally.add(process.Outcome("duplicate"))
    assert len(tally) == process.RECENT_OUTCOMES and tally.counts["duplicate"] == process.RECENT_OUTCOMES + 50
    assert tally.total == process.RECENT_OUTCOMES + 50 and not tally.any_failed
