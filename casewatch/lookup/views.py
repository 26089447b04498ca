"""What a lookup returns: typed, already filtered for the requester."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from casewatch.lookup.due import NotificationDue


@dataclass(frozen=True)
class OfficerContact:
    officer_id: str
    name: str  # empty when the manager is not in the directory (a probation officer, say)
    email: str
    slack_user_id: str
    team: str


@dataclass(frozen=True)
class MarkerView:
    code: str
    label: str
    restricted: bool


@dataclass(frozen=True)
class LicenceView:
    on_licence: bool
    licence_expiry: date | None
    # An open recall: the licence is revoked and the nominal is unlawfully at large until returned.
    recalled: bool
    recall_type: str | None
    recall_issued_at: datetime | None
    returned_at: datetime | None  # of the latest recall, when it has ended

    @property
    def unlawfully_at_large(self) -> bool:
        return self.recalled


@dataclass(frozen=True)
class AlertLine:
    alert_id: str
    kind: str
    severity: str
    state: str
    visor_ref: str
    team: str
    summary: str
    owner: str | None
    due_at: datetime | None
    opened_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None


@dataclass(frozen=True)
class ActionLine:
    action_id: str
    visor_ref: str
    summary: str
    owner: str
    due_on: date
    overdue: bool


@dataclass(frozen=True)
class OrderView:
    """An active court order and its prohibitions (order.upsert)."""

    order_id: str
    kind: str  # shpo, sro, notification_order, foreign_travel_order, other
    made_on: date
    expires_on: date | None  # None: until further order
    prohibitions: tuple[str, ...]


@dataclass(frozen=True)
class PersonalView:
    """What an officer at an incident may need that is personal data (issue 15): only for roles
    cleared for it (lookup.flags), only in the ephemeral answer; never in a channel, an email, an
    alert, the audit log or a log line."""

    home_address: str | None
    licence_conditions: tuple[str, ...]
    exclusion_zones: tuple[str, ...]
    orders: tuple[OrderView, ...]  # active and not past their expiry date, soonest to expire first


@dataclass(frozen=True)
class FlagsView:
    visor_ref: str
    surname: str
    forenames: str
    date_of_birth: date
    pnc_id: str | None
    category: str
    mappa_level: int | None
    risk_level: str
    registered: bool
    no_fixed_abode: bool
    next_notification: NotificationDue | None
    licence: LicenceView
    markers: tuple[MarkerView, ...]
    restricted_included: bool  # the requester is cleared: restricted markers are in `markers`
    lead_agency: str
    team: str
    offender_manager: OfficerContact
    open_alerts: tuple[AlertLine, ...]
    matched_alias: str | None = None  # the alias (as recorded) a name search found them by
    # Home visits (rules.visits): the newest visit.recorded, and the next visit's due day (None:
    # none owed: no routine visits, no date to count from, or detained).
    last_visit_on: date | None = None
    next_visit_due: date | None = None
    description: str | None = None  # appearance, for identification at an incident
    # Address, licence conditions, exclusion zones and active court orders: None when the
    # requester's roles may not see them (then they are not even read).
    personal: PersonalView | None = None


@dataclass(frozen=True)
class Candidate:
    visor_ref: str
    surname: str
    forenames: str
    date_of_birth: date
    matched_alias: str | None = None  # the alias (as recorded) a name search found them by


@dataclass(frozen=True)
class TasksView:
    scope: str  # "own" or "team"
    team: str
    alerts: tuple[AlertLine, ...]
    actions: tuple[ActionLine, ...]
    more_alerts: int  # not listed (beyond the limit)
    more_actions: int
