"""Block Kit messages for the bot's answers. Pure functions: views in, message dicts out.

Everything typed by people or imported from case systems is escaped (`esc`, the one Slack escaping
function, casewatch.safe_text.mrkdwn) before it reaches mrkdwn, the `text` fallbacks included.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from casewatch.alerts.lifecycle import AckOutcome
from casewatch.lookup import (
    ActionLine,
    AlertLine,
    Candidate,
    FlagsView,
    NotFound,
    OfficerContact,
    ReasonRequired,
    Several,
    TasksView,
)
from casewatch.lookup.home import HomeView
from casewatch.lookup.views import OrderView, PersonalView
from casewatch.safe_text import clip, mrkdwn
from casewatch.triggers.rules.orders import ORDER_KINDS

Message = dict[str, Any]

ACK_ACTION_ID = "casewatch_ack"
SHOW_ACTION_ID = "casewatch_flags_show"

FLAGS_USAGE = (
    "*Usage:* `/flags &lt;ViSOR ref | PNC ID | surname [date of birth]&gt;`\n"
    "For example `/flags VS-0001234`, `/flags 98/123456X`, `/flags smith` or "
    "`/flags smith 14/03/1980`. A name is also looked for among known aliases. Case and "
    "spacing do not matter. Only you see the answer.\n"
    "A nominal managed by another team needs a reason (unless you are a supervisor, SPOC, control "
    "room or admin): `/flags VS-0001234 reason: &lt;why you need it&gt;`. Every lookup and its reason "
    "are recorded in the audit log."
)
REASON_REQUIRED = (
    "The nominal found for *{typed}* is managed by another team, so its flags are shown only "
    "when you say why you need them (need to know). Ask again with a reason:\n"
    "`/flags {typed} reason: &lt;why you need it&gt;`\n"
    "The lookup and its reason are recorded in the audit log."
)
ACK_USAGE = (
    "*Usage:* `/ack &lt;alert id&gt; [what was done]`, for example `/ack A-7K3Q9M` or "
    "`/ack A-7K3Q9M spoke to the nominal, travel notification booked`. `/tasks` lists your open alerts."
)
# For an unknown id and for an alert the requester may not acknowledge alike.
ACK_NOT_FOUND = (
    "No alert `{typed}` found that you can acknowledge. Check the id (it looks like A-7K3Q9M); "
    "`/tasks` lists yours. Only the alert's own team, the officer it names, the control room and "
    "admins can acknowledge an alert."
)
REFUSAL = (
    "Sorry, your Slack account is not linked to an officer in casewatch, so I cannot help with "
    "that. Please ask your casewatch administrator to add you to the officer directory."
)
FAILURE = "Sorry, something went wrong and nothing was changed. Please try again in a moment."
STILL_WORKING = "Still working on that; the answer will appear here in a moment."
TRY_AGAIN = "That is taking longer than usual; please try again in a minute."

_SEVERITY_ICON = {
    "critical": ":red_circle:", "high": ":large_orange_circle:", "medium": ":large_yellow_circle:",
}
DOT = " \u00b7 "
_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,20}")
_MAILTO = re.compile(r"[A-Za-z0-9.!#$%'*+/=?^_{}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


# The one Slack escaping function (every renderer uses it): see casewatch.safe_text.
esc = mrkdwn


def _clip(text: str, limit: int) -> str:
    return clip(text, limit)


def day(value: date) -> str:
    return value.strftime("%d/%m/%Y")


def moment(value: datetime, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%d/%m/%Y %H:%M")


def due(value: datetime, zone: ZoneInfo) -> str:
    """A due instant: the rules make most things due at the end of a local day (local midnight),
    which reads "end of 04/12/2026", as the mail's "end of 2026-12-04" (routing.outbox.due_text),
    not "05/12/2026 00:00" beside a summary that says "by 2026-12-04"."""
    local = value.astimezone(zone)
    if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
        return f"end of {day((local - timedelta(seconds=1)).date())}"
    return moment(value, zone)


def text_message(text: str) -> Message:
    return {"text": _clip(text, 3000), "blocks": [_section(text)]}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, 3000)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, 3000)}]}


def _button(text: str, action_id: str, value: str, *, primary: bool = False) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button", "action_id": action_id, "value": value,
        "text": {"type": "plain_text", "text": text},
    }
    if primary:
        button["style"] = "primary"
    return button


def _officer(contact: OfficerContact) -> str:
    if not contact.officer_id:
        return "not recorded"
    if not contact.name:
        return f"{esc(contact.officer_id)} (not in the casewatch directory)"
    parts = [f"{esc(_clip(contact.name, 200))} ({esc(_clip(contact.officer_id, 64))})"]
    # The only links casewatch makes itself, and only from directory values of the right shape.
    if _SLACK_USER.fullmatch(contact.slack_user_id):
        parts.append(f"<@{contact.slack_user_id}>")
    if _MAILTO.fullmatch(contact.email):
        parts.append(f"<mailto:{contact.email}|{esc(contact.email)}>")
    elif contact.email:
        parts.append(esc(contact.email))
    return " \u00b7 ".join(parts)


def _alert_line(alert: AlertLine, zone: ZoneInfo) -> str:
    icon = _SEVERITY_ICON.get(alert.severity, ":white_circle:")
    line = f"{icon} *{esc(alert.severity)}* `{esc(alert.alert_id)}` {esc(alert.kind)}"
    line += f"{DOT}{esc(alert.visor_ref)}"
    if alert.due_at is not None:
        line += f" \u00b7 due {due(alert.due_at, zone)}"
    if alert.owner:
        line += f" \u00b7 owner {esc(alert.owner)}"
    if alert.summary:
        line += f"\n{esc(_clip(alert.summary, 300))}"
    if alert.state == "acknowledged" and alert.acknowledged_by:
        when = f" at {moment(alert.acknowledged_at, zone)}" if alert.acknowledged_at else ""
        line += f"\n_acknowledged by {esc(alert.acknowledged_by)}{when}_"
    return line


def _recall_banner(view: FlagsView, zone: ZoneInfo) -> str:
    lic = view.licence
    issued = f", issued {moment(lic.recall_issued_at, zone)}" if lic.recall_issued_at else ""
    kind = (lic.recall_type or "").replace("_", " ")
    return f":rotating_light: *RECALLED / UNLAWFULLY AT LARGE* ({esc(kind)} recall{issued})"


def _licence_text(view: FlagsView, zone: ZoneInfo) -> str:
    lic = view.licence
    if lic.recalled:
        return "*Revoked: recalled*, unlawfully at large until returned to custody"
    if lic.on_licence:
        text = "On licence"
        if lic.licence_expiry:
            text += f" until {day(lic.licence_expiry)}"
    else:
        text = "Not on licence"
    if lic.returned_at is not None:
        text += f" (last recall ended {moment(lic.returned_at, zone)})"
    return text


def _notification_text(view: FlagsView) -> str:
    if not view.registered:
        return "Not subject to notification requirements"
    due = view.next_notification
    nfa = " \u00b7 no fixed abode" if view.no_fixed_abode else ""
    if due is None:
        return f"Registered \u00b7 next notification: not known (none on record){nfa}"
    return f"Registered \u00b7 next notification due {day(due.due_on)} ({esc(due.kind)}){nfa}"


def _visit_text(view: FlagsView) -> str:
    last = day(view.last_visit_on) if view.last_visit_on is not None else "none on record"
    due = view.next_visit_due
    return f"Last {last} \u00b7 next due {day(due) if due is not None else 'none owed'}"


# Open alerts that say the person may be breaching a requirement now: a notification missed
# (SOA 2003 s.91(1)(a)) or travel not notified (s.86, s.91(1)(a)).
BREACH_KINDS = ("notification.missed", "travel.unnotified")
_SECTION_CHARS = 3000
_LINE_CHARS = 2000


def _risk_line(view: FlagsView) -> str:
    """Is this person dangerous: risk, MAPPA category and level, in one line."""
    risk = esc(view.risk_level.replace("_", " ").capitalize())
    icon = ":warning: " if view.risk_level in ("high", "very_high") or view.mappa_level == 3 else ""
    level = f"MAPPA level {view.mappa_level}" if view.mappa_level else "no MAPPA level"
    return f"{icon}*Risk: {risk}*{DOT}Category {esc(view.category)}{DOT}{level}"


def _breach_line(view: FlagsView) -> str | None:
    """Breaching a requirement right now, as far as casewatch knows: its open breach alerts."""
    breaches = [a for a in view.open_alerts if a.kind in BREACH_KINDS]
    if not breaches:
        return None
    listed = ", ".join(f"{esc(a.kind)} ({esc(a.severity)}) `{esc(a.alert_id)}`" for a in breaches[:5])
    more = f" and {len(breaches) - 5} more" if len(breaches) > 5 else ""
    return f":no_entry: *Possible breach:* {listed}{more}"


def _order_lines(order: OrderView) -> list[str]:
    label = ORDER_KINDS.get(order.kind, order.kind)
    until = f"expires {day(order.expires_on)}" if order.expires_on else "until further order"
    lines = [f"\u2022 `{esc(order.order_id)}` *{esc(label)}*{DOT}made {day(order.made_on)}{DOT}{until}"]
    lines += [f"    \u2013 {esc(p)}" for p in order.prohibitions] or ["    \u2013 no prohibitions recorded"]
    return lines


def _personal_lines(personal: PersonalView) -> list[str]:
    """Where they live and what they must not do, as it bears on an incident: the address, the
    exclusion zones, the court orders in force and their prohibitions, the licence conditions."""
    lines = ["*Home address*", esc(personal.home_address) if personal.home_address else "not recorded"]
    if personal.exclusion_zones:
        lines += ["*Exclusion zones*", *(f"\u2022 {esc(z)}" for z in personal.exclusion_zones)]
    lines.append("*Court orders in force*")
    if personal.orders:
        for order in personal.orders:
            lines += _order_lines(order)
    else:
        lines.append("none on record")
    if personal.licence_conditions:
        lines += ["*Licence conditions*", *(f"\u2022 {esc(c)}" for c in personal.licence_conditions)]
    return lines


def _packed(lines: list[str], max_blocks: int) -> list[dict[str, Any]]:
    """`lines` in as few sections as Slack's 3,000 characters a section allow, at most `max_blocks`;
    what does not fit is counted, never silently dropped."""
    texts: list[str] = []
    current = ""
    for line in (_clip(line, _LINE_CHARS) for line in lines):
        if current and len(current) + 1 + len(line) > _SECTION_CHARS:
            texts.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        texts.append(current)
    if len(texts) > max_blocks:
        left = sum(text.count("\n") + 1 for text in texts[max_blocks - 1 :])
        texts = [*texts[: max_blocks - 1], f"_\u2026 {left} more lines: see ViSOR._"]
    return [_section(text) for text in texts]


def flags_message(view: FlagsView, zone: ZoneInfo, reason: str | None = None) -> Message:
    """The /flags answer (ephemeral: only the requester sees it). The first lines answer "is this
    person wanted, dangerous or breaching a condition right now": the recall banner (unlawfully
    at large), the identity, risk and MAPPA, any open breach alert, the warning markers. Then
    the description, the personal part for cleared roles (address, zones, orders and their
    prohibitions, licence conditions), notification, licence, visits, who manages them, alerts."""
    blocks: list[dict[str, Any]] = []
    if view.licence.recalled:
        blocks.append(_section(_recall_banner(view, zone)))
    name = f"{esc(view.surname.upper())}, {esc(view.forenames)}"
    header = f"*{esc(view.visor_ref)}* \u00b7 {name} \u00b7 born {day(view.date_of_birth)}"
    if view.pnc_id:
        header += f" \u00b7 PNC {esc(view.pnc_id)}"
    blocks.append(_section(f"{header}\n{_risk_line(view)}"))
    if view.matched_alias is not None:
        blocks.append(_context(_alias_note(view.matched_alias)))
    breach = _breach_line(view)
    if breach is not None:
        blocks.append(_section(breach))
    if view.markers:
        lines = [
            f"\u2022 `{esc(m.code)}` {esc(m.label)}" + ("  :lock: _restricted_" if m.restricted else "")
            for m in view.markers
        ]
        blocks.append(_section("*Markers*\n" + "\n".join(lines)))
    else:
        blocks.append(_section("*Markers*\nnone you may see"))
    if view.description:
        blocks.append(_section(f"*Description*\n{esc(view.description)}"))
    fields = [
        f"*Notification*\n{_notification_text(view)}",
        f"*Licence*\n{_licence_text(view, zone)}",
        f"*Home visits*\n{_visit_text(view)}",
        f"*Lead agency*\n{esc(view.lead_agency)} \u00b7 team {esc(view.team)}",
        f"*Offender manager*\n{_officer(view.offender_manager)}",
    ]
    tail: list[dict[str, Any]] = [
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _clip(f, 2000)} for f in fields]},
    ]
    if view.open_alerts:
        tail.append(_section("*Open alerts*\n" + "\n".join(_alert_line(a, zone) for a in view.open_alerts)))
    else:
        tail.append(_section("*Open alerts*\nnone"))
    note = (
        "Restricted markers included (your role is cleared for them)."
        if view.restricted_included
        else "Restricted markers are shown only to cleared roles."
    )
    if view.personal is None:
        note += (
            " Home address, licence conditions, exclusion zones and court orders are shown only to "
            "cleared roles."
        )
    tail.append(_context(f"{note} {recorded_note(reason)}"))
    if view.personal is not None:
        blocks += _packed(_personal_lines(view.personal), 50 - len(blocks) - len(tail))
    fallback = f"Flags for {esc(view.visor_ref)}"
    if view.licence.recalled:
        fallback = f"RECALLED / UNLAWFULLY AT LARGE: flags for {esc(view.visor_ref)}"
    return {"text": fallback, "blocks": [*blocks, *tail][:50]}


def recorded_note(reason: str | None) -> str:
    """Says that the lookup is in the audit log, with the requester's reason (escaped)."""
    if reason is None:
        return "This lookup is recorded in the audit log."
    return f"This lookup is recorded in the audit log (reason: {esc(reason)})."


