"""From the raw bytes of a mail to a border-alert Report, or the reason it cannot be read.

Every mail is hostile until read: the stdlib `email` parser (policy=default) with limits on the
size, the number and nesting of MIME parts and the text searched; headers read defensively (a
header that does not parse, or appears twice where once is allowed, makes the mail unreadable);
HTML-only mail turned into text by html.parser (tags dropped, script/style skipped, entities
decoded), never rendered. Reasons name what is wrong, never what the mail says: they go to chat.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from html.parser import HTMLParser

from casewatch.model.events import VISOR_REF_PATTERN, canonical_ref
from integrations.mail_ingest.template import Template

MAX_PARTS = 50
MAX_DEPTH = 5
MAX_TEXT_CHARS = 200_000  # the text searched by the template's patterns
EARLIEST_CHECK = datetime(1990, 1, 1, tzinfo=UTC)  # an earlier check time is a typo or a forgery
_VISOR_REF = re.compile(VISOR_REF_PATTERN)
_MESSAGE_ID = re.compile(r"<?([\x21-\x3b\x3d\x3f-\x7e]{1,250})>?")
_SPACES = re.compile(r"[ \t\u00a0]+")


class Unreadable(Exception):
    """The mail cannot be turned into a report; str() is a short reason with no personal data."""


class NotAllowed(Exception):
    """The mail is not from an allowed sender: it is not ours to read (nothing of it is kept)."""


@dataclass(frozen=True)
class Mail:
    message_id: str | None  # without the angle brackets; None if missing or not well formed
    sender: str | None  # the single From address, lower-case
    subject: str
    text: str  # the plain-text body (or the HTML body as text)
    body_sha256: str  # of the raw bytes after the header block (the same however it was delivered)

    @property
    def key(self) -> str:
        """What identifies this mail across deliveries and re-reads: its Message-ID, else its body."""
        if self.message_id is not None:
            return "mid-" + hashlib.sha256(self.message_id.encode()).hexdigest()
        return "body-" + self.body_sha256


@dataclass(frozen=True)
class Report:
    """What a border-alert report says. The identifying fields are only for finding the nominal
    when visor_ref is missing: never stored, logged or put into an event."""

    visor_ref: str | None
    port: str
    direction: str  # "inbound" | "outbound"
    checked_at: datetime
    surname: str | None = None
    forenames: str | None = None
    date_of_birth: date | None = None


def body_sha256(raw: bytes) -> str:
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = raw.partition(separator)
        if found:
            return hashlib.sha256(body).hexdigest()
    return hashlib.sha256(b"").hexdigest()


def _one_header(message: Message, name: str) -> str | None:
    values = message.get_all(name) or []
    if len(values) > 1:
        raise Unreadable(f"more than one {name} header")
    return str(values[0]) if values else None


def _sender(message: Message) -> str | None:
    header = message.get_all("From") or []
    if len(header) != 1:
        return None
    addresses: tuple[Address, ...] = getattr(header[0], "addresses", ())
    if len(addresses) != 1:
        return None
    address = addresses[0].addr_spec.lower()
    if not re.fullmatch(r"[a-z0-9._%+'-]{1,64}@[a-z0-9.-]{1,253}", address):
        return None
    return address


def _message_id(message: Message) -> str | None:
    value = _one_header(message, "Message-ID")
    if value is None:
        return None
    match = _MESSAGE_ID.fullmatch(value.strip())
    return match.group(1) if match else None


class _HtmlText(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "title"})
    _BREAK = frozenset({"br", "p", "div", "tr", "li", "h1", "h2", "h3", "h4", "table", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAK:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BREAK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """The text of `markup`, entities decoded once (by the parser: convert_charrefs)."""
    parser = _HtmlText()
    try:
        parser.feed(markup[:MAX_TEXT_CHARS * 2])
        parser.close()
    except (AssertionError, ValueError, IndexError) as exc:
        # html.parser asserts on some markup (`<![bogus[ x ]]>`) rather than skipping it.
        raise Unreadable(f"HTML that does not parse ({type(exc).__name__})") from exc
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parser.parts).split("\n"))
    return "\n".join(line for line in lines if line)


def _leaf_parts(message: Message) -> list[Message]:
    """The non-multipart parts, depth-first, without recursion; too many or too deep: unreadable."""
    leaves: list[Message] = []
    stack: list[tuple[Message, int]] = [(message, 0)]
    seen = 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > MAX_PARTS:
            raise Unreadable(f"more than {MAX_PARTS} MIME parts")
        if depth > MAX_DEPTH:
            raise Unreadable(f"MIME parts nested deeper than {MAX_DEPTH}")
        if part.is_multipart():
            children = part.get_payload()
            if not isinstance(children, list) or not all(isinstance(c, Message) for c in children):
                raise Unreadable("a malformed multipart")
            stack.extend((child, depth + 1) for child in reversed(children) if isinstance(child, Message))
        else:
            leaves.append(part)
    return leaves


def _text_of(part: Message) -> str:
    assert isinstance(part, EmailMessage)
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError, UnicodeError) as exc:
        raise Unreadable(f"a text part cannot be decoded ({type(exc).__name__})") from exc
    if not isinstance(content, str):
        raise Unreadable("a text part cannot be decoded")
    return content


def _body_text(message: Message) -> str:
    plain: str | None = None
    markup: str | None = None
    for part in _leaf_parts(message):
        if part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind == "text/plain" and plain is None:
            plain = _text_of(part)
        elif kind == "text/html" and markup is None:
            markup = _text_of(part)
    if plain is not None and plain.strip():
        text = plain
    elif markup is not None:
        text = html_to_text(markup)
    else:
        raise Unreadable("no text body")
    return text.replace("\r\n", "\n").replace("\r", "\n")[:MAX_TEXT_CHARS]


def check_sender(raw: bytes, allowed_senders: frozenset[str]) -> None:
    """NotAllowed unless the mail's single From address is one of `allowed_senders` (empty: anyone).
    Only the header block is parsed: a mail that is not ours has its body neither decoded nor kept."""
    if not allowed_senders:
        return
    try:
        sender = _sender(BytesHeaderParser(policy=policy.default).parsebytes(raw))
    except Exception as exc:  # a From header the parser cannot read is not an allowed sender
        raise NotAllowed("the sender cannot be read") from exc
    if sender not in allowed_senders:
        raise NotAllowed("not from an allowed sender")


def parse_mail(raw: bytes) -> Mail:
    """Parse and check the headers this adapter relies on; the body as text."""
    try:
        message = message_from_bytes(raw, policy=policy.default)
        if message.defects and any(
            type(d).__name__ in ("MissingHeaderBodySeparatorDefect", "StartBoundaryNotFoundDefect")
            for d in message.defects
        ):
            raise Unreadable("malformed MIME structure")
        subject = _one_header(message, "Subject") or ""
        return Mail(
            message_id=_message_id(message),
            sender=_sender(message),
            subject=_SPACES.sub(" ", subject.replace("\r", " ").replace("\n", " ")).strip()[:1000],
            text=_body_text(message),
            body_sha256=body_sha256(raw),
        )
    except Unreadable:
        raise
    except (ValueError, TypeError, LookupError, AttributeError, UnicodeError, RecursionError) as exc:
        # The header parser (policy.default) raises on headers it cannot make sense of.
        raise Unreadable(f"headers or MIME that do not parse ({type(exc).__name__})") from exc


def _find(mail: Mail, template: Template, name: str) -> str | None:
    rule = template.fields.get(name)
    if rule is None:
        return None
    text = mail.subject if rule.where == "subject" else mail.text
    values = {_SPACES.sub(" ", m.group("value")).strip() for m in rule.pattern.finditer(text)}
    values.discard("")
    if len(values) > 1:
        raise Unreadable(f"{name} found more than once with different values")
    return values.pop() if values else None


def extract(mail: Mail, template: Template) -> Report:
    """The report's fields by the template, each checked; Unreadable names the first problem."""
    found = {name: _find(mail, template, name) for name in template.fields}
    for name in ("port", "direction", "checked_at"):
        if found.get(name) is None:
            raise Unreadable(f"no {name} found (the template does not match)")
    visor_ref = found.get("visor_ref")
    if visor_ref is not None and not _VISOR_REF.fullmatch(visor_ref):
        raise Unreadable("visor_ref is not a ViSOR reference")
    direction = template.directions.get(str(found["direction"]).casefold())
    if direction is None:
        raise Unreadable("direction is not a known word (template directions)")
    checked_at = template.parse_datetime(str(found["checked_at"]))
    if checked_at is None:
        raise Unreadable("checked_at does not match the template's datetime_formats")
    try:
        checked_at = checked_at.astimezone(UTC)
    except OverflowError as exc:  # year 1 or 9999 with an offset
        raise Unreadable("checked_at is not a plausible time") from exc
    if checked_at < EARLIEST_CHECK:
        raise Unreadable(f"checked_at is before {EARLIEST_CHECK.year}")
    dob_text = found.get("date_of_birth")
    dob = template.parse_date(dob_text) if dob_text else None
    if visor_ref is None and (not found.get("surname") or dob is None):
        raise Unreadable("neither a ViSOR reference nor a surname and date of birth")
    return Report(
        # In capitals: the same check re-sent in another case is the same event (process.event_id_for).
        visor_ref=canonical_ref(visor_ref) if visor_ref is not None else None,
        port=str(found["port"]),
        direction=direction,
        checked_at=checked_at,
        surname=found.get("surname"),
        forenames=found.get("forenames"),
        date_of_birth=dob.date() if dob is not None else None,
    )
