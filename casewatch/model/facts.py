"""Case state as the rules see it: plain frozen values, loaded from the store by triggers.load.

Only what the rules need is carried (no names, dates of birth or markers), so nothing personal
can leak from a rule into an alert summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple


@dataclass(frozen=True)
class NominalFacts:
    visor_ref: str
    team: str
    offender_manager: str
    registered: bool = True
    no_fixed_abode: bool = False
    release_date: date | None = None
    last_notification_on: date | None = None  # as ViSOR last recorded it (nominal.upsert)
    mappa_level: int | None = None
    area: str = ""
    # SOA 2003 s.82(6): the conviction, finding or caution that began the requirements; the
    # initial notification (s.83(1)) runs from it.
    relevant_date: date | None = None
    # SOA 2003 s.82(1): the last day of the notification period; None: indefinite.
    notification_ends_on: date | None = None
    risk_level: str = ""  # "low", "medium", "high", "very_high" ("" in facts built by hand)
    category: str = ""  # MAPPA category "1" to "4"
    visit_every_days: int | None = None  # the RMP's home-visit frequency; None: the config default

    def subject_on(self, day: date) -> bool:
        """Whether the nominal is subject to the notification requirements on `day`: registered
        (not a MAPPA category 2-4 nominal or PDP who is no RSO) and within the notification
        period (SOA 2003 s.80(1), s.82(1): the last day is notification_ends_on)."""
        return self.registered and (self.notification_ends_on is None or day <= self.notification_ends_on)


# The notifications that satisfy the initial requirement and restart the periodic clocks: those
# under Sexual Offences Act 2003 s.83(1), s.84(1) and s.85(1) (s.85(2)). A weekly notification is
# the s.85(1) notification of a person with no sole or main residence (s.85(5)(a), SI 2012/1876),
# so it restarts the weekly clock and the year alike. Travel and return notifications (s.86) are
# not among them and restart neither. The one list: ingest, the scan and /flags all read it.
FULL_NOTIFICATION_KINDS = ("initial", "periodic", "change", "weekly")


# What a change notification or a change.detected is about (contract v2; SOA 2003 s.84(1) and
# SI 2012/1876). "release" is s.84(1)(d); "no_fixed_abode" is ceasing to have a home address.
CHANGE_WHATS = (
    "name", "home_address", "other_address", "child_household", "bank_card", "passport_id",
    "no_fixed_abode", "release",
)


@dataclass(frozen=True)
class DetentionFacts:
    """One change of custody as stored: a detention.started (started=True, with its kind), a
    detention.ended (started=False), or a recall return (started=True, kind "recall": a recalled
    nominal back in custody is serving a sentence, SOA 2003 s.85(4)(b))."""

    on: date  # started_on / ended_on / the local date of returned_at
    started: bool
    kind: str = ""  # "remand", "sentence", "hospital", "recall" for a start; "" for an end
    event_id: str = ""


@dataclass(frozen=True)
class ChangeDetected:
    """A change.detected: a change learned from another source, which the nominal must notify
    (SOA 2003 s.84(1))."""

    what: str
    changed_on: date
    event_id: str
    source: str = ""


class ChangeNotified(NamedTuple):
    """A notification.received of kind "change" (s.84(1)); `what`/`changed_on` are optional in
    the contract (None: not given)."""

    notified_on: date
    what: str | None = None
    changed_on: date | None = None
    event_id: str = ""


class NotificationHistory(NamedTuple):  # a tuple: a scan builds one per registered nominal
    """The nominal's notifications received and what moves their clocks, reduced to what the
    rules need. Every field but last_full_on is loaded only for the nominals that have any."""

    # Newest notification of a FULL_NOTIFICATION_KINDS kind: these satisfy the initial
    # requirement and restart the periodic and weekly clocks (Sexual Offences Act 2003 ss.83-85).
    last_full_on: date | None = None
    # Custody changes, in no particular order (s.83(6), s.85(3)-(4)).
    detentions: tuple[DetentionFacts, ...] = ()
    # change.detected events (s.84(1)), and the change notifications that may answer them.
    detected: tuple[ChangeDetected, ...] = ()
    changes: tuple[ChangeNotified, ...] = ()
    # notified_on of each "return" notification (s.86, SI 2004/1220).
    returns_notified: tuple[date, ...] = ()
    # The nominal's trips and border checks: when they were abroad (s.83(6), s.85(4)(d)) and
    # when they came back from a notified trip (the return notification).
    travels: tuple[TravelFacts, ...] = ()
    border_checks: tuple[BorderCheckFacts, ...] = ()
    # Local days the nominal is known to have been at liberty: each recall issued (only a person
    # out on licence is recalled). An open custody period ends at the first one after it began.
    at_liberty: tuple[date, ...] = ()


@dataclass(frozen=True)
class TravelFacts:
    event_id: str
    visor_ref: str
    departure_on: date
    return_on: date | None  # None: open-ended
    destination: str
    notified_at: datetime  # when the nominal gave notice (travel.notified notified_at, else occurred_at)
    departure_at: datetime | None = None  # the intended departure, when the notice gives the time
    # The source's id of the trip: a later notification with the same trip_id amends the trip.
    # None: the notification is a trip of its own.
    trip_id: str | None = None
    cancelled: bool = False  # a travel.cancelled names the trip: it matches nothing

    @property
    def trip(self) -> str:
        """The trip this notification is about (its trip_id, else its own event id)."""
        return f"trip:{self.trip_id}" if self.trip_id is not None else f"event:{self.event_id}"


@dataclass(frozen=True)
class BorderCheckFacts:
    event_id: str
    visor_ref: str
    port: str
    direction: str  # "inbound" or "outbound"
    checked_at: datetime


@dataclass(frozen=True)
class ActionFacts:
    action_id: str
    visor_ref: str
    owner: str
    due_on: date
    status: str  # "open" or "done"
    nominal_team: str | None = None  # None: the nominal is not (yet) known
    owner_team: str | None = None  # the owner's team in the officer directory, if listed


@dataclass(frozen=True)
class LevelChangeFacts:
    event_id: str
    visor_ref: str
    from_level: int | None
    to_level: int | None
    rationale: str
    changed_at: datetime
    recorded_by: str = ""


@dataclass(frozen=True)
class RecallFacts:
    event_id: str
    visor_ref: str
    recall_type: str  # "standard", "fixed_term", "emergency"
    issued_at: datetime
    returned_at: datetime | None = None
    emergency: bool = False  # probation's emergency flag, or recall_type "emergency"


@dataclass(frozen=True)
class RiskChangeFacts:
    """A nominal.upsert that changed a known nominal's risk level, MAPPA category or area (not its
    first upsert). Each pair is filled only when that one changed: both None means unchanged."""

    event_id: str
    visor_ref: str
    from_risk: str | None
    to_risk: str | None
    from_category: str | None
    to_category: str | None
    from_area: str | None
    to_area: str | None
    changed_at: datetime


@dataclass(frozen=True)
class MeetingFacts:
    """A level 2 or 3 MAPP meeting (meeting.held), as last updated."""

    meeting_id: str
    visor_ref: str
    held_on: date
    level: int  # 2 or 3
    minutes_on_visor_on: date | None  # None: the minutes are not on ViSOR yet


@dataclass(frozen=True)
class OrderFacts:
    """A court order (order.upsert), as last updated. Prohibitions are personal data: /flags may
    show them to cleared roles; alert summaries never carry them."""

    order_id: str
    visor_ref: str
    kind: str  # shpo, sro, notification_order, foreign_travel_order, other
    made_on: date
    expires_on: date | None
    status: str  # active, discharged, expired
    prohibitions: tuple[str, ...] = ()
