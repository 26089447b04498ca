"""The digest as an email (plain text and HTML, for the supervisors) and as a team-channel message
(text and Block Kit blocks). The channel version carries the least: counts, alert ids and ViSOR
references; no names of anyone. Nothing in any version names a nominal: details stay in ViSOR.
Values are shown, never obeyed (casewatch.safe_text): one printable line each in the text
versions, HTML-escaped in the HTML, Slack-escaped in the blocks (the channel text is escaped by
the notifier that sends it).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from casewatch.digest.build import Digest, OfficerOversight
from casewatch.safe_text import clip, mrkdwn, printable

T = TypeVar("T")
SLACK_TEXT_LIMIT = 3000
CHANNEL_IDS = 10  # alert ids / references listed per line in the channel version

NOTHING = (
    "Nothing to report: no new, unacknowledged or overdue items, nothing falling due, no border "
    "travel, no outstanding recalls, and every caseload within the guideline."
)


def subject(d: Digest) -> str:
    clear = " (nothing to report)" if d.nothing_to_report else ""
    return f"[casewatch] Daily digest {d.team_name} {d.local_day.isoformat()}{clear}"


def age(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


NO_OWNER = "no owner"


def _oversight_line(row: OfficerOversight, *, with_name: bool) -> str:
    who = row.officer_id or NO_OWNER
    if with_name and row.name:
        who += f" ({row.name})"
    return (
        f"{who}: {row.unacknowledged} unacknowledged, {row.without_outcome} acknowledged without an outcome"
    )


def oversight_totals(d: Digest) -> tuple[int, int]:
    return sum(r.unacknowledged for r in d.oversight), sum(r.without_outcome for r in d.oversight)


def _local(at: datetime, d: Digest) -> str:
    return at.astimezone(ZoneInfo(d.timezone)).strftime("%Y-%m-%d %H:%M %Z")


def _limited(rows: Sequence[T], limit: int) -> tuple[Sequence[T], int]:
    return rows[:limit], max(0, len(rows) - limit)


def sections(d: Digest, limit: int = 50) -> list[tuple[str, list[str]]]:
    """(heading, lines) for each section, shared by the text and HTML versions; an empty list of
    lines means "None"."""

    def more(n: int) -> list[str]:
        return [f"... and {n} more"] if n else []

    new = [f"{kind}: {n}" for kind, n in d.new_by_kind]
    shown, extra = _limited(d.unacknowledged, limit)
    unack = [
        f"{a.id}  {a.severity}  {a.kind}  {a.visor_ref}  open for {age(wait)}"
        + (f"  owner {a.owner}" if a.owner else "")
        for a, wait in shown
    ] + more(extra)
    shown_oversight, extra = _limited(d.oversight, limit)
    oversight = [_oversight_line(r, with_name=True) for r in shown_oversight] + more(extra)
    overdue: list[str] = []
    names = {c.officer_id: c.name for c in d.caseload}
    for owner, rows in d.overdue_by_owner:
        label = f"{owner} ({names[owner]})" if names.get(owner) else owner
        overdue.append(f"{label}: {len(rows)}")
        part, extra = _limited(rows, limit)
        overdue += [
            f"    {action.action_id}  {action.visor_ref}  due {action.due_on.isoformat()} "
            f"({days} day{'s' if days != 1 else ''} overdue)"
            for action, days in part
        ] + [f"    {line}" for line in more(extra)]
    shown_missed, extra = _limited(d.missed_notifications, limit)
    missed = [
        f"{a.id}  {a.visor_ref}"
        + (f"  was due {a.due_on.isoformat()}" if a.due_on else "")
        + f"  {a.state}"
        + (f"  owner {a.owner}" if a.owner else "")
        for a in shown_missed
    ] + more(extra)
    shown_due, extra = _limited(d.due_soon, limit)
    due = [
        f"{item.due_on.isoformat()}  {item.what} {item.ref}  {item.visor_ref}"
        + (f"  owner {item.owner}" if item.owner else "")
        for item in shown_due
    ] + more(extra)
    shown_border, extra = _limited(d.border_travel, limit)
    border = [
        f"{a.id}  {a.kind}  {a.visor_ref}  opened {_local(a.opened_at, d)}  {a.state}" for a in shown_border
    ] + more(extra)
    shown_recalls, extra = _limited(d.recalls, limit)
    recalls = [
        f"{r.visor_ref}  {r.recall_type.replace('_', ' ')}  issued {_local(r.issued_at, d)}  "
        f"at large {age(at_large)}" + (f"  alert {r.alert_id}" if r.alert_id else "")
        for r, at_large in shown_recalls
    ] + more(extra)
    caseload = [
        f"{c.officer_id}"
        + (f" ({c.name})" if c.name else "")
        + f": {c.total} nominal{'s' if c.total != 1 else ''}, {c.high} high or very high "
        f"({c.percent:.0f}%)" + ("  OVER THE GUIDELINE" if c.over else "")
        for c in d.caseload
    ]
    return [
        (f"New alerts in the last 24 hours: {d.new_total}", new),
        (f"Unacknowledged alerts: {len(d.unacknowledged)}", unack),
        (
            "Oversight per officer: {} unacknowledged, {} acknowledged without an outcome".format(
                *oversight_totals(d)
            ),
            oversight,
        ),
        (f"Overdue actions: {d.overdue_total}", overdue),
        (f"Missed notifications: {len(d.missed_notifications)}", missed),
        (f"Falling due in the next {d.due_days} days: {len(d.due_soon)}", due),
        (f"Border-travel alerts: {len(d.border_travel)}", border),
        (f"Outstanding recalls: {len(d.recalls)}", recalls),
        (
            f"Caseloads (guideline: at most {d.guideline_percent:g}% high or very high risk; "
            f"{len(d.over_guideline)} over)",
            caseload,
        ),
    ]


def _title(d: Digest) -> str:
    return f"casewatch daily digest: {d.team_name}"


def _as_of(d: Digest) -> str:
    return f"{d.local_day:%A %d %B %Y}, as of {_local(d.at, d)}"


def email_text(d: Digest, limit: int = 50) -> str:
    lines = [_title(d), _as_of(d), ""]
    if d.nothing_to_report:
        lines += [NOTHING, ""]
    for heading, rows in sections(d, limit):
        lines.append(heading)
        lines += [f"  {row}" for row in rows] or ["  None."]
        lines.append("")
    lines.append("Sent by casewatch. Details stay in ViSOR; look them up there or with /flags.")
    return "\n".join(printable(line) for line in lines) + "\n"  # a value cannot forge a line


def email_html(d: Digest, limit: int = 50) -> str:
    def e(text: str) -> str:
        return html.escape(printable(text))

    parts = [
        "<html><body>",
        f"<h1>{e(_title(d))}</h1>",
        f"<p>{e(_as_of(d))}</p>",
    ]
    if d.nothing_to_report:
        parts.append(f"<p><strong>{e(NOTHING)}</strong></p>")
    for heading, rows in sections(d, limit):
        parts.append(f"<h2>{e(heading)}</h2>")
        if rows:
            parts.append(
                "<ul>" + "".join(f"<li><code>{e(row.strip())}</code></li>" for row in rows) + "</ul>"
            )
        else:
            parts.append("<p>None.</p>")
    parts.append("<p><small>Sent by casewatch. Details stay in ViSOR.</small></p></body></html>")
    return "".join(parts)


def _ids(items: Sequence[str]) -> str:
    shown = ", ".join(items[:CHANNEL_IDS])
    return shown + (f" and {len(items) - CHANNEL_IDS} more" if len(items) > CHANNEL_IDS else "")


def channel_lines(d: Digest) -> list[str]:
    """The channel version, one line a section: counts, alert ids and ViSOR references only."""
    if d.nothing_to_report:
        return [f"Daily digest {d.team_name} {d.local_day.isoformat()}: nothing to report."]
    by_kind = ", ".join(f"{kind} {n}" for kind, n in d.new_by_kind)
    lines = [f"Daily digest {d.team_name} {d.local_day.isoformat()}"]
    lines.append(f"New alerts (24 h): {d.new_total}" + (f" ({by_kind})" if by_kind else ""))
    lines.append(
        f"Unacknowledged: {len(d.unacknowledged)}"
        + (f": {_ids([f'{a.id} {a.visor_ref}' for a, _ in d.unacknowledged])}" if d.unacknowledged else "")
    )
    unack, no_outcome = oversight_totals(d)
    per_officer = [f"{r.officer_id or NO_OWNER} {r.unacknowledged}/{r.without_outcome}" for r in d.oversight]
    lines.append(
        f"Per officer, unacknowledged / acknowledged without an outcome: {unack} / {no_outcome}"
        + (f": {_ids(per_officer)}" if per_officer else "")
    )
    per_owner = ", ".join(f"{owner} {len(rows)}" for owner, rows in d.overdue_by_owner)
    lines.append(f"Overdue actions: {d.overdue_total}" + (f" ({per_owner})" if per_owner else ""))
    lines.append(
        f"Missed notifications: {len(d.missed_notifications)}"
        + (
            f": {_ids([f'{a.id} {a.visor_ref}' for a in d.missed_notifications])}"
            if d.missed_notifications
            else ""
        )
    )
    lines.append(f"Falling due in {d.due_days} days: {len(d.due_soon)}")
    lines.append(
        f"Border travel: {len(d.border_travel)}"
        + (f": {_ids([f'{a.id} {a.visor_ref}' for a in d.border_travel])}" if d.border_travel else "")
    )
    lines.append(
        f"Outstanding recalls: {len(d.recalls)}"
        + (
            f": {_ids([r.visor_ref + (f' {r.alert_id}' if r.alert_id else '') for r, _ in d.recalls])}"
            if d.recalls
            else ""
        )
    )
    lines.append(f"Caseloads over the {d.guideline_percent:g}% guideline: {len(d.over_guideline)}")
    lines.append("The supervisors have the full digest by email.")
    return lines


def channel_text(d: Digest) -> str:
    """The lines above as plain text, one printable line each (the notifier Slack-escapes it)."""
    return "\n".join(printable(line) for line in channel_lines(d))[:SLACK_TEXT_LIMIT]


def channel_blocks(d: Digest) -> list[dict[str, Any]]:
    """Block Kit for the channel version: a header, then one section of the lines above."""
    lines = channel_lines(d)
    body = "\n".join(f"• {mrkdwn(line)}" for line in lines[1:]) or mrkdwn(lines[0])
    return [
        {"type": "header", "text": {"type": "plain_text", "text": clip(printable(lines[0]), 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": clip(body, SLACK_TEXT_LIMIT)}},
    ]
