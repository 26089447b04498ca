"""Parsing a request body (or an import line) into validated events (casewatch.model.events),
with every problem as a FieldError: its index in the batch, its dotted field path, a message
that never echoes the value.

`parse_envelopes` never raises on any JSON value. A batch is all or nothing. Given the server's
clock (`now`), it also refuses an event said to have happened in the future: one stamped ahead
(a wrong clock, a mistyped year) would otherwise be the nominal's newest state, and every real
later change, being older, would be kept as history and never applied.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from casewatch.model.events import ENVELOPE, Envelope, EnvelopeModel

MAX_BATCH = 1000


@dataclass(frozen=True)
class FieldError:
    index: int  # position in the batch (0 for a single envelope)
    field: str  # dotted path, e.g. "data.due_on"; "" for the body or envelope as a whole
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "list_type": "must be a list",
    "string_unicode": "is not valid Unicode (an unpaired surrogate)",
}
# The union could not pick a type: EnvelopeModel then reports the envelope's problems.
_NO_TYPE = frozenset({"union_tag_invalid", "union_tag_not_found"})


# A key of the sender's that is not a plain short name (newlines, terminal escapes, bidi, 5,000
# characters) is not echoed into the reply or the import's output: it is shown as UNNAMED.
_FIELD_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
UNNAMED = "(unknown key)"


def _path_part(part: int | str) -> str:
    text = str(part)
    return text if isinstance(part, int) or _FIELD_NAME.fullmatch(text) else UNNAMED


def _message(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    message = str(error.get("msg", "is not valid"))
    return message.removeprefix("Value error, ")


def _errors(exc: ValidationError, index: int, *, tagged: bool) -> list[FieldError]:
    """The errors as FieldErrors, the envelope's first and its data's after (so one reply reads
    top down). A union member's errors are located under its tag ("nominal.upsert", "data", ...):
    the tag is not part of the sender's path."""
    found = [
        FieldError(index, ".".join(_path_part(part) for part in e["loc"][tagged:]), _message(e))
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return sorted(found, key=lambda error: error.field.startswith("data."))


def _parse_one(raw: Any, index: int) -> tuple[Envelope | None, list[FieldError]]:
    if not isinstance(raw, dict):
        return None, [FieldError(index, "", "an envelope must be a JSON object")]
    try:
        return ENVELOPE.validate_python(raw), []
    except ValidationError as exc:
        if not any(e["type"] in _NO_TYPE for e in exc.errors()):
            return None, _errors(exc, index, tagged=True)
    try:
        EnvelopeModel.model_validate(raw)
    except ValidationError as exc:
        return None, _errors(exc, index, tagged=False)
    raise AssertionError("an envelope the union refused for its type has a known type")


def parse_envelopes(
    raw: Any, *, now: datetime | None = None, max_ahead_seconds: int = 300
) -> tuple[list[Envelope], list[FieldError]]:
    """Validate one envelope (a dict) or a batch (a list of up to 1000). Either every envelope is
    valid (errors empty) or the errors list each problem with its index and field. With `now`,
    an `occurred_at` more than `max_ahead_seconds` after it is refused too (the events API's and
    every feed's callers pass the clock and `[ingest] max_clock_skew_seconds`)."""
    if isinstance(raw, dict):
        items: list[Any] = [raw]
    elif isinstance(raw, list):
        if not raw:
            return [], [FieldError(0, "", "a batch must hold at least one envelope")]
        if len(raw) > MAX_BATCH:
            return [], [FieldError(0, "", f"a batch holds at most {MAX_BATCH} envelopes, got {len(raw)}")]
        items = raw
    else:
        return [], [FieldError(0, "", "the body must be an envelope (object) or a batch (array)")]
    envelopes: list[Envelope] = []
    errors: list[FieldError] = []
    for index, item in enumerate(items):
        try:
            envelope, problems = _parse_one(item, index)
        except RecursionError:  # absurdly nested input inside a field
            envelope, problems = None, [FieldError(index, "", "nested too deeply")]
        if envelope is not None and now is not None and envelope.occurred_at > now + timedelta(
            seconds=max_ahead_seconds
        ):
            envelope, problems = None, [FieldError(index, "occurred_at", future_message(max_ahead_seconds))]
        errors.extend(problems)
        if envelope is not None:
            envelopes.append(envelope)
    return (envelopes, []) if not errors else ([], errors)


def future_message(max_ahead_seconds: int) -> str:
    return (
        f"is more than {max_ahead_seconds} seconds after the server's clock: an event cannot have "
        "happened in the future (check the sender's clock and the year)"
    )
