"""Reading what a queue bridge posts: HMPPS domain events, bare or inside the SNS notification an
SQS subscriber of the hmpps-domain-events topic receives, one to a request or a small batch.

Every value is hostile until it fully matches what we expect. Nothing here raises on any input:
an item that cannot be read carries `problem` (a fixed phrase, never a value it saw), and the
caller keeps it for a person (docs/feeds/probation.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from casewatch.api.events import InvalidJSON, loads_strict

# Identifier types of personReference.identifiers that name a nominal, and their shapes.
IDENTIFIER_PATTERNS: Mapping[str, re.Pattern[str]] = {
    "CRN": re.compile(r"[A-Z][0-9]{6}"),  # probation case reference number
    "NOMS": re.compile(r"[A-Z][0-9]{4}[A-Z]{2}"),  # prison number
    # PNC ID: year (2 or 4 digits) / serial / check letter, e.g. 2004/0012345X.
    "PNC": re.compile(r"(?:[0-9]{2}|[0-9]{4})/[0-9]{1,7}[A-Z]"),
}
MAX_IDENTIFIERS = 20
# Real event types are lower case with dots and hyphens (a few legacy ones are upper case).
_EVENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,99}")
# additionalInformation values we read: codes, numbers, short words; no spaces or symbols
# beyond these, so nothing a sender writes can reach a rationale or a log beyond a code.
_INFO_VALUE = re.compile(r"[A-Za-z0-9_-]{1,40}")
# ISO 8601 with an offset; Java sends up to 9 decimals of a second.
_DATETIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?(Z|z|[+-][0-9]{2}:[0-9]{2})"
)


class Unreadable(ValueError):
    """Why an event cannot be read: fixed words, never a value from it."""


@dataclass(frozen=True)
class DomainEvent:
    """The parts of one domain event that casewatch reads, each validated."""

    event_type: str
    occurred_at: datetime  # UTC
    identifiers: Mapping[str, str]  # "CRN" | "NOMS" | "PNC" -> value
    info: Mapping[str, str] = field(default_factory=dict)  # additionalInformation: code-like values
    # additionalInformation keys whose value is not code-like (free text, objects, hostile
    # characters): a mapping that needs one of them cannot read the event.
    unreadable_info: frozenset[str] = frozenset()

    def code(self, key: str) -> str | None:
        """additionalInformation[key] when it is code-like; raises Unreadable when it is there
        but is not; None when it is absent or empty."""
        if key in self.unreadable_info:
            raise Unreadable(f"additionalInformation.{key} is not a code")
        return self.info.get(key) or None


@dataclass(frozen=True)
class Item:
    """One domain event as it arrived: what a redelivery is recognised by, what is kept if it
    cannot be read, and either the event or why it cannot be read."""

    external_id: str  # "sns-<MessageId>", else "sha256-<hex>" of what identifies the event (_identity)
    content: bytes  # the item as received (the whole body for a single event)
    event_type: str | None  # the type, when it could be read (still the sender's word)
    event: DomainEvent | None = None
    problem: str | None = None  # why it cannot be read: fixed words, no value from the body

    @property
    def readable(self) -> bool:
        return self.event is not None


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def digest(data: bytes) -> str:
    return "sha256-" + hashlib.sha256(data).hexdigest()


def read_body(body: bytes, *, max_batch: int) -> list[Item]:
    """The items of a request body: one event (an object) or a batch (an array of at most
    `max_batch`). A body that is not JSON, or a batch too large, is one unreadable item."""
    try:
        value = loads_strict(body)
    except InvalidJSON:
        return [Item(digest(body), body, None, problem="the body is not valid JSON")]
    if isinstance(value, list):
        if not value or len(value) > max_batch:
            return [Item(digest(body), body, None, problem=f"a batch must hold 1 to {max_batch} events")]
        return [_read_item(entry, None) for entry in value]
    return [_read_item(value, body)]


def _read_item(value: Any, raw: bytes | None) -> Item:
    try:
        content = raw if raw is not None else _canonical(value)
    except (RecursionError, ValueError):
        content = b"(an item nested too deeply to store)"
    if isinstance(value, dict) and value.get("Type") == "Notification" and "Message" in value:
        return _read_notification(value, content)
    return _read_event(value, content, message_id=None, type_hint=None)


def _read_notification(value: dict[str, Any], content: bytes) -> Item:
    message_id = value.get("MessageId")
    if not (isinstance(message_id, str) and _MESSAGE_ID.fullmatch(message_id)):
        message_id = None
    hint = _attribute_type(value.get("MessageAttributes"))
    message = value.get("Message")
    if not isinstance(message, str):
        external = f"sns-{message_id}" if message_id else digest(content)
        return Item(external, content, hint, problem="the notification's Message is not a string")
    try:
        inner = loads_strict(message.encode("utf-8"))
    except (InvalidJSON, UnicodeEncodeError):
        external = f"sns-{message_id}" if message_id else digest(content)
        return Item(external, content, hint, problem="the notification's Message is not valid JSON")
    return _read_event(inner, content, message_id=message_id, type_hint=hint)


def _attribute_type(attributes: Any) -> str | None:
    """MessageAttributes.eventType.Value, the type SNS subscription filters match on."""
    if not isinstance(attributes, dict):
        return None
    entry = attributes.get("eventType")
    value = entry.get("Value") if isinstance(entry, dict) else None
    return value if isinstance(value, str) and _EVENT_TYPE.fullmatch(value) else None


def _identity(value: Any) -> Any:
    """What identifies a bare domain event, for its hash: its type, time, person and
    additionalInformation. Not the free text (description, detailUrl, version): a re-publication
    that rewords the description is the same event, not a second recall."""
    if not isinstance(value, dict):
        return value
    reference = value.get("personReference")
    person = reference.get("identifiers") if isinstance(reference, dict) else reference
    return {
        "eventType": value.get("eventType"),
        "occurredAt": value.get("occurredAt"),
        "personReference.identifiers": person,
        "additionalInformation": value.get("additionalInformation"),
    }


def _read_event(value: Any, content: bytes, *, message_id: str | None, type_hint: str | None) -> Item:
    try:
        external = f"sns-{message_id}" if message_id else digest(_canonical(_identity(value)))
    except (RecursionError, ValueError):
        external = digest(content)
    if not isinstance(value, dict):
        return Item(external, content, type_hint, problem="a domain event must be a JSON object")
    event_type = value.get("eventType")
    if not (isinstance(event_type, str) and _EVENT_TYPE.fullmatch(event_type)):
        return Item(external, content, type_hint, problem="eventType is missing or not an event type")
    try:
        event = DomainEvent(
            event_type=event_type,
            occurred_at=parse_datetime(value.get("occurredAt")),
            identifiers=_identifiers(value.get("personReference")),
            **_info(value.get("additionalInformation")),
        )
    except Unreadable as exc:
        return Item(external, content, event_type, problem=str(exc))
    return Item(external, content, event_type, event=event)


def parse_datetime(value: Any) -> datetime:
    """occurredAt as a UTC datetime: ISO 8601 with an offset (Z or +hh:mm), at most 9 decimals
    (kept to the microsecond), years 1900 to 9000."""
    if not isinstance(value, str):
        raise Unreadable("occurredAt is missing or not a string")
    match = _DATETIME.fullmatch(value)
    if match is None:
        raise Unreadable("occurredAt is not an ISO 8601 date-time with an offset")
    seconds, fraction, zone = match.groups()
    text = seconds + (f".{(fraction or '')[:6].ljust(6, '0')}") + ("+00:00" if zone in "Zz" else zone)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise Unreadable("occurredAt is not a real date and time") from None
    if not 1900 <= parsed.year <= 9000:
        raise Unreadable("occurredAt is outside the years 1900 to 9000")
    return parsed.astimezone(UTC)


def _identifiers(reference: Any) -> dict[str, str]:
    """The CRN, NOMS and PNC identifiers of personReference; other types are passed over. A
    known type with a value of the wrong shape, or the same type twice with different values,
    makes the event unreadable (a person should look, not a guess)."""
    if reference is None:
        return {}
    if not isinstance(reference, dict):
        raise Unreadable("personReference is not an object")
    entries = reference.get("identifiers", [])
    if not isinstance(entries, list) or len(entries) > MAX_IDENTIFIERS:
        raise Unreadable(f"personReference.identifiers is not a list of at most {MAX_IDENTIFIERS}")
    found: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise Unreadable("an identifier is not an object")
        kind, value = entry.get("type"), entry.get("value")
        if not isinstance(kind, str) or kind not in IDENTIFIER_PATTERNS:
            continue
        if not isinstance(value, str) or not IDENTIFIER_PATTERNS[kind].fullmatch(value):
            raise Unreadable(f"a {kind} identifier is not in the {kind} format")
        if found.setdefault(kind, value) != value:
            raise Unreadable(f"two different {kind} identifiers")
    return found


def _info(value: Any) -> dict[str, Any]:
    """additionalInformation's code-like values (strings, whole numbers, empty or null) by key,
    and the keys of the other values (free text, nested objects, hostile characters): which of
    them matter is the mapping's business (DomainEvent.code)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Unreadable("additionalInformation is not an object")
    found: dict[str, str] = {}
    other: set[str] = set()
    for key, item in value.items():
        if type(item) is int and abs(item) < 10**20:
            found[key] = str(item)
        elif item is None or item == "":
            found[key] = ""
        elif isinstance(item, str) and _INFO_VALUE.fullmatch(item):
            found[key] = item
        else:
            other.add(key)
    return {"info": found, "unreadable_info": frozenset(other)}
