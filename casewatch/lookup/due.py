"""When a registered nominal must next notify the police, for display in /flags.

The clocks are the missed-notification rule's own (triggers.rules.notifications.dues), so what
an officer is shown and what the alerts say can never disagree.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.config.triggers import TriggerSection
from casewatch.store.models import Nominal
from casewatch.triggers import load
from casewatch.triggers.rules.notifications import Due, dues
from casewatch.triggers.snapshot import NominalFacts, NotificationHistory

NotificationDue = Due


def next_notification_due(
    nominal: NominalFacts, history: NotificationHistory, clocks: TriggerSection
) -> NotificationDue | None:
    """The earliest notification owed; None when not registered or nothing is on record."""
    owed = dues(nominal, history, clocks)
    return min(owed, key=lambda due: due.due_on) if owed else None


async def next_due_for(
    session: AsyncSession, nominal: Nominal, clocks: TriggerSection
) -> NotificationDue | None:
    facts = NominalFacts(
        visor_ref=nominal.visor_ref, team=nominal.team, offender_manager=nominal.offender_manager,
        registered=nominal.registered, no_fixed_abode=nominal.no_fixed_abode,
        release_date=nominal.release_date, last_notification_on=nominal.last_notification_on,
        mappa_level=nominal.mappa_level, area=nominal.area,
    )
    return next_notification_due(facts, await load.history(session, nominal.visor_ref), clocks)
