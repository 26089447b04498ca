"""Property (issue 12): a hostile string in any string field of any event is refused with a 400
naming that field, or stored and rendered safely; never a 5xx, never a stuck delivery.

For every event type, hypothesis picks one to three of its string fields (the envelope's and the
data's, markers and aliases too, walked from the models by tests.test_validation_boundary, so a
new field is covered as soon as it exists) and puts a hostile string in each: controls, format
and separator characters, odd spaces, Slack mrkdwn and pings, email header and HTML tricks, mixed
scripts and look-alikes, values at, one over and far over the field's maximum length, spliced
into the field's valid value or standing alone; a list holding one gets 1, 3 or 100 entries.
The event goes through the real aiohttp app, signed, after a plain nominal.upsert for its own
ViSOR reference, so that every alert-raising type opens alerts (asserted). Then:

- 400: every error names a field that carried a hostile value, and no message quotes it;
- 202: every row stored about the nominal holds a whole ViSOR reference and only characters its
  kind of field allows; the time-based scan, the team's digest and the real delivery worker run
  against the Slack Web API stand-in and an aiosmtpd sink, the control room acknowledges an
  alert (`/ack`, so the team message is updated, a thread reply and email replies go out) and the
  worker runs again: every delivery ends `sent` (the stand-ins take everything: nothing may be
  pending, retrying, or dead for a message that could not be built). Every Slack message
  (channel post, update, thread reply, DM, digest) and the answers to `/flags` for the nominal
  (also by a hostile surname, alias or PNC id) and `/tasks` (signed Slack requests, real Bolt
  dispatch) carry no ping, link or mention casewatch did not write itself from the directory, no
  active formatting from the data, no hidden character and no line a value opened; every email
  has only casewatch's own one-line headers and recipients, and its HTML only casewatch's own
  tags.

Every field also has explicit examples (accepted hostile text at the longest, and a full list of
it; a name that grows when folded; refused text; a final line break, as in the issue; free text
with forged lines), so coverage does not rest on what hypothesis happens to draw, and the run
checks that every type was both accepted and refused and every alert-raising type reached Slack
and email. One service per database serves every example; each example has its own ViSOR
reference, event ids and action id.

All data is fictional.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from casewatch.api import spec
from casewatch.digest.send import send_digests
from casewatch.directory import sync_directory
from casewatch.model.events import EVENT_TYPES, MAX_LIST, VISOR_REF_PATTERN, schema_name
from casewatch.model.text_rules import TextKind, text_problem
from casewatch.safe_text import mrkdwn, printable
from casewatch.store.models import Alert, Base, Delivery
from casewatch.triggers.scan import run_scan
from casewatch.wiring import Service
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.support import OFFICERS, T0, envelope, service_client, signed_post
from tests.test_bot import BOT_TOKEN, CONTROL_ROOM, CR, SGT, bot_settings, command_body, post_signed
from tests.test_delivery_support import make_worker
from tests.test_render_hostile import check_limits, slack_texts
from tests.test_validation_boundary import ENVELOPE_TYPE, base_envelope, walked_fields

EVENTS = "/api/v1/events"
CONTROL_CHANNEL = "C0CONTROL"

# --- the fields, from the models ------------------------------------------------------------------

_WALKED = walked_fields()
_ENVELOPE_FIELDS = [(f, k) for t, f, k in _WALKED if t == ENVELOPE_TYPE and not f.startswith("data.")]
FIELDS: dict[str, list[tuple[str, str]]] = {
    event: _ENVELOPE_FIELDS + [(f, k) for t, f, k in _WALKED if t == event and f.startswith("data.")]
    for event in EVENT_TYPES
}
_COMPONENTS = spec.generated_components()
_UNBOUNDED = 40  # enums, dates: no maxLength, and nothing hostile fits them anyway


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    for option in schema.get("anyOf", []):
        if option.get("type") != "null":
            return _resolve(option)
    target = schema.get("$ref", "").rsplit("/", 1)[-1]
    return _COMPONENTS[target] if target else schema


def max_length(event_type: str, path: str) -> int:
    """The field's maxLength in the generated schema (32 for a ViSOR reference)."""
    head, *rest = path.split(".")
    component = "Envelope" if head != "data" else schema_name(EVENT_TYPES[event_type])
    schema = _COMPONENTS[component]
    for part in [head] if head != "data" else rest:
        schema = _resolve(schema["items"] if part.isdigit() else schema["properties"][part])
    if schema is _COMPONENTS["VisorRef"]:
        return 32
    return int(schema.get("maxLength", _UNBOUNDED))


