"""The nominal.upsert fields an extract's columns can fill, and how a cell becomes each one's value
(casewatch.model.events.NominalUpsert; shared/contract.md)."""

from __future__ import annotations

from enum import Enum


class Kind(Enum):
    TEXT = "text"  # passed on as it is (a value map may translate it)
    CODE = "code"  # one of a fixed set of values (a value map translates the extract's codes)
    LEVEL = "level"  # MAPPA level: 1, 2, 3 or none
    BOOL = "bool"
    DATE = "date"  # parsed with a strptime format
    INT = "int"
    LIST = "list"  # a list of strings, split on a separator
    MARKERS = "markers"  # a list of marker codes, split on a separator, looked up in [markers]


FIELDS: dict[str, Kind] = {
    "surname": Kind.TEXT,
    "forenames": Kind.TEXT,
    "date_of_birth": Kind.DATE,
    "category": Kind.CODE,
    "mappa_level": Kind.LEVEL,
    "registered": Kind.BOOL,
    "risk_level": Kind.CODE,
    "lead_agency": Kind.CODE,
    "team": Kind.TEXT,
    "offender_manager": Kind.TEXT,
    "area": Kind.TEXT,
    "on_licence": Kind.BOOL,
    "no_fixed_abode": Kind.BOOL,
    "last_notification_on": Kind.DATE,
    "markers": Kind.MARKERS,
    "pnc_id": Kind.TEXT,
    "crn": Kind.TEXT,
    "noms_number": Kind.TEXT,
    "release_date": Kind.DATE,
    "licence_expiry": Kind.DATE,
    "aliases": Kind.LIST,
    "relevant_date": Kind.DATE,
    "notification_ends_on": Kind.DATE,
    "home_address": Kind.TEXT,
    "visit_every_days": Kind.INT,
    "licence_conditions": Kind.LIST,
    "exclusion_zones": Kind.LIST,
    "description": Kind.TEXT,
}

# Fields an upsert must carry (NominalUpsert has no default for them). An empty cell is a row
# error for those not in NULLABLE.
REQUIRED = (
    "surname", "forenames", "date_of_birth", "category", "mappa_level", "registered", "risk_level",
    "lead_agency", "team", "offender_manager", "area", "on_licence", "no_fixed_abode",
    "last_notification_on", "markers",
)
# An empty cell means "none" (null), "" (forenames) or an empty list.
NULLABLE = frozenset(FIELDS) - {
    "surname", "date_of_birth", "category", "registered", "risk_level", "lead_agency", "team",
    "offender_manager", "area", "on_licence", "no_fixed_abode",
}
# Optional fields left out of an upsert when they hold nothing (so an upsert names only what the
# model knows, and an absent field means the same as null or an empty list).
OPTIONAL = frozenset(FIELDS) - frozenset(REQUIRED)

CODES: dict[str, tuple[str, ...]] = {
    "category": ("1", "2", "3", "4"),
    "risk_level": ("low", "medium", "high", "very_high"),
    "lead_agency": ("police", "probation", "prison", "yot"),
}

# Cells read as booleans when the mapping gives no [values.<field>] of its own.
DEFAULT_BOOLEANS: dict[str, bool] = {
    "Y": True, "N": False, "Yes": True, "No": False, "YES": True, "NO": False,
    "true": True, "false": False, "TRUE": True, "FALSE": False, "1": True, "0": False,
}
# The MAPPA level cells read when there is no [values.mappa_level].
DEFAULT_LEVELS: dict[str, int | None] = {"1": 1, "2": 2, "3": 3, "": None}

# What a value map may name for "no MAPPA level" (TOML has no null).
NO_LEVEL = "none"

# The columns that are not upsert fields.
VISOR_REF = "visor_ref"
RATIONALE = "mappa_rationale"  # the reason for a level change (mappa.level_changed rationale)
SPECIAL = (VISOR_REF, RATIONALE)

# The columns whose cells may hold a line break (a quoted cell across lines): those whose events
# field is free text that accepts "\n" (casewatch.model.events: Address, Description, Condition,
# Zone, Rationale). A line break in any other mapped column is refused by the events validation, so
# a row across lines that puts one there is most likely a stray quote (integrations.snapshot.reader).
MULTILINE = frozenset({"home_address", "description", "licence_conditions", "exclusion_zones", RATIONALE})
