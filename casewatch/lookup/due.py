"""When a registered nominal must next notify the police, for display in /flags.

The clocks are the missed-notification rule's own (triggers.rules.notifications.dues), so what
an officer is shown and what the alerts say can never disagree.
"""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from casewatch.config.triggers import TriggerSection
from casewatch.model.facts import NominalFacts, NotificationHistory
from casewatch.triggers.rules.notifications import Due, dues, requirements_ended

NotificationDue = Due


def next_notification_due(
    nominal: NominalFacts,
    history: NotificationHistory,
    clocks: TriggerSection,
    tz: ZoneInfo,
    today: date | None = None,
) -> NotificationDue | None:
    """The earliest notification owed; None when not registered, nothing is on record, or (given
    `today`, the local date) the notification period ended before today (SOA 2003 s.82(1))."""
    if today is not None and requirements_ended(nominal, today):
        return None
    owed = dues(nominal, history, clocks, tz)
    return min(owed, key=lambda due: due.due_on) if owed else None

