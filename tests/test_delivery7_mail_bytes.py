"""SMTP mails written directly (seventh session, issue 17): for a plain ASCII mail the bytes are
exactly what the email package writes for the same message and boundary; anything else (non-ASCII,
a long line, an odd header) is left to the email package. The email package took ~1.5 ms a mail
on the event loop, before any send of its round."""

from __future__ import annotations

import email
import email.policy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casewatch.config.sections import SmtpSection
from casewatch.delivery.notifier import Outbound
from integrations.smtp_notifier import _POLICY, SmtpNotifier, direct_bytes, library_mail

BOUNDARY = "===============0123456789012345678=="
DATE = "Mon, 30 Nov 2026 19:39:06 +0000"


def _library(headers: list[tuple[str, str]], plain: str, html: str) -> bytes:
    mail = library_mail(headers, plain, html)
    mail.set_boundary(BOUNDARY)
    return mail.as_bytes(policy=_POLICY)


def _headers(subject: str, *, thread: str | None = None, sender: str = "casewatch@force.example",
             to: str = "north.spoc@force.example") -> list[tuple[str, str]]:
    headers = [("From", sender), ("To", to), ("Subject", subject), ("Date", DATE),
               ("Message-ID", "<casewatch.A-20261130-000001.7.0123456789@force.example>")]
    if thread:
        headers += [("In-Reply-To", thread), ("References", thread)]
    return [*headers, ("X-Casewatch-Alert", "A-20261130-000001")]


ascii_line = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120)
any_line = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=st.one_of(ascii_line, any_line),
    plain=st.lists(st.one_of(ascii_line, any_line), max_size=8).map("\n".join),
    html=st.one_of(ascii_line, any_line),
    trailing=st.booleans(),
    thread=st.one_of(st.none(), st.just("<casewatch.A-1.2.abc@force.example>"), ascii_line),
)
def test_direct_bytes_are_the_email_packages_or_none(
    subject: str, plain: str, html: str, trailing: bool, thread: str | None
) -> None:
    headers = _headers(subject, thread=thread)
    plain = plain + "\n" if trailing else plain
    direct = direct_bytes(headers, plain, html, BOUNDARY)
    if direct is not None:
        assert direct == _library(headers, plain, html)


def _outbound(payload: dict[str, Any], thread: str | None = None) -> Outbound:
    return Outbound(delivery_id=7, alert_id=str(payload.get("alert_id", "")),
                    change=payload.get("change", "opened"), target="north.spoc@force.example",
                    payload=payload, content_hash="0123456789abcdef",
                    thread_ref=thread)


ALERT = {"alert_id": "A-20261130-000001", "change": "opened", "state": "open", "kind": "travel.unnotified",
         "severity": "high", "visor_ref": "VS-0000001", "team": "north",
         "summary": "Border check at Benchport (outbound) with no travel notified", "due": "2026-12-01",
         "owner": "PC1234"}
PAYLOADS = [
    ALERT,
    {**ALERT, "change": "acknowledged", "state": "acknowledged", "acknowledged_by": "PC1234",
     "acknowledged_outcome": "spoke to the subject's offender manager"},
    {**ALERT, "change": "resolved", "state": "resolved"},
    {**ALERT, "summary": "Grenzkontrolle in Müllheim: keine Reise gemeldet"},  # non-ASCII: the package
    {**ALERT, "summary": "x" * 1200},  # a line over 998: the package (quoted-printable)
    {"plain": True, "subject": "[casewatch] digest for north", "text": "Line one\nLine two\n\nEnd"},
]


def test_each_mail_the_notifier_sends_is_the_one_build_makes() -> None:
    notifier = SmtpNotifier(SmtpSection(host="127.0.0.1", port=25, sender="casewatch@force.example"),
                            frozenset({"north.spoc@force.example"}))
    direct = 0
    for payload in PAYLOADS:
        for thread in (None, "<casewatch.A-20261130-000001.3.0123456789@force.example>"):
            message = _outbound(payload, thread)
            headers, plain, html = notifier._parts(message)
            raw, message_id = notifier.flattened(message)
            sent = email.message_from_bytes(raw, policy=email.policy.default)
            boundary = sent.get_boundary()
            assert boundary is not None and message_id == dict(headers)["Message-ID"]
            mail = library_mail(headers, plain, html)
            mail.set_boundary(boundary)
            assert raw == mail.as_bytes(policy=_POLICY)
            direct += direct_bytes(headers, plain, html, boundary) is not None
            # What build() makes (the Date aside: taken when each is built) reads back the same.
            built = email.message_from_bytes(notifier.build(message).as_bytes(policy=_POLICY),
                                             policy=email.policy.default)
            for name in ("From", "To", "Subject", "Message-ID", "In-Reply-To", "X-Casewatch-Alert"):
                assert sent[name] == built[name]
            for kind in ("plain", "html"):
                got, want = sent.get_body((kind,)), built.get_body((kind,))
                assert got is not None and want is not None
                assert got.get_content() == want.get_content()  # type: ignore[attr-defined]
    assert direct == 8  # the ASCII ones; the non-ASCII and the long line went through the package
