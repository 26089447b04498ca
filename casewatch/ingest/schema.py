"""Validation of event envelopes (shared/contract.md, "Events API"). (Issue 2 fills this in.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class FieldError:
    index: int  # position in the batch (0 for a single envelope)
    field: str  # dotted path, e.g. "data.due_on"
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class Envelope:
    """A validated event. `data` holds the validated, typed fields of the event's type
    (dates as `date`, datetimes as aware UTC `datetime`), as a plain dict."""

    id: str
    type: str
    occurred_at: datetime
    visor_ref: str
    data: dict[str, Any]
    raw: dict[str, Any]  # the envelope as received, stored in events.data


def parse_envelopes(raw: Any) -> tuple[list[Envelope], list[FieldError]]:
    """Validate one envelope (a dict) or a batch (a list of up to 1000). Either every envelope is
    valid (errors empty) or the errors list each problem with its index and field."""
    raise NotImplementedError