def show_value(visor_ref: str, reason: str | None) -> str:
    """A Show button's value: what /flags is asked when it is pressed, the reason carried along
    so a pick from a search that gave one needs no second asking."""
    return visor_ref if reason is None else f"{visor_ref} reason: {reason}"


def reason_required_message(outcome: ReasonRequired) -> Message:
    """Says how to ask with a reason, and nothing about the nominal but what was typed."""
    return text_message(REASON_REQUIRED.format(typed=esc(_clip(outcome.query.text, 200))))


def candidates_message(outcome: Several) -> Message:
    shown = len(outcome.candidates)
    intro = f"{outcome.total} nominals match *{esc(outcome.query.text)}*." + (" Pick one:" if shown else "")
    blocks: list[dict[str, Any]] = [_section(intro)]
    for c in outcome.candidates:
        blocks.append({
            **_section(_candidate_line(c)),
            "accessory": _button("Show", SHOW_ACTION_ID, show_value(c.visor_ref, outcome.query.reason)),
        })
    if outcome.withheld:
        blocks.append(_context(
            f"{outcome.withheld} managed by another team not listed: ask again with "
            "`reason: &lt;why you need it&gt;` to see them."
        ))
    more = outcome.total - shown - outcome.withheld
    if more > 0:
        blocks.append(_context(
            f"{more} more not listed: add a date of birth, or use the ViSOR reference."
        ))
    blocks.append(_context(recorded_note(outcome.query.reason)))
    return {"text": f"{outcome.total} nominals match" + ("; pick one" if shown else ""), "blocks": blocks}


