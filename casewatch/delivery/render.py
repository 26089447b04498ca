"""Message text from a delivery payload: pure functions shared by every notifier.

The payload (written by routing.outbox) holds only what its receiver may see: reference, kind,
severity, due, owner and alert id always; the nominal's name and markers only under "personal"
for receivers cleared for them; a little more under "more" for email to the team's inboxes.

Every value is shown, never obeyed (casewatch.safe_text): chat text is Slack-escaped, email
headers are one printable line, the plain body has one printable line per value and the HTML
body is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any

from casewatch.safe_text import clip, header, mrkdwn, printable

ACK_ACTION_ID = "casewatch_ack"
CHAT_TEXT_LIMIT = 3000  # Slack shows the start of a notification; the blocks carry the rest


def is_plain(p: dict[str, Any]) -> bool:
    """A message not about one alert (a digest, say): {"subject", "text", optional "html"}."""
    return "kind" not in p


def headline(p: dict[str, Any]) -> str:
    return f"{str(p['severity']).upper()} {p['kind']} {p['visor_ref']}"


def change_line(p: dict[str, Any]) -> str:
    change = p.get("change")
    if change == "acknowledged":
        return f"Acknowledged by {p.get('acknowledged_by') or 'someone'}"
    if change == "resolved":
        reason = p.get("resolved_reason") or ""
        return "Resolved" + (f": {reason}" if reason else "")
    if change == "escalated":
        return f"Escalated (step {p.get('escalation_step')}) to {', '.join(p.get('escalated_to', []))}"
    if change == "reminder":
        return reminder_line(p)
    if change == "raised":
        return raised_line(p)
    if change == "fallback":
        fb = p.get("fallback", {})
        return f"Slack delivery to {fb.get('target')} failed ({fb.get('error')}); sent here instead"
    return "New alert"


def raised_line(p: dict[str, Any]) -> str:
    """A raise: from what to what (the payload's severity is the new one), and why."""
    text = f"Severity raised from {p.get('raised_from') or 'lower'} to {p['severity']}"
    days = p.get("days_overdue")
    if isinstance(days, int) and not isinstance(days, bool):
        text += f": now {days} day{'' if days == 1 else 's'} overdue"
    return text


def reminder_line(p: dict[str, Any]) -> str:
    """A reminder (alerts.reminders): still outstanding (the summary says what), for how long,
    and, if acknowledged, that being owned is not being done."""
    text = "Reminder: still outstanding"
    hours = p.get("open_hours")
    if isinstance(hours, int) and not isinstance(hours, bool):
        text += f" after {_span(hours)}"
    if p.get("state") == "acknowledged":
        text += f"; acknowledged by {p.get('acknowledged_by') or 'someone'}, not yet done"
    return text


def _span(hours: int) -> str:
    def n(count: int, unit: str) -> str:
        return f"{count} {unit}{'' if count == 1 else 's'}"

    if hours < 48:
        return n(hours, "hour")
    days, rest = divmod(hours, 24)
    return n(days, "day") + (f" {n(rest, 'hour')}" if rest else "")


def state_line(p: dict[str, Any]) -> str:
    state = p.get("state", "open")
    if state == "acknowledged":
        # The outcome is in the message body only, not in change_line (subjects, notifications).
        outcome = p.get("acknowledged_outcome")
        return f"Acknowledged by {p.get('acknowledged_by')}" + (f": {outcome}" if outcome else "")
    if state == "resolved":
        return "Resolved"
    if p.get("for_information"):
        return f"Open: for information; team {p.get('team')} acknowledges"
    return "Open: needs acknowledging"


def fields(p: dict[str, Any]) -> list[tuple[str, str]]:
    """Label/value pairs, least first: what lets someone act."""
    rows = [
        ("Alert", str(p["alert_id"])),
        ("ViSOR ref", str(p["visor_ref"])),
        ("Kind", str(p["kind"])),
        ("Severity", str(p["severity"])),
    ]
    if p.get("due"):
        rows.append(("Due", str(p["due"])))
    if p.get("owner"):
        rows.append(("Owner", str(p["owner"])))
    personal = p.get("personal")
    if personal:
        rows.append(("Name", str(personal.get("name", ""))))
        if personal.get("markers"):
            rows.append(("Markers", ", ".join(personal["markers"])))
    for key, value in (p.get("more") or {}).items():
        rows.append((key.replace("_", " ").capitalize(), str(value)))
    return rows


def subject(p: dict[str, Any]) -> str:
    """Contract: starts with [casewatch], then severity, kind and ViSOR reference. One printable
    line whatever the values hold: a line break in a value can neither split the header nor
    make the email library refuse it."""
    if is_plain(p):
        return header(p.get("subject") or "[casewatch]")
    text = f"[casewatch] {headline(p)} {p['alert_id']}"
    if p.get("change") not in (None, "opened"):
        text += f": {change_line(p)}"
    return header(text)


def chat_text(p: dict[str, Any]) -> str:
    """The notification text of a chat message (and the chat log), Slack-escaped: one line for
    an alert; a plain message keeps its lines."""
    if is_plain(p):
        return clip(mrkdwn(p.get("text", ""), keep_lines=True), CHAT_TEXT_LIMIT)
    return clip(mrkdwn(_alert_line(p)), CHAT_TEXT_LIMIT)


def reply_text(p: dict[str, Any]) -> str:
    """A thread reply about a change of the alert, Slack-escaped."""
    return clip(mrkdwn(f"{change_line(p)} ({p['alert_id']})"), CHAT_TEXT_LIMIT)


def _alert_line(p: dict[str, Any]) -> str:
    text = f"[{str(p['severity']).upper()}] {p['kind']} {p['visor_ref']} ({p['alert_id']})"
    if p.get("summary"):
        text += f": {p['summary']}"
    if p.get("due"):
        text += f"; due {p['due']}"
    if p.get("owner"):
        text += f"; owner {p['owner']}"
    if p.get("change") not in (None, "opened"):
        text += f" | {change_line(p)}"
    return text


def plain_text(p: dict[str, Any]) -> str:
    """The plain-text email body: one printable line per value, so that no value can forge a
    line of its own."""
    if is_plain(p):
        return printable(p.get("text", ""), keep_lines=True) + "\n"
    lines = [change_line(p), "", str(p.get("summary") or headline(p)), ""]
    lines += [f"{label}: {value}" for label, value in fields(p)]
    lines += ["", f"State: {state_line(p)}"]
    if p.get("state") == "open":
        lines.append(f"To acknowledge, type in Slack: /ack {p['alert_id']}")
    lines = [printable(line) for line in lines]
    lines += ["", "Sent by casewatch. Details stay in ViSOR; look them up there or with /flags."]
    return "\n".join(lines) + "\n"


def html_text(p: dict[str, Any]) -> str:
    def e(value: str) -> str:
        return html.escape(printable(value))

    if is_plain(p):
        if p.get("html"):
            return printable(p["html"], keep_lines=True)  # built (and escaped) by its sender
        body = html.escape(printable(p.get("text", ""), keep_lines=True))
        return f"<html><body><pre>{body}</pre></body></html>"
    rows = "".join(f"<tr><th align=\"left\">{e(k)}</th><td>{e(v)}</td></tr>" for k, v in fields(p))
    ack = (
        f"<p>To acknowledge, type in Slack: <code>/ack {e(str(p['alert_id']))}</code></p>"
        if p.get("state") == "open" else ""
    )
    return (
        "<html><body>"
        f"<p><strong>{e(change_line(p))}</strong></p>"
        f"<p>{e(str(p.get('summary') or headline(p)))}</p>"
        f"<table>{rows}</table>"
        f"<p>State: {e(state_line(p))}</p>{ack}"
        "<p><small>Sent by casewatch. Details stay in ViSOR.</small></p>"
        "</body></html>"
    )