def max_items(event_type: str, paths: list[str]) -> int:
    """The most entries every list holding one of `paths` takes (its maxItems: 100 for markers
    and aliases, 50 for licence conditions and prohibitions, 20 for exclusion zones)."""
    most = MAX_LIST
    for path in paths:
        within = list_of(path)
        if within is None:
            continue
        schema = _COMPONENTS[schema_name(EVENT_TYPES[event_type])]
        for part in within.split(".")[1:]:
            schema = _resolve(schema["items"] if part.isdigit() else schema["properties"][part])
        most = min(most, int(schema.get("maxItems", MAX_LIST)))
    return most


# --- hostile strings -------------------------------------------------------------------------------

FORMAT_CHARACTERS = [
    "\u202e", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\u200b", "\u200c", "\u200d",
    "\u200e", "\u200f", "\u2060", "\ufeff", "\u00ad", "\u061c", "\u3164", "\ufe0f", "\U000e0041",
]
SLACK_TRICKS = [
    "<!channel>", "<!here>", "<!everyone>", "<@U123>", "<@U0PC1234>", "<#C1>", "<#C0NORTH|north>",
    "<https://evil.example|click>", "<http://evil.example>", "<mailto:x@evil.example|PC Example>",
    "<!subteam^S1|team>", "<!date^1392734382^{date}|x>", "*b*", "_i_", "~s~", "`c`", "```pre```",
    "> quote", "&amp;", "&lt;!channel&gt;", "@here", "@channel", "@everyone",
]
HEADER_BREAKS = ["\r\nBcc: x@evil.example", "\nTo: x@evil.example", "\r\n\r\nforged body"]
MAIL_TRICKS = [
    "x@evil.example", "Bcc: x@evil.example",
    "=?utf-8?b?PCFjaGFubmVsPg==?=", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
    '"><b>x</b>', "</td></tr></table>", "<!-- c -->",
]
SCRIPTS = [
    "\u0422\u0435st\u0440\u0435rs\u043en",  # Cyrillic look-alikes in a Latin name
    "\u0410l\u0435\u0445", "\u0645\u062d\u0645\u062f", "\u05e9\u05dc\u05d5\u05dd", "\u6d4b\u8bd5",
    "\u30c6\u30b9\u30c8", "\U0001f600", "\U0001f1ec\U0001f1e7", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "e\u0301", "\u0130\u0131", "\u00df", "\ufb01", "\u03a9", "\u0663\u0664", "\u00b2",
    "\ufdfa", "\u2474", "\u3392",  # one character each, many once folded (NFKD): keys must still fit
]
SPACES = ["\u00a0", "\u2003", "\u3000", "\u202f", "\u2009", "\u1680", " ", "\t", "  "]

# What no field may hold (identifiers and names refuse all of it; free text keeps "\n", "\t").
INVISIBLE = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x1F),
    st.sampled_from(["\x7f", "\x85", "\x9b", "\x80", "\u2028", "\u2029"]),
    st.sampled_from(FORMAT_CHARACTERS),
    st.characters(categories=["Cf"]),
    st.sampled_from(SPACES),
    st.sampled_from(HEADER_BREAKS),
)
# What a field may well hold, and must then be shown, never obeyed.
VISIBLE = st.one_of(
    st.sampled_from(SLACK_TRICKS),
    st.sampled_from(MAIL_TRICKS),
    st.sampled_from(SCRIPTS),
    st.text(st.characters(codec="utf-8", categories=["L", "M", "N", "P", "S"]), min_size=1, max_size=6),
)


