"""`[probation]`: HMPPS probation domain events (contract v2, issue 18; docs/feeds/probation.md)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator

from casewatch.config.sections import Section

_CODE = re.compile(r"[A-Za-z0-9_-]{1,40}")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
RecallType = Literal["standard", "fixed_term", "emergency"]


def _codes(values: Iterable[str], pattern: re.Pattern[str], what: str) -> None:
    for value in values:
        if not pattern.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")


class ProbationSection(Section):
    enabled: bool = Field(
        False,
        description="accept HMPPS domain events at POST /api/v1/probation/events (signed like the "
        "events API, with ingest.secret)",
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, le=2 * 1024 * 1024,
        description="a larger request body is refused with 413 (one SQS message is at most 256 KiB)",
    )
    max_batch: int = Field(
        10, ge=1, le=100,
        description="most domain events one request may carry as a JSON array (an SQS receive "
        "gives at most 10); a larger batch is kept whole for a person",
    )
    team: str = Field(
        "",
        description="the team whose SPOC is told of a domain event that could not be read; empty: "
        "triggers.unmatched_team, else the first team",
    )
    mappa_register_types: list[str] = Field(
        ["MAPP"],
        description="registerTypeCode values of a MAPPA registration (other registrations are ignored)",
    )
    level_codes: dict[str, int] = Field(
        {"M1": 1, "M2": 2, "M3": 3},
        description="registrationLevelCode -> MAPPA level; another code on a MAPPA registration is "
        "kept for a person",
    )
    category_codes: dict[str, str] = Field(
        {"M1": "1", "M2": "2", "M3": "3", "M4": "4"},
        description="registrationCategoryCode -> MAPPA category (named in the level change's rationale)",
    )
    recall_event_types: list[str] = Field(
        ["probation-case.recall.added"],
        description="event types that mean a recall was issued (recall.issued)",
    )
    recall_types: dict[str, RecallType] = Field(
        {"STANDARD": "standard", "FIXED_TERM": "fixed_term", "EMERGENCY": "emergency"},
        description="additionalInformation.recallType -> recall type",
    )
    default_recall_type: RecallType = Field(
        "standard", description="the recall type when the event names none, or one not in recall_types",
    )
    release_reasons: list[str] = Field(
        ["RELEASED"],
        description="prisoner.released reasons that are a release from custody (detention.ended); "
        "transfers, court and temporary absence are not",
    )
    recall_movement_reasons: list[str] = Field(
        ["B", "H", "L", "Y", "24", "ETB", "ETRLR", "ETRRIE"],
        description="NOMIS movement reason codes of an admission on recall (prisoner.received -> "
        "recall.returned)",
    )

    @field_validator("mappa_register_types", "release_reasons", "recall_movement_reasons")
    @classmethod
    def _plain_codes(cls, values: list[str]) -> list[str]:
        _codes(values, _CODE, "a code (letters, digits, '_' or '-')")
        return values

    @field_validator("level_codes")
    @classmethod
    def _levels(cls, values: dict[str, int]) -> dict[str, int]:
        _codes(values, _CODE, "a code (letters, digits, '_' or '-')")
        if any(level not in (1, 2, 3) for level in values.values()):
            raise ValueError("MAPPA levels are 1, 2 or 3")
        return values

    @field_validator("category_codes")
    @classmethod
    def _categories(cls, values: dict[str, str]) -> dict[str, str]:
        _codes(values, _CODE, "a code (letters, digits, '_' or '-')")
        if any(category not in ("1", "2", "3", "4") for category in values.values()):
            raise ValueError('MAPPA categories are "1", "2", "3" or "4"')
        return values

    @field_validator("recall_types")
    @classmethod
    def _recall_codes(cls, values: dict[str, str]) -> dict[str, str]:
        _codes(values, _CODE, "a code (letters, digits, '_' or '-')")
        return values

    @field_validator("recall_event_types")
    @classmethod
    def _event_types(cls, values: list[str]) -> list[str]:
        _codes(values, _EVENT_TYPE, "an event type")
        return values
