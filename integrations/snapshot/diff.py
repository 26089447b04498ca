"""Comparing a row with the stored nominal, and the events that say what changed.

What a person would have sent:
- a nominal not stored yet: one nominal.upsert (every field the upsert needs must be mapped);
- a new MAPPA level: one mappa.level_changed (from the stored level, with the rationale column's
  cell), sent before any upsert in the same transaction, so the upsert that follows finds the
  level already in place and records no second change (casewatch.ingest.apply): exactly one
  level-change alert, carrying the rationale;
- any other field changed: one nominal.upsert with the full new state (fields the mapping does
  not cover keep their stored values), whose risk level, category or area change raises the
  risk rule's alerts as any upsert does.

Event ids are derived from the row's new state AND the stored state it was compared with
(including when that state was last set), so a re-run of the same file finds nothing to change,
while a value that goes A -> B -> A -> B over four nights is a new event each time.

An extract older than what casewatch holds (the stored state, or level, was set by an event that
occurred after the extract was taken) sends nothing for what it is older than: the ingest would
keep the newer state anyway, but a level change would still be kept as history (a change that
never happened) and every re-run would send it again. Such a row's outcome is "older".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from casewatch.ingest.plans import plan_for_these_keys
from casewatch.store.models import Marker, Nominal
from integrations.snapshot.convert import Converted
from integrations.snapshot.fields import FIELDS, OPTIONAL, REQUIRED

CHUNK = 500
_NOMINALS = Nominal.metadata.tables[Nominal.__tablename__]
_MARKERS = Marker.metadata.tables[Marker.__tablename__]
_AS_OF = ("visor_ref", "state_as_of", "level_as_of")
_COLUMNS = [c for c in _NOMINALS.columns if c.key in FIELDS or c.key in _AS_OF]
_STORED = [name for name in FIELDS if name in _NOMINALS.columns]  # markers are a table of their own
_ABSENT = {name: None for name in FIELDS if name not in _NOMINALS.columns}


@dataclass(frozen=True)
class Stored:
    state: dict[str, Any]  # every field, as an upsert carries it
    as_of: str  # when the stored state and level were last set (part of the event ids)
    state_as_of: datetime  # occurred_at of the upsert the stored state reflects
    level_as_of: datetime | None  # occurred_at of the event the stored level reflects

    @property
    def team(self) -> str:
        return str(self.state["team"])


async def load_stored(session: AsyncSession, refs: Sequence[str]) -> dict[str, Stored]:
    """The stored state of these nominals, a few queries a CHUNK of references."""
    found: dict[str, Stored] = {}
    wanted = sorted(set(refs))
    await plan_for_these_keys(session)  # the IN lists below, on tables a first import is filling
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        markers: dict[str, list[dict[str, Any]]] = {}
        rows = await session.execute(
            select(_MARKERS.c.visor_ref, _MARKERS.c.code, _MARKERS.c.label, _MARKERS.c.restricted)
            .where(_MARKERS.c.visor_ref.in_(chunk))
            .order_by(_MARKERS.c.id)
        )
        for ref, code, label, restricted in rows:
            markers.setdefault(ref, []).append({"code": code, "label": label, "restricted": bool(restricted)})
        nominals = await session.execute(select(*_COLUMNS).where(_NOMINALS.c.visor_ref.in_(chunk)))
        for row in nominals.mappings():
            state = {name: _plain(row[name]) for name in _STORED}
            state.update(_ABSENT)
            for name in ("aliases", "licence_conditions", "exclusion_zones"):
                state[name] = list(state[name] or ())
            state["markers"] = markers.get(row["visor_ref"], [])
            as_of = f"{_plain(row['state_as_of'])}|{_plain(row['level_as_of'])}"
            found[row["visor_ref"]] = Stored(state, as_of, row["state_as_of"], row["level_as_of"])
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


Outcome = Literal["new", "changed", "unchanged", "older", "bad"]


@dataclass
class Plan:
    outcome: Outcome
    envelopes: list[dict[str, Any]] = field(default_factory=list)
    problems: tuple[str, ...] = ()


def plan(row: Converted, stored: Stored | None, taken: datetime, occurred_at: str) -> Plan:
    """The events that bring the stored nominal to the row's state (none if it is there), for an
    extract taken at `taken` (`occurred_at`, as the events carry it)."""
    if stored is None:
        missing = [name for name in REQUIRED if name not in row.values]
        if missing:
            return Plan("bad", problems=(
                "a nominal not stored yet needs the field(s) " + ", ".join(missing)
                + ", which the mapping has no column for",
            ))
        state = {name: row.values.get(name) for name in FIELDS}
        digest = _digest(row, state, None)
        return Plan("new", [_upsert(row.visor_ref, state, digest, occurred_at)])
    state = {**stored.state, **row.values}
    # The ingest keeps the latest of the stored and the sent date (a notification may be newer
    # than the extract): an older date in the extract is no change.
    notified = "last_notification_on"
    state[notified] = _latest(stored.state[notified], state[notified])
    level_changed = state["mappa_level"] != stored.state["mappa_level"]
    others_changed = any(
        _comparable(name, state[name]) != _comparable(name, stored.state[name])
        for name in FIELDS if name != "mappa_level"
    )
    held = False  # a difference not sent: casewatch holds a newer state than the extract
    if level_changed and stored.level_as_of is not None and stored.level_as_of > taken:
        state["mappa_level"] = stored.state["mappa_level"]
        level_changed, held = False, True
    if others_changed and stored.state_as_of > taken:
        others_changed, held = False, True
    if not level_changed and not others_changed:
        return Plan("older" if held else "unchanged")
    digest = _digest(row, state, stored)
    envelopes: list[dict[str, Any]] = []
    if level_changed:
        data: dict[str, Any] = {"from_level": stored.state["mappa_level"], "to_level": state["mappa_level"]}
        if row.rationale:
            data["rationale"] = row.rationale
        envelopes.append({
            "id": f"snapshot-level-{digest}", "type": "mappa.level_changed", "occurred_at": occurred_at,
            "visor_ref": row.visor_ref, "data": data,
        })
    if others_changed:
        envelopes.append(_upsert(row.visor_ref, state, digest, occurred_at))
    return Plan("changed", envelopes)


def _upsert(ref: str, state: dict[str, Any], digest: str, occurred_at: str) -> dict[str, Any]:
    data = {
        name: value for name, value in state.items()
        if name not in OPTIONAL or value not in (None, [])
    }
    return {
        "id": f"snapshot-upsert-{digest}", "type": "nominal.upsert", "occurred_at": occurred_at,
        "visor_ref": ref, "data": data,
    }


def _digest(row: Converted, state: dict[str, Any], stored: Stored | None) -> str:
    basis = {
        "ref": row.visor_ref, "state": state, "rationale": row.rationale,
        "stored": None if stored is None else [stored.state, stored.as_of],
    }
    text = json.dumps(basis, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def _comparable(name: str, value: Any) -> Any:
    if name == "markers":
        return sorted(json.dumps(m, sort_keys=True) for m in value or [])
    if value == [] or value is None:
        return None
    return value


def _latest(stored: str | None, sent: str | None) -> str | None:
    present = [d for d in (stored, sent) if d is not None]
    return max(present) if present else None