def fill(seed: str, pieces: list[str], length: int) -> str:
    """`seed` then the pieces over and over, cut to exactly `length` characters."""
    filler = "".join(pieces) or "x"
    text = seed + filler * (length // len(filler) + 1)
    return text[:length]


@st.composite
def hostile_value(draw: st.DrawFn, valid: str, limit: int) -> str:
    # Mostly visible pieces, so that most examples are accepted and go all the way to Slack,
    # email and /flags; some with invisible ones spliced in, which must be refused.
    piece = draw(st.sampled_from([VISIBLE, VISIBLE, st.one_of(VISIBLE, INVISIBLE)]))
    pieces = draw(st.lists(piece, min_size=1, max_size=4))
    how = draw(st.sampled_from(["splice", "append", "alone", "at_max", "splice", "over_max", "very_long"]))
    if how == "splice":
        text = valid
        for piece in pieces:
            at = draw(st.integers(min_value=0, max_value=len(text)))
            text = text[:at] + piece + text[at:]
        return text
    if how == "append":
        return valid + "".join(pieces)
    if how == "alone":
        return "".join(pieces)
    length = {"at_max": limit, "over_max": limit + 1, "very_long": limit * 10 + 1000}[how]
    return fill(valid + " ", pieces, length)


@dataclass(frozen=True)
class Case:
    """An event type and the hostile value of each field it changes (dotted paths as in 400s)."""

    event_type: str
    values: tuple[tuple[str, str], ...]
    copies: int = 1  # how many entries a list (markers, aliases) holding a changed value gets


TEXT_KINDS = ("identifier", "name", "text")
# Patterned and enumerated fields refuse anything hostile (their explicit examples show it), so
# most examples change only text fields and can go all the way to Slack, email and /flags.
TEXT_FIELDS = {t: [f for f, k in fields if k in TEXT_KINDS] for t, fields in FIELDS.items()}


@st.composite
def cases(draw: st.DrawFn) -> Case:
    event_type = draw(st.sampled_from(list(EVENT_TYPES)))
    every = [f for f, _ in FIELDS[event_type]]
    choice = draw(st.sampled_from([TEXT_FIELDS[event_type], TEXT_FIELDS[event_type], every]))
    paths = draw(st.lists(st.sampled_from(choice), min_size=1, max_size=3, unique=True))
    full = max_items(event_type, paths)
    copies = draw(st.sampled_from([1, 1, 3, full])) if any(list_of(p) for p in paths) else 1
    base = placeholder_event(event_type)
    values = []
    for path in paths:
        node, key = locate(base, path)
        values.append((path, draw(hostile_value(str(node[key]), max_length(event_type, path)))))
    return Case(event_type, tuple(values), copies)


# Explicit examples for every field: accepted hostile text in identifier, name and text fields
# (at the field's longest, and a whole list of them); a name that grows when folded; a refused
# value; the value with a final line break (issue 12: "VS-D000011\n" passed "$"); free text with
# lines that try to pass for casewatch's own.
ACCEPTED_TEXT = (
    " <!channel> <@U123> <#C1> <https://evil.example|click> *b* _i_ ~s~ `c` > q &amp; @here "
    "\u0422\u0435st \u6d4b\u8bd5 \U0001f600 \"><img src=x onerror=alert(1)> =?utf-8?b?PCE+?="
)
EXPANDING = "\ufdfa\u2474\u3392\ufb01\u00df"  # 1 character, up to 18 once folded (NFKD, casefold)
REFUSED_TEXT = "\u202e\r\nBcc: x@evil.example"
FORGED_LINES = "\n> forged quote\nTo: x@evil.example\n\t*forged* line <!here>"  # free text keeps "\n"


def explicit_cases() -> Iterator[Case]:
    for event_type, fields in FIELDS.items():
        for path, kind in fields:
            valid = str(locate_value(placeholder_event(event_type), path))
            longest = fill(valid, [ACCEPTED_TEXT], max_length(event_type, path)).rstrip()
            if kind in TEXT_KINDS:
                yield Case(event_type, ((path, longest),))
            if kind == "name":  # names are folded into search keys: the longest folded name
                yield Case(event_type, ((path, fill("", [EXPANDING], max_length(event_type, path))),))
            yield Case(event_type, ((path, valid[:2] + REFUSED_TEXT + valid[2:]),))
            yield Case(event_type, ((path, valid + "\n"),))
            if kind == "text":
                yield Case(event_type, ((path, valid + FORGED_LINES),))
            if list_of(path) and kind in TEXT_KINDS:  # a full list of values at their longest
                yield Case(event_type, ((path, longest),), max_items(event_type, [path]))


# --- the events of one example ---------------------------------------------------------------------

ALERTING = {"nominal.upsert", "travel.border_alert", "recall.issued", "mappa.level_changed", "action.upsert"}
# A change of these makes the event about something else (another nominal), so it need not alert.
IDENTITY_FIELDS = {"visor_ref"}
_refs = itertools.count(1)


def base_event(event_type: str, visor_ref: str, action_id: str) -> dict[str, Any]:
    """A valid event of `event_type` for `visor_ref` that opens alerts when its type can."""
    raw = base_envelope(event_type)
    raw["visor_ref"] = visor_ref
    data = raw["data"]
    if event_type == "nominal.upsert":
        data["mappa_level"] = 2  # the base nominal is at level 1: a level change
    elif event_type == "action.upsert":
        data.update(action_id=action_id, due_on="2026-11-10")  # overdue on the scan
    elif event_type == "travel.notified":
        data.update(departure_on="2026-11-23", return_on="2026-11-30")  # late notice
    return raw


def list_of(path: str) -> str | None:
    """The list a walked field is the first entry of, or is in: data.markers.0.code -> data.markers."""
    found = re.fullmatch(r"(.+?)\.0(?:\..+)?", path)
    return found.group(1) if found else None


def locate(raw: dict[str, Any], path: str) -> tuple[Any, str | int]:
    node: Any = raw
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parts[:-1]:
        node = node[part]
    return node, parts[-1]


def locate_value(raw: dict[str, Any], path: str) -> Any:
    node, key = locate(raw, path)
    return node[key]


# Values are drawn around placeholders of the same length as the example's own ViSOR reference,
# action id and event id, which replace them: every example is about a nominal of its own, and a
# value drawn at, or one past, a field's maximum length keeps that length.
PLACEHOLDERS = ("VS-H######", "ACT-H######", "EVT-H######")


def placeholder_event(event_type: str) -> dict[str, Any]:
    raw = base_event(event_type, PLACEHOLDERS[0], PLACEHOLDERS[1])
    raw["id"] = PLACEHOLDERS[2]
    return raw


def the_events(case: Case, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plain nominal and the hostile event of example `n` (unique refs, ids, action id)."""
    own = (f"VS-H{n:06d}", f"ACT-H{n:06d}", f"EVT-H{n:06d}")
    nominal = envelope(
        "nominal.upsert", copy.deepcopy(base_envelope("nominal.upsert")["data"]),
        visor_ref=own[0], occurred_at=T0 - timedelta(days=1),
    )
    hostile = placeholder_event(case.event_type)
    for path, value in case.values:
        node, key = locate(hostile, path)
        node[key] = value
    for path, _ in case.values:
        if (within := list_of(path)) is not None:  # as many entries as the case says, all alike
            items = locate_value(hostile, within)
            items[:] = [copy.deepcopy(items[0]) for _ in range(case.copies)]
    return nominal, _replace_placeholders(hostile, own)


def _replace_placeholders(node: Any, own: tuple[str, ...]) -> Any:
    if isinstance(node, str):
        for placeholder, value in zip(PLACEHOLDERS, own, strict=True):
            node = node.replace(placeholder, value)
        return node
    if isinstance(node, dict):
        return {k: _replace_placeholders(v, own) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_placeholders(v, own) for v in node]
    return node


# --- what is safe ------------------------------------------------------------------------------------

OWN_MENTIONS = {f"<@{o['slack_user_id']}>" for o in [*OFFICERS, CONTROL_ROOM] if o.get("slack_user_id")}
OWN_MAILTO = re.compile(r"<mailto:[a-z0-9.]+@force\.example\|[^<>]*>")
PING = re.compile(r"(?<![\w])@(here|channel|everyone)\b")
ACTIVE_MARKS = ("*b*", "_i_", "~s~", "`c`", "```pre```")
ENTITY = re.compile(r"&(?!amp;|lt;|gt;)")


def hidden(ch: str, *, lines: bool) -> bool:
    """A character no reader should get: controls (but "\\n" where lines are allowed), format
    characters, separators, surrogates, private use, spaces other than U+0020 and U+00A0."""
    if ch == "\n" and lines:
        return False
    category = unicodedata.category(ch)
    return category in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co") or (category == "Zs" and ch not in " \u00a0")


def _strip_own(text: str) -> str:
    text = OWN_MAILTO.sub("", text)
    for mention in OWN_MENTIONS:
        text = text.replace(mention, "")
    return text


def assert_mrkdwn_safe(text: str) -> None:
    bare = _strip_own(text)
    assert "<" not in bare and ">" not in bare, bare[:400]
    assert not PING.search(bare), bare[:400]
    assert not ENTITY.search(bare), bare[:400]
    for mark in ACTIVE_MARKS:
        for found in re.finditer(re.escape(mark), bare):
            before = bare[found.start() - 1] if found.start() else " "
            after = bare[found.end()] if found.end() < len(bare) else " "
            assert before.isalnum() and after.isalnum(), bare[max(0, found.start() - 40) : found.end() + 40]
    bad = [f"U+{ord(ch):04X}" for ch in bare if hidden(ch, lines=True)]
    assert not bad, bad


def strings_of(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings_of(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_of(item)


def assert_slack_safe(message: dict[str, Any]) -> None:
    """Text, blocks and fallback of a Slack message (or a /flags answer)."""
    check_limits(message)
    for text in slack_texts(message, "mrkdwn"):
        assert_mrkdwn_safe(text)
    for plain in slack_texts(message, "plain_text"):
        assert not any(hidden(ch, lines=False) for ch in plain), repr(plain[:200])
        assert "<!" not in plain and "<http" not in plain and "<@" not in plain and "<#" not in plain
    for text in strings_of({k: v for k, v in message.items() if k in ("text", "blocks", "attachments")}):
        assert not any(hidden(ch, lines=True) for ch in text)
    assert message.get("link_names") in (None, False, "false", "0", 0)


MAIL_HEADERS = {
    "from", "to", "subject", "date", "message-id", "in-reply-to", "references", "x-casewatch-alert",
    "mime-version", "content-type", "content-transfer-encoding",
}
# The tags and attributes casewatch's own alert and digest emails are made of.
SAFE_TAGS = {"html", "body", "h1", "h2", "p", "table", "tr", "th", "td", "strong", "code",
             "small", "ul", "li"}
SAFE_ATTRIBUTES = {("th", "align")}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.other: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_comment(self, data: str) -> None:
        self.other.append("comment")

    def handle_decl(self, decl: str) -> None:
        self.other.append("declaration")

    def handle_pi(self, data: str) -> None:
        self.other.append("processing instruction")

    def unknown_decl(self, data: str) -> None:
        self.other.append("decl")


def assert_mail_safe(mail: EmailMessage, recipients: list[str], addresses: set[str]) -> None:
    assert set(recipients) <= addresses, recipients
    assert {k.lower() for k in mail.keys()} <= MAIL_HEADERS, mail.keys()
    assert len(mail.get_all("To", [])) == 1
    for name, value in mail.items():
        assert not any(hidden(ch, lines=False) for ch in str(value)), (name, repr(str(value)[:200]))
    assert str(mail["To"]) in addresses
    assert not mail.defects
    plain, html_part = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None and html_part is not None
    text = plain.get_content().replace("\r\n", "\n")
    assert not any(hidden(ch, lines=True) for ch in text), repr(text[:300])
    parser = _Tags()
    parser.feed(html_part.get_content())
    parser.close()
    assert not parser.other
    for tag, attrs in parser.tags:
        assert tag in SAFE_TAGS, tag
        assert all((tag, name) in SAFE_ATTRIBUTES for name, _ in attrs), (tag, attrs)


# --- the service, the stand-ins and one example ---------------------------------------------------


# Every alert reaches every renderer: the team channel, the SPOC inbox, the owner by DM and by
# email; the team channel and inbox see the name and markers. (The control room's channel is
# one more channel message, rendered the same way: left out for time.)
ALERT_KINDS = (
    "travel.unnotified", "travel.record_fta", "travel.confirmed", "travel.unmatched_nominal",
    "travel.late_notice", "notification.due_soon", "notification.missed", "action.due_soon",
    "action.overdue", "mappa.level_changed", "mappa.visor_update_due",
    "mappa.decrease_without_rationale", "recall.issued", "default",
)
ROUTING: dict[str, Any] = {
    "control_room_channel": CONTROL_CHANNEL,
    "owner_via": "both",
    "personal_data_targets": ["C0NORTH", "north.spoc@force.example"],
    "routes": {kind: ["team_channel", "spoc", "owner"] for kind in ALERT_KINDS},
}


@dataclass
class Rig:
    service: Service
    client: Any
    slack: SlackStandIn
    sink: MailSink
    addresses: set[str]
    seen: dict[str, set[str]] = field(default_factory=dict)  # what the examples reached, by type
    failed: bool = False

    def note(self, event_type: str, what: str) -> None:
        self.seen.setdefault(event_type, set()).add(what)


@asynccontextmanager
async def rig(db_url: str) -> AsyncIterator[Rig]:
    async with SlackStandIn(token=BOT_TOKEN) as slack:
        sink = MailSink().start()
        try:
            overrides: dict[str, Any] = {
                **bot_settings(slack),
                "smtp": {"host": "127.0.0.1", "port": sink.port, "timeout_seconds": 5},
                "routing": ROUTING,
                "delivery": {"send_timeout_seconds": 5},
            }
            async with service_client(db_url, **overrides) as (service, client):
                async with service.sessions.begin() as session:
                    await sync_directory(session, service.settings)
                s = service.settings
                addresses = {str(o.email) for o in s.officers if o.email}
                for team in s.teams:
                    addresses |= {str(team.spoc_email), *(str(a) for a in team.supervisor_emails)}
                yield Rig(service, client, slack, sink, addresses)
        finally:
            sink.stop()


def assert_covered(r: Rig) -> None:
    """After all examples: every type was both refused and accepted, and every alert-raising
    type opened alerts that reached Slack and email (the explicit examples make sure of it)."""
    if r.failed:
        return
    for event_type in EVENT_TYPES:
        assert {"refused", "accepted"} <= r.seen.get(event_type, set()), (event_type, r.seen)
    for event_type in ALERTING:
        assert {"alerted", "slack", "email"} <= r.seen[event_type], (event_type, r.seen)


@pytest.fixture
async def sqlite_rig(sqlite_url: str) -> AsyncIterator[Rig]:
    async with rig(sqlite_url) as r:
        yield r
        assert_covered(r)


@pytest.fixture
async def pg_rig(pg_url: str) -> AsyncIterator[Rig]:
    async with rig(pg_url) as r:
        yield r
        assert_covered(r)


async def count(r: Rig, column: Any, *where: Any) -> int:
    async with r.service.sessions() as session:
        stmt = select(func.count(column)).where(*where)
        return int((await session.execute(stmt)).scalar_one())


async def post(r: Rig, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await signed_post(r.client, EVENTS, [event])
    body = await resp.json()
    assert isinstance(body, dict)
    return resp.status, body


def assert_refusal_names_the_fields(case: Case, body: dict[str, Any]) -> None:
    changed = {path for path, _ in case.values}
    errors = body["errors"]
    assert errors, body
    for error in errors:
        field_at_first = re.sub(r"\.[0-9]+(?=\.|$)", ".0", error["field"])  # markers.7.code: markers.0.code
        assert error["index"] == 0 and field_at_first in changed, (error, changed)
        for _, value in case.values:
            assert len(value) < 3 or value not in error["message"], error


async def deliver(r: Rig) -> None:
    """The real worker until nothing is due (bounded): every delivery has ended `sent` or `dead`,
    none is pending or being retried. And none is dead: the Slack stand-in and the mail sink take
    everything, so a dead letter here is a message that could not be built from accepted data."""
    worker, _ = make_worker(r.service.sessions, r.service.ctx)
    await asyncio.wait_for(worker.run_until_idle(max_rounds=50), timeout=60)
    async with r.service.sessions() as session:
        rows = (await session.execute(select(Delivery.id, Delivery.state, Delivery.last_error))).all()
    stuck = [row for row in rows if row[1] not in ("sent", "dead")]
    assert not stuck, stuck
    dead = [row for row in rows if row[1] == "dead"]
    assert not dead, dead


async def acknowledge_one(r: Rig, ref: str) -> None:
    """The control room acknowledges one alert of the nominal with an outcome: the team's
    message is updated, a thread reply and an email reply go out, all re-rendering its values."""
    async with r.service.sessions() as session:
        stmt = select(Alert.id).where(Alert.visor_ref == ref, Alert.state == "open")
        alert_id = (await session.execute(stmt.order_by(Alert.kind, Alert.id).limit(1))).scalar_one_or_none()
    if alert_id is not None:
        answer = await command(r, "/ack", f"{alert_id} called them <!here> *now* @channel", CR)
        assert_slack_safe(answer)
        assert "acknowledged" in "\n".join(slack_texts(answer)).lower(), answer


async def settle(r: Rig, ref: str) -> None:
    """The time-based scan, the north team's digest, every delivery; one acknowledgement and
    its updates."""
    await run_scan(r.service.sessions, r.service.ctx)
    await send_digests(r.service.sessions, r.service.ctx, team_ids=["north"])
    await deliver(r)
    await acknowledge_one(r, ref)
    await deliver(r)


async def command(r: Rig, name: str, typed: str, user: str) -> dict[str, Any]:
    """A slash command, signed, through Bolt; the ephemeral answer (by response_url if slow)."""
    hook = f"response.{name.strip('/')}"
    before = len(r.slack.calls_to(hook))
    body = command_body(name, typed, user, response_url=r.slack.url + hook)
    # Signed at the service's now: the worker's pacing moves the fixed clock on as it delivers.
    resp = await post_signed(r.client, body, ts=int(r.service.ctx.clock.now().timestamp()))
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    assert answer.get("response_type") == "ephemeral"
    if "Still working" in str(answer.get("text")):  # a slow round: the answer follows by response_url
        calls = await r.slack.wait_for_calls(hook, before + 1, within=10)
        answer = calls[-1].args
    return answer


def forged_line_starts(case: Case) -> list[str]:
    """What would open a line of its own if a line break in a value were kept: the start of
    each piece after a break, as the Slack escaping and as plain text would show it."""
    starts = []
    for _, value in case.values:
        for piece in value.replace("\r", "\n").split("\n")[1:]:
            piece = piece.lstrip(" \t")
            if len(piece) >= 4:
                starts += [mrkdwn(piece)[:10], mrkdwn("x " + piece)[2:12], printable(piece)[:10]]
    return starts


def assert_no_forged_line(text: str, starts: list[str]) -> None:
    for start in starts:
        assert "\n" + start not in text, repr(start)


def assert_shown_safely(message: dict[str, Any], starts: list[str]) -> None:
    assert_slack_safe(message)
    for text in slack_texts(message):
        assert_no_forged_line(text, starts)


def check_slack_calls(r: Rig, case: Case, calls_before: int) -> None:
    """Channel posts, updates, thread replies and DMs of the alerts, and the digest."""
    starts = forged_line_starts(case)
    for call in r.slack.calls[calls_before:]:
        if call.method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            assert_shown_safely(call.args, starts)
            r.note(case.event_type, "slack")


def check_mails(r: Rig, case: Case, mails_before: int) -> None:
    starts = forged_line_starts(case)
    with r.sink._lock:  # noqa: SLF001 (the sink's thread appends while it runs)
        mails = list(zip(r.sink.messages[mails_before:], r.sink.envelopes[mails_before:], strict=True))
    for mail, (_, recipients) in mails:
        assert_mail_safe(mail, recipients, r.addresses)
        plain = mail.get_body(("plain",))
        assert plain is not None
        assert_no_forged_line(plain.get_content().replace("\r\n", "\n"), starts)
        r.note(case.event_type, "email")


async def check_answers(r: Rig, case: Case, ref: str) -> None:
    """/flags for the nominal (and by a hostile surname, alias or PNC id), /tasks for the
    supervisor."""
    starts = forged_line_starts(case)
    answer = await command(r, "/flags", ref, CR)
    assert_shown_safely(answer, starts)
    assert ref in "\n".join(slack_texts(answer)), "/flags did not find the nominal"
    for path, value in case.values:
        if path in ("data.surname", "data.aliases.0", "data.pnc_id") and len(value) <= 200:
            assert_shown_safely(await command(r, "/flags", value, CR), starts)  # the search with hostile text
    assert_shown_safely(await command(r, "/tasks", "", SGT), starts)


FREE_TEXT_COLUMNS = {"summary", "rationale", "details", "data"}  # may keep "\n" and "\t"
# change.detected source, and the free text of nominal.upsert and order.upsert (contract v2).
FREE_TEXT_OF_TABLE = {
    ("change_detections", "source"),
    ("nominals", "home_address"),
    ("nominals", "description"),
    ("nominals", "licence_conditions"),
    ("nominals", "exclusion_zones"),
    ("orders", "prohibitions"),
}


async def assert_stored_safely(r: Rig, ref: str) -> None:
    """Every row about the example's nominal (or a nominal whose reference begins with its
    reference: a phantom "VS-H000001\n") holds a whole ViSOR reference and no character a text
    field refuses; line breaks and tabs only in free text."""
    async with r.service.sessions() as session:
        for table in Base.metadata.sorted_tables:
            if "visor_ref" not in table.c:
                continue
            rows = (await session.execute(select(table).where(table.c.visor_ref.like(f"{ref}%")))).mappings()
            for row in rows:
                assert re.fullmatch(VISOR_REF_PATTERN, row["visor_ref"]), (table.name, row["visor_ref"])
                for column, value in row.items():
                    free = column in FREE_TEXT_COLUMNS or (table.name, column) in FREE_TEXT_OF_TABLE
                    kind = TextKind.TEXT if free else TextKind.NAME
                    for text in strings_of(value):
                        assert text_problem(text, kind) is None, (table.name, column, text[:100])


def assert_alerts_opened(case: Case, body: dict[str, Any], opened: int) -> None:
    """An alert-raising type opened alerts, unless its ViSOR reference was changed (then it is
    about a nominal of its own) or it came back as a duplicate."""
    changed = {path for path, _ in case.values}
    if case.event_type in ALERTING and not changed & IDENTITY_FIELDS and body["accepted"] == 1:
        assert opened > 0, (case.event_type, body)


async def run_example(r: Rig, case: Case) -> None:
    try:
        await _run_example(r, case)
    except BaseException as exc:
        r.failed = True  # the coverage check after the run is moot
        exc.add_note(f"example: {case!r}")  # hypothesis shows explicit examples made in a loop as blank
        raise


async def _run_example(r: Rig, case: Case) -> None:
    nominal, hostile = the_events(case, next(_refs))
    status, body = await post(r, nominal)
    assert status == 202, body
    calls_before, mails_before = len(r.slack.calls), len(r.sink.messages)
    alerts_before = await count(r, Alert.id)

    status, body = await post(r, hostile)
    assert status in (202, 400), (status, body)
    if status == 400:
        assert_refusal_names_the_fields(case, body)
        r.note(case.event_type, "refused")
        return
    r.note(case.event_type, "accepted")

    ref = str(hostile["visor_ref"])
    await settle(r, ref)
    opened = await count(r, Alert.id) - alerts_before
    assert_alerts_opened(case, body, opened)
    if opened:
        r.note(case.event_type, "alerted")
    await assert_stored_safely(r, str(nominal["visor_ref"]))
    check_slack_calls(r, case, calls_before)
    check_mails(r, case, mails_before)
    await check_answers(r, case, ref)


# --- the properties ----------------------------------------------------------------------------------

HOSTILE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    # One service serves every example (function_scoped_fixture); examples are slow and big.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
    ],
)


def with_explicit_examples(test: Callable[..., Any]) -> Callable[..., Any]:
    for case in explicit_cases():
        test = example(case=case)(test)
    return test


@with_explicit_examples
# The explicit examples cover every field (over 300 since issue 15's fields); 40 drawn ones add
# mixtures, and keep the suite within a few minutes (one service serves them all, so each
# example's scan reads every nominal of the ones before it).
@settings(HOSTILE, max_examples=40)
@given(case=cases())
async def test_hostile_strings_in_every_field_sqlite(sqlite_rig: Rig, case: Case) -> None:
    await run_example(sqlite_rig, case)


@pytest.mark.postgres
@with_explicit_examples
@settings(HOSTILE, max_examples=10)
@given(case=cases())
async def test_hostile_strings_in_every_field_postgres(pg_rig: Rig, case: Case) -> None:
    await run_example(pg_rig, case)
