"""Hostile values through every renderer that reaches Slack, a chat log line or an email.

Every string field of the payload and view dataclasses is filled with the same hostile text (the
list of fields comes from the dataclasses themselves, so a field added later is covered without
touching this file), and every message built from them is checked: nothing casewatch did not
write itself can ping, link, format, forge a line or hide characters, and the hostile text is
shown, escaped. Slack messages go through the real notifier to the Slack Web API stand-in
(channel post, update, thread reply, DM), and one hostile event goes the whole way: the real
HTTP ingest, the real worker, the stand-in's recorded request.

All data is fictional.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
import types
import typing
import unicodedata
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import render as bot_render
from casewatch.alerts.lifecycle import AckOutcome, OpenedAlert, resolve
from casewatch.config import Settings
from casewatch.delivery.notifier import Outbound, Sent
from casewatch.digest import render as digest_render
from casewatch.digest.build import Digest
from casewatch.lookup import FlagsView, NotFound, Several, TasksView
from casewatch.lookup.flags import Unreadable
from casewatch.lookup.query import Query
from casewatch.lookup.views import Candidate, OfficerContact
from casewatch.routing.outbox import build_payload
from casewatch.routing.routing import Target
from casewatch.safe_text import header, mrkdwn
from casewatch.store.models import Alert
from integrations.chat_log import ChatLogNotifier
from integrations.mail_sink import MailSink
from integrations.slack_notifier import SlackMessage, SlackNotifier, build
from integrations.smtp_notifier import _POLICY, SmtpNotifier
from tests.slack_standin import SlackStandIn
from tests.support import envelope, nominal_data, service_client, signed_post
from tests.test_delivery_support import TOKEN, make_settings, make_worker

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
ZONE = ZoneInfo("Europe/London")

HOSTILE = (
    "<!channel> <https://evil.example|click here> <@U0EVIL> <#C0EVIL> <!subteam^S0EVIL|team> "
    "@here @channel @everyone *bold* _it_ ~st~ `code` &lt;!here&gt; <script>alert(1)</script> "
    "rtl\u202eevil zw\u200bsp nel\u0085 ls\u2028ps\u2029 tab\tend\r\nforged line\n> forged quote"
)
LONG = "<!channel> *x* @here <https://evil.example|y> " * 300  # about 13,000 characters
VALUES = pytest.mark.parametrize("text", [HOSTILE, LONG], ids=["hostile", "long"])

# The only tokens casewatch writes itself: the directory officer's mention and mail link.
OWN_TOKENS = re.compile(r"<@U0PC1234>|<mailto:pc1234@force\.example\|[^<>]*>")
PING = re.compile(r"(?<![\w])@(here|channel|everyone)\b")
HIDDEN = ("\u202e", "\u200b", "\u0085", "\u2028", "\u2029", "\r", "\t")
ESCAPED = ("&lt;!channel&gt;", "&lt;https://evil.example|")


# --- hostile instances, driven by the dataclasses' own fields ------------------------------------


def hostile(cls: type[Any], text: str, **given: Any) -> Any:
    """An instance of dataclass `cls` whose every string (nested ones too) is `text`."""
    hints = typing.get_type_hints(cls)
    values = {
        f.name: given[f.name] if f.name in given else _value(hints[f.name], text)
        for f in dataclasses.fields(cls)
    }
    return cls(**values)


def _value(tp: Any, text: str) -> Any:  # noqa: PLR0911 - one branch per kind of type
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is str or tp is Any or origin is typing.Literal:
        return text
    if tp is bool:
        return True
    if tp is int:
        return 2
    if tp is float:
        return 42.0
    if tp is datetime:
        return T0 - timedelta(days=3)
    if tp is date:
        return date(2026, 11, 1)
    if tp is timedelta:
        return timedelta(days=2, hours=3)
    if origin in (typing.Union, types.UnionType):
        return _value(next(a for a in args if a is not type(None)), text)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], text) for _ in range(2))
        return tuple(_value(a, text) for a in args)
    if origin is list:
        return [_value(args[0], text) for _ in range(2)]
    if origin is dict:
        return {}
    if dataclasses.is_dataclass(tp):
        return hostile(tp, text)  # type: ignore[arg-type]
    raise TypeError(f"no hostile value for {tp!r}: teach _value this type")


def hostile_alert_row(text: str, **given: Any) -> Alert:
    """An Alert row whose every string column is `text` (the model's columns, not a list)."""
    alert = Alert()
    for column in Alert.__table__.columns:
        python_type = column.type.python_type
        if python_type is str:
            setattr(alert, column.key, text)
        elif python_type is datetime:
            setattr(alert, column.key, T0 - timedelta(hours=5))
        elif python_type is int:
            setattr(alert, column.key, 1)
    for key, value in given.items():
        setattr(alert, key, value)
    return alert


# --- what a person would see, and the checks ------------------------------------------------------


def slack_texts(message: dict[str, Any], kind: str = "mrkdwn") -> Iterator[str]:
    """Every string of a Slack message a person could see that Slack reads as `kind`: "mrkdwn"
    (the message text, mrkdwn text objects) or "plain_text" (headers, buttons)."""
    if kind == "mrkdwn":
        yield str(message.get("text") or "")

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                if node["type"] == kind:
                    yield node["text"]
                return
            for key, value in node.items():
                if key not in ("action_id", "value", "block_id", "type", "style"):
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    yield from walk(message.get("blocks") or [])


def check_limits(message: dict[str, Any]) -> None:
    assert len(str(message.get("text") or "")) <= 40_000
    blocks = message.get("blocks") or []
    assert len(blocks) <= 50
    for block in blocks:
        if block.get("type") == "section":
            if "text" in block:
                assert len(block["text"]["text"]) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
        if block.get("type") == "header":
            assert len(block["text"]["text"]) <= 150
        if block.get("type") == "context":
            assert all(len(e["text"]) <= 3000 for e in block["elements"])


def assert_safe(texts: list[str], *, shown: bool = True) -> None:
    """Nothing in `texts` but casewatch's own tokens can ping, link, format or hide; with
    `shown`, the hostile text appears, escaped."""
    for text in texts:
        bare = OWN_TOKENS.sub("", text)
        assert "<" not in bare and ">" not in bare, bare[:300]
        assert not PING.search(bare), bare[:300]
        for mark in ("*bold*", "_it_", "~st~", "`code`", "*x*"):
            assert mark not in bare
        for ch in HIDDEN:
            assert ch not in bare, f"U+{ord(ch):04X} survived"
        for forged in ("\nforged line", "\n&gt; forged", "\n> forged", "\n＞ forged"):
            assert forged not in bare
    if shown:
        joined = "\n".join(texts)
        assert any(e in joined for e in ESCAPED), joined[:500]


def assert_safe_slack(message: dict[str, Any], *, shown: bool = True) -> None:
    check_limits(message)
    assert_safe(list(slack_texts(message)), shown=shown)
    for plain in slack_texts(message, "plain_text"):  # shown as it is: nothing to hide or break
        assert "\n" not in plain and not any(ch in plain for ch in HIDDEN)


# --- alert payloads: channel message, update, thread reply, DM, chat log, email -----------------

CHANGES = ("opened", "acknowledged", "escalated", "resolved", "reminder", "fallback")


def settings() -> Settings:
    return make_settings()


def alert_payload(text: str, change: str, state: str = "open") -> dict[str, Any]:
    """The payload routing writes for a fully hostile alert, for a receiver that sees the most
    (cleared for personal data, a team inbox), with every extra a change can carry."""
    alert = hostile(OpenedAlert, text, state=state, escalation_chain=[], details={})
    target = Target("spoc:north", "slack", "C0NORTH", personal_data=True, inbox=True)
    personal = {"name": text, "markers": [text, text]}
    payload = build_payload(alert, change, target, settings(), personal)
    payload["escalated_to"] = [text, text]
    payload["fallback"] = {"channel": "slack", "target": text, "error": text}
    return payload


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def test_the_payload_carries_the_hostile_text_in_every_value_the_alert_gives_it() -> None:
    payload = alert_payload(HOSTILE, "acknowledged")
    computed = {"due", "opened"}  # derived from the alert's instants, not copied
    copied = [
        key for key, value in {**payload, **payload["more"]}.items()
        if isinstance(value, str) and key not in computed and key not in ("change", "state")
    ]
    assert {"alert_id", "kind", "severity", "visor_ref", "summary", "owner", "acknowledged_by"} <= set(copied)
    merged = {**payload, **payload["more"]}
    assert all(merged[k] == HOSTILE for k in copied), [k for k in copied if merged[k] != HOSTILE]


@VALUES
@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("state", ["open", "acknowledged", "resolved"])
def test_alert_messages_show_every_hostile_value_escaped(text: str, change: str, state: str) -> None:
    built = build(alert_payload(text, change, state))
    assert_safe_slack({"text": built.text, "blocks": built.blocks})
    assert built.reply is not None
    assert_safe([built.reply])
    assert "\n" not in built.text and "\n" not in built.reply


@VALUES
async def test_slack_notifier_posts_updates_replies_and_dms_escaped(text: str) -> None:
    async with SlackStandIn(token=TOKEN) as slack:
        notifier = SlackNotifier(token=TOKEN, api_url=slack.url)
        try:
            opened = _outbound(1, alert_payload(text, "opened"), "C0NORTH")
            posted = await notifier.send(opened)
            assert isinstance(posted, Sent)
            update = _outbound(2, alert_payload(text, "acknowledged", "acknowledged"), "C0NORTH",
                               thread_ref=posted.external_ref)
            assert isinstance(await notifier.send(update), Sent)
            dm = _outbound(3, alert_payload(text, "opened"), "U0PC1234")
            assert isinstance(await notifier.send(dm), Sent)
        finally:
            await notifier.close()
        posts = slack.calls_to("chat.postMessage")
        updates = slack.calls_to("chat.update")
        assert len(posts) == 3 and len(updates) == 1  # channel post, thread reply, DM
        assert [p.args["channel"] for p in posts] == ["C0NORTH", "C0NORTH", "D0PC1234"]
        assert posts[1].args["thread_ts"]
        for call in [*posts, *updates]:
            assert call.args.get("link_names") in (False, "false", "0", 0)
            assert_safe_slack(call.args)


def _outbound(n: int, payload: dict[str, Any], target: str, thread_ref: str | None = None) -> Outbound:
    return Outbound(
        delivery_id=n, alert_id=str(payload.get("alert_id", ""))[:16], change=str(payload.get("change")),
        target=target, payload=payload, content_hash="0" * 64, thread_ref=thread_ref,
    )


@VALUES
async def test_chat_log_writes_one_escaped_line_per_message(text: str, tmp_path: Path) -> None:
    log = tmp_path / "chat.log"
    notifier = ChatLogNotifier(log)
    first = await notifier.send(_outbound(1, alert_payload(text, "opened"), "C0NORTH"))
    assert isinstance(first, Sent)
    await notifier.send(_outbound(2, alert_payload(text, "resolved", "resolved"), "C0NORTH",
                                  thread_ref=first.external_ref))
    await notifier.send(_outbound(3, _digest_payload(text), "C0NORTH"))
    lines = log.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 4  # one line a message, nothing forged
    assert_safe(lines[:3])


@VALUES
@pytest.mark.parametrize("change", CHANGES)
def test_alert_email_headers_stay_one_line_and_the_html_is_escaped(text: str, change: str) -> None:
    s = settings()
    notifier = SmtpNotifier(s.smtp, frozenset({"north.spoc@force.example"}))
    payload = alert_payload(text, change)
    mail = notifier.build(_outbound(1, payload, "north.spoc@force.example"))
    parsed = _reparse(mail)
    assert sorted(k.lower() for k in parsed.keys()) == sorted(
        ["from", "to", "subject", "date", "message-id", "x-casewatch-alert", "mime-version", "content-type"]
    )
    subject = str(parsed["Subject"])
    assert subject.startswith("[casewatch] ") and len(subject) <= 250
    assert not any(ch in subject for ch in ("\n", "\r", *HIDDEN))
    plain = parsed.get_body(("plain",))
    html_part = parsed.get_body(("html",))
    assert plain is not None and html_part is not None
    body = plain.get_content().replace("\r\n", "\n")
    assert "\nforged line" not in body and "\n> forged" not in body
    assert not any(ch in body for ch in HIDDEN)
    html = html_part.get_content()
    assert "<script" not in html and "<!channel>" not in html and "<https://evil" not in html
    assert "&lt;script&gt;" in html or "&lt;!channel&gt;" in html


def _reparse(mail: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(mail.as_bytes(policy=_POLICY), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# --- the bot's ephemeral answers -------------------------------------------------------------------


@VALUES
def test_flags_answer_escapes_every_field(text: str) -> None:
    view = hostile(FlagsView, text)
    assert_safe_slack(bot_render.flags_message(view, ZONE))
    manager = OfficerContact("PC1234", text, "pc1234@force.example", "U0PC1234", text)
    with_manager = dataclasses.replace(view, offender_manager=manager)
    message = bot_render.flags_message(with_manager, ZONE)
    assert_safe_slack(message)
    joined = "\n".join(slack_texts(message))
    assert "<@U0PC1234>" in joined and "<mailto:pc1234@force.example|" in joined  # our own links


@VALUES
def test_flags_list_not_found_and_unreadable_answers_escape_the_query(text: str) -> None:
    query = hostile(Query, text)
    several = Several(query, tuple(hostile(Candidate, text) for _ in range(3)), total=30)
    assert_safe_slack(bot_render.candidates_message(several))
    assert_safe_slack(bot_render.not_found_message(NotFound(query)))
    unreadable = Unreadable(text)
    assert_safe_slack(bot_render.text_message(bot_render.esc(unreadable.message)))


@VALUES
@pytest.mark.parametrize("scope", ["own", "team"])
def test_tasks_answer_escapes_every_field(text: str, scope: str) -> None:
    view = hostile(TasksView, text, scope=scope)
    message = bot_render.tasks_message(view, ZONE)
    assert_safe_slack(message)


@VALUES
@pytest.mark.parametrize("status", ["acknowledged", "already_acknowledged", "resolved", "unknown"])
def test_ack_answers_escape_every_field(text: str, status: str) -> None:
    state = {"resolved": "resolved"}.get(status, "acknowledged")
    alert = hostile_alert_row(text, state=state)
    outcome = hostile(AckOutcome, text, status=status, alert=None if status == "unknown" else alert)
    message = bot_render.ack_message(outcome, text[:40], "PC1234", text, ZONE)
    assert_safe_slack(message)


# --- the digest -------------------------------------------------------------------------------------


def _digest(text: str) -> Digest:
    digest: Digest = hostile(Digest, text, timezone="Europe/London")
    return digest


def _digest_payload(text: str) -> dict[str, Any]:
    d = _digest(text)
    return {"subject": digest_render.subject(d), "text": digest_render.channel_text(d),
            "blocks": digest_render.channel_blocks(d)}


@VALUES
def test_digest_channel_message_escapes_every_field(text: str) -> None:
    built: SlackMessage = build(_digest_payload(text))
    assert_safe_slack({"text": built.text, "blocks": built.blocks})
    assert built.reply is None


@VALUES
def test_digest_email_escapes_every_field(text: str) -> None:
    d = _digest(text)
    s = settings()
    payload = {"subject": digest_render.subject(d), "text": digest_render.email_text(d),
               "html": digest_render.email_html(d)}
    notifier = SmtpNotifier(s.smtp, frozenset({"sgt.north@force.example"}))
    parsed = _reparse(notifier.build(_outbound(1, payload, "sgt.north@force.example")))
    subject = str(parsed["Subject"])
    assert not any(ch in subject for ch in ("\n", "\r", *HIDDEN))
    html_part = parsed.get_body(("html",))
    plain = parsed.get_body(("plain",))
    assert html_part is not None and plain is not None
    html = html_part.get_content()
    assert "<script" not in html and "<!channel>" not in html
    body = plain.get_content().replace("\r\n", "\n")
    assert "\nforged line" not in body and not any(ch in body for ch in HIDDEN)


def test_the_escaping_function_is_the_one_the_bot_uses() -> None:
    assert bot_render.esc is mrkdwn


# --- end to end: a hostile event through the HTTP API, the worker and the Slack stand-in -------


OWNER = "<!channel> <https://evil.example|x> @here *b*"  # an officer id as a sender may send it


async def test_hostile_event_reaches_slack_and_email_escaped(db_url: str) -> None:
    async with SlackStandIn(token=TOKEN) as slack:
        sink = MailSink().start()
        try:
            overrides: dict[str, Any] = {
                "slack": {"mode": "http", "bot_token": TOKEN, "signing_secret": "s", "api_url": slack.url},
                "smtp": {"host": "127.0.0.1", "port": sink.port, "timeout_seconds": 5},
            }
            async with service_client(db_url, **overrides) as (service, client):
                events = [
                    envelope("nominal.upsert", nominal_data(offender_manager=OWNER, on_licence=True)),
                    envelope("recall.issued", recall_type="emergency"),
                ]
                resp = await signed_post(client, "/api/v1/events", events)
                assert resp.status == 202, await resp.text()
                alert_ids = (await resp.json())["alerts"]
                assert alert_ids
                worker, _ = make_worker(service.sessions, service.ctx)
                await worker.run_until_idle()

                posts = slack.calls_to("chat.postMessage")
                assert len(posts) == len(alert_ids)
                for post in posts:
                    assert post.args["channel"] == "C0NORTH"
                    assert_safe_slack(post.args)
                    assert f"owner {mrkdwn(OWNER)}" in post.args["text"]
                    assert mrkdwn(OWNER) == "&lt;!channel&gt; &lt;https://evil.example|x&gt; ＠here ＊b＊"
                assert sink.messages
                for mail in sink.messages:
                    html_part = mail.get_body(("html",))
                    assert html_part is not None
                    html = html_part.get_content()
                    assert "&lt;!channel&gt; &lt;https://evil.example|x&gt; @here *b*" in html
                    assert "<!channel>" not in html

                alert_id = alert_ids[0]

                async with service.sessions.begin() as session:
                    alert = await session.get(Alert, alert_id)
                    assert alert is not None
                    assert await resolve(session, alert, "closed <!here> *now*", service.ctx)
                await worker.run_until_idle()
                [update] = slack.calls_to("chat.update")
                assert_safe_slack(update.args)
                replies = [c for c in slack.calls_to("chat.postMessage") if c.args.get("thread_ts")]
                assert replies and all(r.args.get("link_names") in (False, "false", "0", 0) for r in replies)
                for reply in replies:
                    assert_safe_slack(reply.args, shown=False)
                    assert "Resolved: closed &lt;!here&gt; ＊now＊" in reply.args["text"]
        finally:
            sink.stop()


# --- the escaping function itself, for any text ---------------------------------------------------

ANY_TEXT = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Cs"]),
        st.sampled_from([*"<>&@*_~`!#|:\n\r\t ", "<!channel>", "<@U1>", "<http://x|y>", "&lt;", "@here"]),
    ),
    max_size=100,
).map("".join)


def _inert(out: str, i: int) -> bool:
    """A formatting mark between two letters or digits opens and closes nothing."""
    return 0 < i < len(out) - 1 and out[i - 1].isalnum() and out[i + 1].isalnum()


@given(ANY_TEXT)
def test_mrkdwn_output_can_never_ping_link_or_hide(text: str) -> None:
    out = mrkdwn(text)
    assert "<" not in out and ">" not in out and "\n" not in out
    assert not PING.search(out) and not re.search(r"(?<![\w])@", out)
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") for ch in out)
    assert all(_inert(out, i) for i, ch in enumerate(out) if ch in "*_~`")
    assert "&" not in out.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "")


@given(ANY_TEXT)
def test_mrkdwn_with_lines_keeps_only_line_breaks(text: str) -> None:
    out = mrkdwn(text, keep_lines=True)
    assert "<" not in out and ">" not in out and "\r" not in out
    assert out.count("\n") == text.replace("\r\n", "\n").replace("\r", "\n").count("\n")


@given(ANY_TEXT, st.integers(min_value=1, max_value=400))
def test_an_email_header_is_always_one_printable_line(text: str, limit: int) -> None:
    out = header(text, limit)
    assert len(out) <= limit
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") for ch in out)
    message = EmailMessage(policy=_POLICY)
    message["Subject"] = out  # the email library accepts it, and it reads back the same
    message.set_content("x")
    assert str(_reparse(message)["Subject"]) == out
