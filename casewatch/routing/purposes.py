"""The `purpose` of the audit entries the system writes when it shares an alert: why, in words a
reviewer reads ("alert delivered to the team's SPOC inbox so they act on it: travel.border_alert").
Built from the receiver's kind, the change and the alert's kind only: never a name, an address or
anything else personal (an officer's receiver is "the officer concerned", not their id)."""

from __future__ import annotations

from casewatch.alerts import SYSTEM_REF

# What each change of an alert (routing.outbox purposes) tells its receivers.
_CHANGES = {
    "opened": "a new alert",
    "escalated": "an alert still unacknowledged, escalated",
    "acknowledged": "an alert acknowledged",
    "resolved": "an alert resolved",
    "raised": "an alert raised in severity",
    "reminder": "a reminder of an alert still outstanding",
    "fallback": "an alert whose chat message failed, by email instead",
}

_RECEIVERS = {
    "team": "the team's channel",
    "spoc": "the team's SPOC inbox",
    "supervisors": "the team's supervisors",
    "npt": "the neighbourhood policing team for the area",
    "officer": "the officer concerned",
    "control_room": "the control room",
}


def nominals_of(visor_ref: str | None) -> list[str]:
    """The audit entry's nominals for an alert's reference: none for a system alert."""
    return [visor_ref] if visor_ref and visor_ref != SYSTEM_REF else []


def receiver_words(receiver: str) -> str:
    """"spoc:north" -> "the team's SPOC inbox"; an unknown kind by its name."""
    kind = receiver.split(":", 1)[0]
    return _RECEIVERS.get(kind, kind.replace("_", " ") or "a receiver")


def change_words(change: str) -> str:
    return _CHANGES.get(change, f"an alert update ({change})")


def delivery_purpose(change: str, receiver: str, kind: str | None, outcome: str) -> str:
    """An attempt at one delivery: `outcome` is "sent", "retry" or "dead" (delivery.transition)."""
    who = receiver_words(receiver)
    if kind is None:  # a message of its own (the daily digest), not about one alert
        what = "the daily digest of the team's alerts" if change == "digest" else f"a {change} message"
        shared = f"{what} for {who}, so the team sees what is outstanding"
    else:
        shared = f"{change_words(change)} for {who}, so they act on it: {kind}"
    if outcome == "sent":
        return f"delivered {shared}"[:200]
    return f"not delivered ({outcome}): {shared}"[:200]


def alert_purpose(action: str, kind: str) -> str:
    """An alert's own audit entries (alerts.lifecycle, routing.escalation)."""
    why = {
        "alert.opened": "alert opened, routed to the team and whoever its rule names so they act on it",
        "alert.resolved": "alert resolved: its receivers are told no more action is wanted",
        "alert.severity_raised": "alert raised in severity: its receivers are told again, to act sooner",
        "alert.acknowledged": "alert taken on by the acknowledging officer: escalation stops",
        "alert.escalated": "alert unacknowledged in time: escalated to the next receivers so someone acts",
        "delivery.unroutable": "alert with no receiver to tell: the admins must fix the routing",
    }.get(action, action)
    return f"{why}: {kind}"[:200]
