"""What applying one event to the case store did (casewatch.ingest.apply): the input of the
event-driven rules (casewatch.triggers.dispatch)."""

from __future__ import annotations

from dataclasses import dataclass

from casewatch.model.events import Envelope
from casewatch.store.models import LevelChange, RiskChange


@dataclass(frozen=True)
class Applied:
    envelope: Envelope  # the validated event, with typed data (its id is the stored event's)
    # Older than the state already held (an out-of-order nominal.upsert): kept, changed nothing.
    stale: bool = False
    # A MAPPA level change this event caused (from mappa.level_changed or nominal.upsert).
    level_change: LevelChange | None = None
    # A mappa.level_changed that described a change already recorded from a nominal.upsert: its
    # rationale went onto that earlier record (no second change, no second set of alerts).
    rationale_for: LevelChange | None = None
    # A change of risk level, MAPPA category or area this nominal.upsert recorded (a known
    # nominal's, not its first upsert; rules.risk).
    risk_change: RiskChange | None = None

    @property
    def event_id(self) -> str:
        return self.envelope.id
