"""What a domain event means for casewatch, and the events it becomes (the table in
docs/feeds/probation.md).

Two steps, so a redelivery is recognised before the stored state is read: `interpret` turns a
readable domain event into an intent (or says why it is not for us), from the event alone;
`to_envelopes` turns an intent and the nominal it names into our event envelopes (plain dicts for
casewatch.ingest.schema.parse_envelopes), or says there is nothing to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from casewatch.config.probation import ProbationSection
from integrations.probation.envelope import DomainEvent, Unreadable

REGISTRATION_ADDED = "probation-case.registration.added"
REGISTRATION_UPDATED = "probation-case.registration.updated"
REGISTRATION_DEREGISTERED = "probation-case.registration.deregistered"
REGISTRATION_DELETED = "probation-case.registration.deleted"
REGISTRATION_TYPES = (
    REGISTRATION_ADDED, REGISTRATION_UPDATED, REGISTRATION_DEREGISTERED, REGISTRATION_DELETED,
)
REGISTRATION_ENDS = (REGISTRATION_DEREGISTERED, REGISTRATION_DELETED)
PRISONER_RELEASED = "prison-offender-events.prisoner.released"
PRISONER_RECEIVED = "prison-offender-events.prisoner.received"
# The source named in what casewatch records (events.source, level changes' recorded_by).
SOURCE = "probation"


def known_types(settings: ProbationSection) -> frozenset[str]:
    """The event types this feed maps: also the only values of the metrics' event_type label
    besides "other" (a sender cannot grow the label set)."""
    mapped = (*REGISTRATION_TYPES, PRISONER_RELEASED, PRISONER_RECEIVED, *settings.recall_event_types)
    return frozenset(mapped)


@dataclass(frozen=True)
class LevelIntent:
    to_level: int | None  # None: no longer managed under MAPPA
    category: str | None  # "1".."4" when the event says
    registration_id: str | None
    # On a deregistration or deletion: the level of the registration that ended, when its
    # registrationLevelCode is a configured one (how it is matched to the stored level).
    ended_level: int | None = None


@dataclass(frozen=True)
class RecallIntent:
    recall_type: str


@dataclass(frozen=True)
class ReleaseIntent:
    ended_on: date


@dataclass(frozen=True)
class ReturnIntent:
    pass


Intent = LevelIntent | RecallIntent | ReleaseIntent | ReturnIntent


@dataclass(frozen=True)
class Ignored:
    """Read, and not for casewatch: `reason` is one of a fixed few words (metrics, the reply)."""

    reason: str


def interpret(event: DomainEvent, settings: ProbationSection, tz: ZoneInfo) -> Intent | Ignored:
    """What a readable event of a known type means, from the event alone. Raises Unreadable when
    a field the mapping needs is missing or not what it should be."""
    kind = event.event_type
    if kind in REGISTRATION_TYPES:
        return _registration(event, settings)
    if kind in settings.recall_event_types:
        code = event.code("recallType") or ""
        return RecallIntent(settings.recall_types.get(code, settings.default_recall_type))
    if kind == PRISONER_RELEASED:
        reason = _required(event, "reason")
        if reason not in settings.release_reasons:
            return Ignored("not_a_release")
        return ReleaseIntent(event.occurred_at.astimezone(tz).date())
    if kind == PRISONER_RECEIVED:
        reason = _required(event, "reason")
        movement = event.code("nomisMovementReasonCode")
        if reason == "RECALL" or (reason == "ADMISSION" and movement in settings.recall_movement_reasons):
            return ReturnIntent()
        return Ignored("not_a_recall_return")
    raise AssertionError("interpret is only called for known types")


def _required(event: DomainEvent, key: str) -> str:
    value = event.code(key)
    if value is None:
        raise Unreadable(f"additionalInformation.{key} is missing")
    return value


def _registration(event: DomainEvent, settings: ProbationSection) -> LevelIntent | Ignored:
    if _required(event, "registerTypeCode") not in settings.mappa_register_types:
        return Ignored("not_mappa")
    registration_id = event.code("registrationId")
    category_code = event.code("registrationCategoryCode")
    category = settings.category_codes.get(category_code) if category_code else None
    if event.event_type in REGISTRATION_ENDS:
        ended_code = event.info.get("registrationLevelCode")
        ended_level = settings.level_codes.get(ended_code) if ended_code else None
        return LevelIntent(None, category, registration_id, ended_level)
    level_code = _required(event, "registrationLevelCode")
    if level_code not in settings.level_codes:
        raise Unreadable("additionalInformation.registrationLevelCode is not a configured MAPPA level code")
    return LevelIntent(settings.level_codes[level_code], category, registration_id)


@dataclass(frozen=True)
class NominalView:
    """What the mapping reads of the nominal an event names."""

    visor_ref: str
    mappa_level: int | None
    category: str
    level_as_of: datetime | None = None  # when the stored level was last said (nominals.level_as_of)
    # The registrationId of the probation registration the stored level came from, when it came
    # from one (read back from its level change's rationale); None: from ViSOR or not known.
    level_registration: str | None = None


def to_envelopes(
    intent: Intent, event: DomainEvent, nominal: NominalView, event_id: str
) -> list[dict[str, Any]] | Ignored:
    """Our event envelopes for this intent about this nominal (ids from `event_id`, derived from
    the domain event, so a redelivery is a duplicate), or why there is nothing to record."""
    occurred_at = event.occurred_at.isoformat().replace("+00:00", "Z")
    base = {"id": event_id, "occurred_at": occurred_at, "visor_ref": nominal.visor_ref}
    match intent:
        case LevelIntent() as level:
            nothing = _nothing_to_record(level, event, nominal)
            if nothing is not None:
                return nothing
            data = {
                "from_level": nominal.mappa_level,
                "to_level": level.to_level,
                "rationale": _rationale(event, level, nominal),
                "recorded_by": SOURCE,
            }
            return [{**base, "type": "mappa.level_changed", "data": data}]
        case RecallIntent() as recall:
            data = {"recall_type": recall.recall_type, "issued_at": occurred_at}
            return [{**base, "type": "recall.issued", "data": data}]
        case ReleaseIntent() as release:
            return [{**base, "type": "detention.ended", "data": {"ended_on": release.ended_on.isoformat()}}]
        case ReturnIntent():
            return [{**base, "type": "recall.returned", "data": {"returned_at": occurred_at}}]


def _nothing_to_record(level: LevelIntent, event: DomainEvent, nominal: NominalView) -> Ignored | None:
    """Why this registration event changes no level, or None. An event older than the stored
    level would be recorded as a change from a level the nominal did not have then (the queue
    reorders): it is not a change we can state."""
    if nominal.level_as_of is not None and event.occurred_at < nominal.level_as_of:
        return Ignored("older_than_stored")
    if level.to_level == nominal.mappa_level:
        if level.to_level is not None and level.category not in (None, nominal.category):
            # The category is ViSOR's (nominal.upsert): named on a level change, not recorded alone.
            return Ignored("category_only")
        return Ignored("no_change")
    if level.to_level is None and not _ends_the_current_registration(level, nominal):
        return Ignored("not_current_registration")
    return None


def _ends_the_current_registration(level: LevelIntent, nominal: NominalView) -> bool:
    """Whether the registration this deregistration (or deletion) ends is the one the stored
    level came from. nDelius changes a level by ending one registration and adding another, and
    the queue may deliver the end of the old one after the new one: that must not end MAPPA
    management. By registration id when both are known, else by the ended registration's level;
    with neither (nothing to tell them apart) it is taken as the current one."""
    if level.registration_id is not None and nominal.level_registration is not None:
        return level.registration_id == nominal.level_registration
    if level.ended_level is not None:
        return level.ended_level == nominal.mappa_level
    return True


# What _rationale writes, up to the registration id: how a level's registration is read back.
_RATIONALE_REGISTRATION = re.compile(
    r"Probation \(HMPPS domain event [A-Za-z0-9._-]{1,100}, registration ([A-Za-z0-9_-]{1,40})\): "
)


def registration_in(rationale: str, recorded_by: str) -> str | None:
    """The registrationId a level change this feed recorded names, else None."""
    if recorded_by != SOURCE:
        return None
    found = _RATIONALE_REGISTRATION.match(rationale)
    return found.group(1) if found else None


def _rationale(event: DomainEvent, level: LevelIntent, nominal: NominalView) -> str:
    """Names the source and what it said, in codes: no free text of the sender's."""
    where = f"HMPPS domain event {event.event_type}"
    if level.registration_id:
        where += f", registration {level.registration_id}"
    said = f"MAPPA level {level.to_level}" if level.to_level is not None else "MAPPA registration ended"
    if level.category is not None:
        said += f", category {level.category}"
        if level.category != nominal.category:
            said += f" (casewatch has category {nominal.category}: check ViSOR)"
    return f"Probation ({where}): {said}."
