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


class NotificationHistory(NamedTuple):  # a tuple: a scan builds one per registered nominal
    """The nominal's notifications received, reduced to what the clocks need."""

    # Newest notification of a FULL_NOTIFICATION_KINDS kind: these satisfy the initial
    # requirement and restart the periodic and weekly clocks (Sexual Offences Act 2003 ss.83-85).
    last_full_on: date | None = None


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