def _candidate_line(c: Candidate) -> str:
    name = f"{esc(c.surname.upper())}, {esc(c.forenames)}"
    line = f"`{esc(c.visor_ref)}` {name}{DOT}born {day(c.date_of_birth)}"
    if c.matched_alias is not None:
        line += f"\n{_alias_note(c.matched_alias)}"
    return line


def _alias_note(alias: str) -> str:
    return f"Matched on alias: {esc(alias)}"


def not_found_message(outcome: NotFound) -> Message:
    return text_message(
        f"No nominal found for *{esc(outcome.query.text)}*. Check the spelling, or try the ViSOR "
        f"reference or PNC ID.\n{recorded_note(outcome.query.reason)}"
    )


def _action_line(action: ActionLine, scope: str) -> str:
    overdue = " *OVERDUE*" if action.overdue else ""
    owner = f" \u00b7 owner {esc(action.owner)}" if scope == "team" else ""
    return (
        f"\u2022 `{esc(action.action_id)}` {esc(action.visor_ref)} \u00b7 due {day(action.due_on)}{overdue}"
        f"{owner}\n    {esc(_clip(action.summary, 150))}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def tasks_message(view: TasksView, zone: ZoneInfo) -> Message:
    whose = f"Team {esc(view.team)}" if view.scope == "team" else "Your"
    blocks: list[dict[str, Any]] = [_section(f"*{whose} open alerts and actions*, most urgent first")]
    if view.alerts:
        for alert in view.alerts:
            block = _section(_alert_line(alert, zone))
            if alert.state == "open":
                block["accessory"] = _button("Acknowledge", ACK_ACTION_ID, alert.alert_id, primary=True)
            blocks.append(block)
        if view.more_alerts:
            blocks.append(_context(f"and {view.more_alerts} more alerts"))
    else:
        blocks.append(_section("No open alerts."))
    blocks.append({"type": "divider"})
    if view.actions:
        lines = [_action_line(a, view.scope) for a in view.actions]
        for start in range(0, len(lines), 10):
            heading = "*Actions*\n" if start == 0 else ""
            blocks.append(_section(heading + "\n".join(lines[start : start + 10])))
        if view.more_actions:
            blocks.append(_context(f"and {view.more_actions} more actions"))
    else:
        blocks.append(_section("*Actions*\nNo open actions."))
    alerts, actions = len(view.alerts) + view.more_alerts, len(view.actions) + view.more_actions
    text = f"{_count(alerts, 'open alert')}, {_count(actions, 'open action')}"
    return {"text": text, "blocks": blocks[:50]}


def ack_message(
    outcome: AckOutcome,
    typed: str,
    requester_id: str,
    by_name: str,
    zone: ZoneInfo,
    *,
    outcome_given: bool = False,
) -> Message:
    alert = outcome.alert
    if outcome.status in ("unknown", "refused") or alert is None:
        # One answer for both: holding an id of another team's alert tells nothing about it.
        return text_message(ACK_NOT_FOUND.format(typed=esc(typed)))
    what = f"`{esc(alert.id)}` ({esc(alert.kind)}, {esc(alert.visor_ref)})"
    if outcome.status == "resolved":
        reason = f": {esc(alert.resolved_reason)}" if alert.resolved_reason else ""
        return text_message(f"Alert {what} is already resolved{reason}. Nothing to acknowledge.")
    when = moment(alert.acknowledged_at, zone) if alert.acknowledged_at else "an unknown time"
    recorded = f"\nOutcome: {esc(alert.acknowledged_outcome)}" if alert.acknowledged_outcome else ""
    if outcome.status == "already_acknowledged":
        who = "you" if alert.acknowledged_by == requester_id else esc(by_name)
        kept = " The first acknowledgement stands: your outcome was not recorded." if outcome_given else ""
        return text_message(f"Alert {what} was already acknowledged by {who} at {when}.{kept}{recorded}")
    return text_message(
        f":white_check_mark: Alert {what} acknowledged by you at {when}. Escalation has stopped; "
        # Not "the SPOC email thread": a notification.missed, say, is never mailed to the SPOC.
        f"each place the alert was sent gets an update saying so.{recorded}"
    )


# --- the App Home ---------------------------------------------------------------------------------

HOME_NOT_SET_UP = (
    "*You are not set up in casewatch.* Your Slack account is not linked to an officer in the "
    "directory, so there is nothing to show here. Please ask your casewatch administrator to add you."
)
HOME_FAILURE = "Sorry, this page could not be loaded just now. Open the Home tab again in a moment."


def home_text_view(text: str) -> dict[str, Any]:
    return {"type": "home", "blocks": [_section(text)]}


def age(delta: timedelta) -> str:
    """A waiting time, coarse: 3d 4h, 5h 12m, 7m."""
    minutes = max(0, int(delta.total_seconds() // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"


def _home_alert_line(alert: AlertLine, view: HomeView, zone: ZoneInfo) -> str:
    """The least that lets someone act: severity, id, kind, ViSOR reference, age, due; the owner's
    id for a supervisor (who to chase). Never a summary or a name."""
    icon = _SEVERITY_ICON.get(alert.severity, ":white_circle:")
    line = f"{icon} `{esc(alert.alert_id)}` {esc(alert.kind)}{DOT}{esc(alert.visor_ref)}"
    line += f"{DOT}opened {age(view.as_of - alert.opened_at)} ago"
    if alert.due_at is not None:
        line += f"{DOT}due {due(alert.due_at, zone)}"
    if view.scope == "team":
        line += f"{DOT}owner {esc(alert.owner)}" if alert.owner else f"{DOT}*no owner*"
    if alert.state == "acknowledged":
        line += f"{DOT}_acknowledged_"
    return line


def _home_alerts(
    lines: tuple[AlertLine, ...], more: int, view: HomeView, zone: ZoneInfo
) -> list[dict[str, Any]]:
    blocks = []
    for alert in lines:
        block = _section(_home_alert_line(alert, view, zone))
        if alert.state == "open":
            block["accessory"] = _button("Acknowledge", ACK_ACTION_ID, alert.alert_id, primary=True)
        blocks.append(block)
    if more:
        blocks.append(_context(f"and {more} more: `/tasks` lists them"))
    return blocks


def _home_action_line(action: ActionLine, scope: str) -> str:
    overdue = f"{DOT}*OVERDUE*" if action.overdue else ""
    owner = f"{DOT}owner {esc(action.owner)}" if scope == "team" else ""
    what = f"\u2022 `{esc(action.action_id)}` {esc(action.visor_ref)}"
    return f"{what}{DOT}due {day(action.due_on)}{overdue}{owner}"


def home_view(view: HomeView, zone: ZoneInfo) -> dict[str, Any]:
    """The Home tab: alerts, then visits due, then actions; at most 100 blocks, as Slack allows."""
    whose = f"Team {esc(view.team)}" if view.scope == "team" else "Your"
    order = "oldest first" if view.scope == "team" else "most urgent first"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "casewatch"}},
        _context(f"As of {moment(view.as_of, zone)}. Refreshed each time you open this tab."),
        _section(f"*{whose} open alerts*, {order}"),
    ]
    blocks += _home_alerts(view.alerts, view.more_alerts, view, zone) or [_section("No open alerts.")]
    blocks += [{"type": "divider"}, _section("*Home visits due*")]
    blocks += _home_alerts(view.visits, view.more_visits, view, zone) or [_section("No visits due.")]
    blocks += [{"type": "divider"}]
    if view.actions:
        lines = [_home_action_line(a, view.scope) for a in view.actions]
        for start in range(0, len(lines), 10):
            heading = "*Open actions*\n" if start == 0 else ""
            blocks.append(_section(heading + "\n".join(lines[start : start + 10])))
        if view.more_actions:
            blocks.append(_context(f"and {view.more_actions} more: `/tasks` lists them"))
    else:
        blocks.append(_section("*Open actions*\nNo open actions."))
    blocks.append(_context("Details stay in ViSOR; `/flags &lt;ViSOR ref&gt;` shows them to you only."))
    return {"type": "home", "blocks": blocks[:100]}
