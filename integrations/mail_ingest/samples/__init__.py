"""A sample border-alert report in the built-in template's layout (inferred: docs/feeds/mail.md),
for the docs, the tests, the demo and the bench. Every person in it is fictional."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

SAMPLE_SENDER = "warnings-index@borderforce.example"
SAMPLE_TO = "north.spoc@force.example"


def border_alert_mail(
    visor_ref: str | None = "VS-0001234",
    *,
    port: str = "Dover Eastern Docks",
    direction: str = "Arrival",
    checked: str = "24/11/2026 18:05",
    message_id: str | None = "<wi-20261124-180500-0001@borderforce.example>",
    sender: str = SAMPLE_SENDER,
    surname: str = "TESTPERSON",
    forenames: str = "ALEX SAMPLE",
    date_of_birth: str = "01/02/1980",
    passport_number: str = "000000000",
    sent: datetime = datetime(2026, 11, 24, 18, 7, tzinfo=UTC),
    html: bool = False,
) -> bytes:
    """The report as the SPOC's mailbox would hold it (RFC 5322 bytes, CRLF line ends)."""
    lines = [
        "NOTIFICATION REPORT - WARNINGS INDEX MATCH (ViSOR SUBJECT)",
        "",
        "A passport held by a live ViSOR subject has been checked at a UK border control.",
        "",
        *([f"ViSOR reference: {visor_ref}"] if visor_ref is not None else []),
        f"Surname: {surname}",
        f"Forenames: {forenames}",
        f"Date of birth: {date_of_birth}",
        f"Passport number: {passport_number}",
        f"Port: {port}",
        f"Direction: {direction}",
        f"Date/time of check: {checked}",
        "",
        "Record this on the ViSOR Foreign Travel Attachment.",
        "This is an automated message (fictional sample).",
    ]
    message = EmailMessage()
    message["From"] = f"Border Force Warnings Index <{sender}>"
    message["To"] = SAMPLE_TO
    message["Subject"] = "Warnings Index match: ViSOR subject" + (f" {visor_ref}" if visor_ref else "")
    message["Date"] = format_datetime(sent)
    if message_id is not None:
        message["Message-ID"] = message_id
    if html:
        body = "".join(f"<p>{line}</p>" if line else "<br>" for line in lines)
        message.set_content(f"<html><body>{body}</body></html>", subtype="html")
    else:
        message.set_content("\n".join(lines) + "\n")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
