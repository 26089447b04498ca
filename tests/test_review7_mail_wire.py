"""Review (seventh session, issue 17): the SMTP notifier's directly written mails (commit 1af0f57)
on the wire, through the real mail sink on loopback. What the server keeps must be, byte for byte,
what the email package writes for the same headers, bodies and boundary: lines of only '.', lines
starting with '.' or "From " (SMTP's DATA transparency is aiosmtplib's, and must undo cleanly), a
line break or a forged header in a value (one line whatever it holds), trailing spaces, a
threaded reply (In-Reply-To, References). Fictional data only."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

from casewatch.config.sections import SmtpSection
from casewatch.delivery.notifier import Outbound, Sent
from integrations.mail_sink import MailSink
from integrations.smtp_notifier import _POLICY, SmtpNotifier, direct_bytes, library_mail

TARGET = "north.spoc@force.example"
THREAD = "<casewatch.A-20261130-000001.3.0123456789@force.example>"
ALERT = {"alert_id": "A-20261130-000001", "change": "opened", "state": "open", "kind": "travel.unnotified",
         "severity": "high", "visor_ref": "VS-0000001", "team": "north",
         "summary": "Border check at Benchport\r\nBcc: someone@attacker.example\r\n.\r\nRSET",
         "owner": "PC1234"}
PAYLOADS: list[dict[str, Any]] = [
    {"subject": "[casewatch] digest\r\nBcc: someone@attacker.example", "text": ".\n..\n.x\nFrom here\n.\n"},
    {"subject": "[casewatch] digest", "text": "trailing   \n\n.\n\n-- \n--=====\nEnd ."},
    ALERT,
    {**ALERT, "change": "acknowledged", "state": "acknowledged", "acknowledged_by": "PC1234",
     "acknowledged_outcome": ".\r\n.\r\nQUIT"},
]


def _outbound(n: int, payload: dict[str, Any], thread: str | None) -> Outbound:
    return Outbound(delivery_id=n, alert_id=str(payload.get("alert_id", "")),
                    change=str(payload.get("change", "")), target=TARGET, payload=payload,
                    content_hash="0123456789abcdef", thread_ref=thread)


def _kept(folder: Path) -> list[bytes]:
    return [path.read_bytes() for path in sorted(folder.glob("*.eml"))]


async def test_each_mail_arrives_as_the_email_package_writes_it(tmp_path: Path) -> None:
    sink = MailSink(folder=tmp_path).start()
    notifier = SmtpNotifier(SmtpSection(host="127.0.0.1", port=sink.port, sender="casewatch@force.example"),
                            frozenset({TARGET}))
    sent: list[tuple[Outbound, str]] = []
    try:
        for n, payload in enumerate(PAYLOADS):
            for thread in (None, THREAD):
                message = _outbound(n * 2 + (thread is not None), payload, thread)
                outcome = await notifier.send(message)
                assert isinstance(outcome, Sent), outcome
                sent.append((message, outcome.external_ref))
    finally:
        await notifier.close()
        sink.stop()
    files = _kept(tmp_path)
    assert len(files) == len(sent) == len(sink.messages)
    direct = 0
    for (message, message_id), path in zip(sent, files, strict=True):
        raw = path.split(b"\r\n", 1)[1]  # after the sink's X-Envelope-To line
        got = email.message_from_bytes(raw, policy=email.policy.default)
        headers, plain, html = notifier._parts(message)
        headers = [(k, str(got["Date"]) if k == "Date" else v) for k, v in headers]
        expected = library_mail(headers, plain, html)
        boundary = got.get_boundary()
        assert boundary is not None
        expected.set_boundary(boundary)
        assert raw == expected.as_bytes(policy=_POLICY), message.payload
        direct += direct_bytes(headers, plain, html, boundary) is not None
        # Threading kept, the id the one reported, and no value made a header of its own.
        assert got["Message-ID"] == message_id == dict(headers)["Message-ID"]
        assert got["In-Reply-To"] == message.thread_ref and got["References"] == message.thread_ref
        assert got["Bcc"] is None
        assert sorted(set(got.keys())) == sorted(
            {"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"}
            | ({"X-Casewatch-Alert"} if message.alert_id else set())
            | ({"In-Reply-To", "References"} if message.thread_ref else set())
        )
    assert direct == len(sent)  # every one of them took the direct path
