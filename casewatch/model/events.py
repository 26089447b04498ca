"""The event types: one pydantic model per type's data, one envelope class per type, and their
discriminated union `Envelope` (shared/contract.md, "Events API"; documented in docs/events.md,
and in docs/openapi.yaml by casewatch.api.spec). Parsing a request body is casewatch.ingest.schema.

Strict on purpose: a value of the wrong JSON type is refused rather than coerced ("2" is not a
level, 1 is not a boolean), times must carry an offset, and unknown keys are refused both in the
envelope and in `data`. We store only what we validated, and a mistyped optional field is an
error the sender sees instead of a value silently lost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from casewatch.model.facts import CHANGE_WHATS
from casewatch.model.text_rules import TextKind, text_problem

MAX_LIST = 100  # markers, aliases

# The patterns are matched whole (fullmatch): with re.match, "$" also matches before a final
# "\n", so "VS-D000011\n" passed. Digits are ASCII: "\d" also takes "\u0663" and friends.
VISOR_REF_PATTERN = r"[A-Za-z0-9][A-Za-z0-9/-]{0,31}"
_YEAR = r"(?:19[0-9]{2}|[2-8][0-9]{3}|9000)"
DATE_PATTERN = _YEAR + r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
_ZONE = r"(?:Z|z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
DATETIME_PATTERN = DATE_PATTERN + "T" + _TIME + _ZONE
_VISOR_REF = re.compile(VISOR_REF_PATTERN)
_DATE_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?")
_DATETIME = re.compile(DATETIME_PATTERN)

# ISO 3166-1 alpha-2, officially assigned codes.
COUNTRY_CODES = frozenset(
    """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR
    BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC
    EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK
    HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB
    LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
    NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU
    RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN
    TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW""".split()
)


# --- value types ------------------------------------------------------------------------------


def _fail(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def _parse_date(value: Any) -> date:
    if not isinstance(value, str):
        raise _fail("date_type", "must be a date string YYYY-MM-DD")
    if not _DATE_SHAPE.fullmatch(value):
        raise _fail("date_format", "must be a date YYYY-MM-DD, for example 2026-11-20")
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        raise _fail("date_value", "is not a real calendar date") from None
    if not 1900 <= parsed.year <= 9000:
        raise _fail("date_range", "must be between the years 1900 and 9000")
    return parsed


def _parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _fail("datetime_type", "must be an ISO 8601 date-time string")
    if not _DATETIME.fullmatch(value):
        if _DATETIME_SHAPE.fullmatch(value):
            raise _fail("datetime_naive", "has no timezone: add Z or an offset such as +01:00")
        if _DATE_SHAPE.fullmatch(value[:10]) and not 1900 <= int(value[:4]) <= 9000:
            raise _fail("datetime_range", "must be between the years 1900 and 9000")
        raise _fail(
            "datetime_format",
            "must be an ISO 8601 date-time with an offset, for example 2026-11-20T09:30:00Z "
            "(hours 00-23, at most 6 decimals of a second)",
        )
    try:
        parsed = datetime.fromisoformat(value.upper() if value.endswith("z") else value)
    except ValueError:
        raise _fail("datetime_value", "is not a real date and time") from None
    return parsed.astimezone(UTC)


def _level(value: Any) -> int | None:
    # bool is an int in Python and pydantic's Literal lets True and 2.0 through even when strict.
    if value is None or (type(value) is int and value in (1, 2, 3)):
        return value
    raise _fail("mappa_level", "must be 1, 2, 3 or null")


def _meeting_level(value: Any) -> int:
    # A MAPP meeting is held at level 2 or 3 (level 1 is ordinary agency management).
    if type(value) is int and value in (2, 3):
        return value
    raise _fail("meeting_level", "must be 2 or 3")


def _visit_days(value: Any) -> int:
    if type(value) is int and 1 <= value <= 730:
        return value
    raise _fail("visit_every_days", "must be a whole number of days from 1 to 730")


def _characters(kind: TextKind) -> AfterValidator:
    def check(value: str) -> str:
        problem = text_problem(value, kind)
        if problem is not None:
            raise _fail(*problem)
        return value

    return AfterValidator(check)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise _fail("blank", "must not be blank")
    return value


COMPONENT_KEY = "x-casewatch-component"


def ref(component: str) -> dict[str, str]:
    """A stand-in for a reference to a component of docs/openapi.yaml: casewatch.api.spec turns
    it into a "$ref" (pydantic would try to resolve a "$ref" it did not make itself)."""
    return {COMPONENT_KEY: component}


# The components of docs/openapi.yaml holding the character rules of each kind of text field.
CHARACTER_COMPONENTS = {
    TextKind.IDENTIFIER: "IdentifierCharacters",
    TextKind.NAME: "NameCharacters",
    TextKind.TEXT: "TextCharacters",
}
# JSON Schema patterns are searched, not matched: these say "has a visible character" and
# "neither begins nor ends with a space" (what _not_blank and text_problem also check).
NOT_BLANK_PATTERN = {TextKind.NAME: r"[^ \u00a0]", TextKind.TEXT: r"[^ \t\n\u00a0]"}
TRIMMED_PATTERN = r"^[^ ]([\s\S]*[^ ])?$"


def _text_json(kind: TextKind, min_length: int, max_length: int) -> WithJsonSchema:
    schema: dict[str, Any] = {"type": "string"}
    if min_length:
        schema["minLength"] = min_length
    schema["maxLength"] = max_length
    if kind is TextKind.IDENTIFIER:
        schema["pattern"] = TRIMMED_PATTERN
    elif min_length:
        schema["pattern"] = NOT_BLANK_PATTERN[kind]
    schema["allOf"] = [ref(CHARACTER_COMPONENTS[kind])]
    return WithJsonSchema(schema)


_identifier = _characters(TextKind.IDENTIFIER)
_name = _characters(TextKind.NAME)
_text = _characters(TextKind.TEXT)
_filled = AfterValidator(_not_blank)

# Bounded strings (casewatch.model.text_rules says which characters each kind may hold). Identifiers
# neither begin nor end with a space, so they are never blank.
Name = Annotated[str, Field(min_length=1, max_length=200), _name, _filled, _text_json(TextKind.NAME, 1, 200)]
OptionalName = Annotated[str, Field(max_length=200), _name, _text_json(TextKind.NAME, 0, 200)]
Surname = Annotated[
    str, Field(min_length=1, max_length=100), _name, _filled, _text_json(TextKind.NAME, 1, 100)
]
Place = Annotated[str, Field(min_length=1, max_length=100), _name, _filled, _text_json(TextKind.NAME, 1, 100)]
Code = Annotated[
    str, Field(min_length=1, max_length=32), _identifier, _text_json(TextKind.IDENTIFIER, 1, 32)
]
Id = Annotated[str, Field(min_length=1, max_length=64), _identifier, _text_json(TextKind.IDENTIFIER, 1, 64)]
LongId = Annotated[
    str, Field(min_length=1, max_length=100), _identifier, _text_json(TextKind.IDENTIFIER, 1, 100)
]
EventId = Annotated[
    str, Field(min_length=1, max_length=200), _identifier, _text_json(TextKind.IDENTIFIER, 1, 200)
]
Summary = Annotated[
    str, Field(min_length=1, max_length=2000), _text, _filled, _text_json(TextKind.TEXT, 1, 2000)
]
Rationale = Annotated[str, Field(max_length=5000), _text, _text_json(TextKind.TEXT, 0, 5000)]
SourceText = Annotated[
    str, Field(min_length=1, max_length=100), _text, _filled, _text_json(TextKind.TEXT, 1, 100)
]
# contract v2 (issue 15): what officers at an incident read on /flags (personal data, shown only
# in ephemeral answers).
Address = Annotated[
    str, Field(min_length=1, max_length=300), _text, _filled, _text_json(TextKind.TEXT, 1, 300)
]
Description = Annotated[
    str, Field(min_length=1, max_length=500), _text, _filled, _text_json(TextKind.TEXT, 1, 500)
]
Condition = Annotated[  # a licence condition or a court order's prohibition
    str, Field(min_length=1, max_length=500), _text, _filled, _text_json(TextKind.TEXT, 1, 500)
]
Zone = Annotated[
    str, Field(min_length=1, max_length=200), _text, _filled, _text_json(TextKind.TEXT, 1, 200)
]
MAX_CONDITIONS = 50  # licence conditions, an order's prohibitions
MAX_ZONES = 20


_CRN = re.compile(r"[A-Z][0-9]{6}")
_NOMS_NUMBER = re.compile(r"[A-Z][0-9]{4}[A-Z]{2}")


def _crn(value: str) -> str:
    if not _CRN.fullmatch(value):
        raise _fail("crn", "must be a probation case reference number: a capital letter and 6 digits")
    return value


def _noms_number(value: str) -> str:
    if not _NOMS_NUMBER.fullmatch(value):
        raise _fail("noms_number", "must be a prison number: a capital letter, 4 digits, 2 capital letters")
    return value


def _visor_ref(value: str) -> str:
    """The reference in capitals: one nominal whatever case a sender writes it in, as /flags finds
    it (a recall sent as "vs-0001001" for the nominal held as "VS-0001001" once made a second,
    unmanaged nominal and no "unlawfully at large" flag on the first)."""
    if not _VISOR_REF.fullmatch(value):
        raise _fail(
            "visor_ref",
            "must be 1 to 32 letters, digits, '-' or '/', starting with a letter or digit",
        )
    return canonical_ref(value)


def canonical_ref(value: str) -> str:
    """How a ViSOR reference is stored and matched: in capitals. ASCII only, so that it can run
    before the pattern's check and never makes a refused value pass ("\u00df".upper() is "SS")."""
    return value.upper() if value.isascii() else value


def _country(value: str) -> str:
    if value not in COUNTRY_CODES:
        raise _fail("country", "must be an ISO 3166-1 alpha-2 country code in capitals, e.g. FR")
    return value


IsoDate = Annotated[date, BeforeValidator(_parse_date), WithJsonSchema(ref("Date"))]
IsoDateTime = Annotated[datetime, BeforeValidator(_parse_datetime), WithJsonSchema(ref("DateTime"))]
Level = Annotated[int | None, BeforeValidator(_level), WithJsonSchema(ref("Level"))]
VisorRef = Annotated[str, AfterValidator(_visor_ref), WithJsonSchema(ref("VisorRef"))]
Country = Annotated[str, AfterValidator(_country), WithJsonSchema(ref("CountryCode"))]
Crn = Annotated[
    str, AfterValidator(_crn), WithJsonSchema({"type": "string", "pattern": "^[A-Z][0-9]{6}$"})
]
NomsNumber = Annotated[
    str, AfterValidator(_noms_number),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z][0-9]{4}[A-Z]{2}$"}),
]
MeetingLevel = Annotated[
    int, BeforeValidator(_meeting_level), WithJsonSchema({"type": "integer", "enum": [2, 3]})
]
VisitDays = Annotated[
    int, BeforeValidator(_visit_days), WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 730})
]


class Data(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# --- one model per event type (the table in shared/contract.md) -------------------------------


class MarkerData(Data):
    code: Code
    label: Name
    restricted: bool = False


class NominalUpsert(Data):
    surname: Surname
    forenames: OptionalName
    date_of_birth: IsoDate
    category: Literal["1", "2", "3", "4"]
    mappa_level: Level
    registered: bool
    risk_level: Literal["low", "medium", "high", "very_high"]
    lead_agency: Literal["police", "probation", "prison", "yot"]
    team: Id
    offender_manager: Id
    area: Code
    on_licence: bool
    no_fixed_abode: bool
    last_notification_on: IsoDate | None
    markers: list[MarkerData] = Field(max_length=MAX_LIST)
    pnc_id: Code | None = None
    release_date: IsoDate | None = None
    licence_expiry: IsoDate | None = None
    aliases: list[Name] = Field(default_factory=list, max_length=MAX_LIST)
    # The conviction, finding or caution that began the notification requirements (SOA 2003
    # s.82(6), s.83(1): the initial notification runs from it).
    relevant_date: IsoDate | None = None
    # The end of the notification period (s.82(1)); null: indefinite.
    notification_ends_on: IsoDate | None = None
    # contract v2 (issue 15): for /flags and the home-visit clock.
    home_address: Address | None = None
    visit_every_days: VisitDays | None = None  # the RMP's home-visit frequency
    licence_conditions: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    exclusion_zones: list[Zone] = Field(default_factory=list, max_length=MAX_ZONES)
    description: Description | None = None  # appearance, for officers at an incident
    # contract v2 (issue 18): how probation's domain events name the person.
    crn: Crn | None = None  # probation case reference number
    noms_number: NomsNumber | None = None  # prison number


# What a change notification or a change.detected is about (SOA 2003 s.84(1), SI 2012/1876).
ChangeWhat = Literal[
    "name", "home_address", "other_address", "child_household", "bank_card", "passport_id",
    "no_fixed_abode", "release",
]
assert get_args(ChangeWhat) == CHANGE_WHATS, "ChangeWhat must list facts.CHANGE_WHATS"


def _change_fields_need_kind_change(schema: dict[str, Any]) -> None:
    # `what` and `changed_on` describe a change notification: absent or null for other kinds.
    schema["anyOf"] = [
        {"properties": {"kind": {"const": "change"}}},
        {"properties": {"what": {"type": "null"}, "changed_on": {"type": "null"}}},
    ]


class NotificationReceivedData(Data):
    model_config = ConfigDict(json_schema_extra=_change_fields_need_kind_change)

    kind: Literal["initial", "periodic", "change", "weekly", "travel", "return"]
    notified_on: IsoDate
    # contract v2 (issue 14), for kind "change" only: what changed and when (s.84(1)).
    what: ChangeWhat | None = None
    changed_on: IsoDate | None = None

    @field_validator("what", "changed_on")
    @classmethod
    def _only_for_a_change(cls, value: object, info: ValidationInfo) -> object:
        kind = info.data.get("kind")
        if value is not None and kind is not None and kind != "change":
            raise _fail("change_only", 'is only allowed with kind "change"')
        return value


class TravelNotified(Data):
    departure_on: IsoDate
    return_on: IsoDate | None = None
    destination: Country
    carrier: Place | None = None
    arrival_point: Place | None = None
    # contract v2 (issue 14): when the nominal gave notice (default: the envelope's occurred_at),
    # the intended departure time, and the source's id of the trip (a later notification with
    # the same trip_id amends it; SOA 2003 s.86).
    notified_at: IsoDateTime | None = None
    departure_at: IsoDateTime | None = None
    trip_id: LongId | None = None

    @field_validator("return_on")
    @classmethod
    def _after_departure(cls, value: date | None, info: ValidationInfo) -> date | None:
        departure = info.data.get("departure_on")
        if value is not None and departure is not None and value < departure:
            raise _fail("return_before_departure", "must not be before departure_on")
        return value


class TravelCancelled(Data):
    trip_id: LongId


class BorderAlert(Data):
    port: Place
    direction: Literal["inbound", "outbound"]
    checked_at: IsoDateTime


def _level_pairs(schema: dict[str, Any]) -> None:
    # JSON Schema cannot compare two fields; the allowed (from, to) pairs say "a change".
    levels: list[int | None] = [1, 2, 3, None]
    schema["anyOf"] = [
        {"properties": {"from_level": {"const": a}, "to_level": {"enum": [b for b in levels if b != a]}}}
        for a in levels
    ]


class LevelChanged(Data):
    model_config = ConfigDict(json_schema_extra=_level_pairs)

    from_level: Level
    to_level: Level
    rationale: Rationale = ""
    recorded_by: Id | None = None

    @field_validator("to_level")
    @classmethod
    def _a_change(cls, value: int | None, info: ValidationInfo) -> int | None:
        if "from_level" in info.data and info.data["from_level"] == value:
            raise _fail("no_change", "must differ from from_level")
        return value


class RecallIssued(Data):
    recall_type: Literal["standard", "fixed_term", "emergency"]
    issued_at: IsoDateTime


class RecallReturned(Data):
    returned_at: IsoDateTime


# Remanded or committed to custody, serving a sentence, or detained in a hospital: the
# notification clocks stand still (SOA 2003 s.83(6), s.85(3)-(4)). (Comments, not docstrings:
# a docstring would become the schema's description.)
class DetentionStarted(Data):
    kind: Literal["remand", "sentence", "hospital"]
    started_on: IsoDate


# Released or discharged: a release owes a notification (s.84(1)(d)).
class DetentionEnded(Data):
    ended_on: IsoDate


# A change learned from another source: the nominal owes a change notification for it (s.84(1)).
class ChangeDetectedData(Data):
    what: ChangeWhat
    changed_on: IsoDate
    source: SourceText


class ActionUpsert(Data):
    action_id: LongId
    summary: Summary
    owner: Id
    due_on: IsoDate
    status: Literal["open", "done"]
    source: Literal["mapp_meeting", "rmp", "other"]


class VisitRecorded(Data):
    visited_on: IsoDate


# A level 2 or 3 MAPP meeting; its minutes are due on ViSOR within 5 (level 3) or 10 (level 2)
# working days. A later event with the same meeting_id updates it (the minutes date comes later).
class MeetingHeld(Data):
    meeting_id: LongId
    held_on: IsoDate
    level: MeetingLevel
    minutes_on_visor_on: IsoDate | None = None


# The risk management plan reviewed (at least every 16 weeks by default).
class RmpReviewed(Data):
    reviewed_on: IsoDate


# A court order (SHPO, SRO, notification order, foreign travel order, ...): created or replaced by
# order_id for the nominal.
class OrderUpsert(Data):
    order_id: LongId
    kind: Literal["shpo", "sro", "notification_order", "foreign_travel_order", "other"]
    made_on: IsoDate
    expires_on: IsoDate | None = None
    prohibitions: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    status: Literal["active", "discharged", "expired"]

    @field_validator("expires_on")
    @classmethod
    def _after_made(cls, value: date | None, info: ValidationInfo) -> date | None:
        made = info.data.get("made_on")
        if value is not None and made is not None and value < made:
            raise _fail("expiry_before_made", "must not be before made_on")
        return value


# --- the envelopes: one class per event type, and their union ---------------------------------


class EnvelopeBase(BaseModel):
    """What every event carries. `raw` is the envelope as received (stored in events.data)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    id: EventId
    type: str
    occurred_at: IsoDateTime
    visor_ref: VisorRef
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, value: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        envelope = handler(value)
        if isinstance(value, dict):
            envelope._raw = value
        return envelope

    @property
    def raw(self) -> dict[str, Any]:
        return self._raw


class NominalUpsertEvent(EnvelopeBase):
    type: Literal["nominal.upsert"]
    data: NominalUpsert


class NotificationReceivedEvent(EnvelopeBase):
    type: Literal["notification.received"]
    data: NotificationReceivedData


class TravelNotifiedEvent(EnvelopeBase):
    type: Literal["travel.notified"]
    data: TravelNotified


class TravelCancelledEvent(EnvelopeBase):
    type: Literal["travel.cancelled"]
    data: TravelCancelled


class BorderAlertEvent(EnvelopeBase):
    type: Literal["travel.border_alert"]
    data: BorderAlert


class LevelChangedEvent(EnvelopeBase):
    type: Literal["mappa.level_changed"]
    data: LevelChanged


class RecallIssuedEvent(EnvelopeBase):
    type: Literal["recall.issued"]
    data: RecallIssued


class RecallReturnedEvent(EnvelopeBase):
    type: Literal["recall.returned"]
    data: RecallReturned


class DetentionStartedEvent(EnvelopeBase):
    type: Literal["detention.started"]
    data: DetentionStarted


class DetentionEndedEvent(EnvelopeBase):
    type: Literal["detention.ended"]
    data: DetentionEnded


class ChangeDetectedEvent(EnvelopeBase):
    type: Literal["change.detected"]
    data: ChangeDetectedData


class ActionUpsertEvent(EnvelopeBase):
    type: Literal["action.upsert"]
    data: ActionUpsert


class VisitRecordedEvent(EnvelopeBase):
    type: Literal["visit.recorded"]
    data: VisitRecorded


class MeetingHeldEvent(EnvelopeBase):
    type: Literal["meeting.held"]
    data: MeetingHeld


class RmpReviewedEvent(EnvelopeBase):
    type: Literal["rmp.reviewed"]
    data: RmpReviewed


class OrderUpsertEvent(EnvelopeBase):
    type: Literal["order.upsert"]
    data: OrderUpsert


# A validated event: `match envelope.data` (or isinstance) says which type it is.
Envelope = Annotated[
    NominalUpsertEvent
    | NotificationReceivedEvent
    | TravelNotifiedEvent
    | TravelCancelledEvent
    | BorderAlertEvent
    | LevelChangedEvent
    | RecallIssuedEvent
    | RecallReturnedEvent
    | DetentionStartedEvent
    | DetentionEndedEvent
    | ChangeDetectedEvent
    | ActionUpsertEvent
    | VisitRecordedEvent
    | MeetingHeldEvent
    | RmpReviewedEvent
    | OrderUpsertEvent,
    Field(discriminator="type"),
]
ENVELOPE: TypeAdapter[Envelope] = TypeAdapter(Envelope)


def _type_name(envelope: type[BaseModel]) -> str:
    (name,) = get_args(envelope.model_fields["type"].annotation)
    return str(name)


def _data_model(envelope: type[BaseModel]) -> type[Data]:
    data = envelope.model_fields["data"].annotation
    assert isinstance(data, type) and issubclass(data, Data)
    return data


# Each event type's envelope class and data model, in the order of the union (and of the docs).
EVENT_CLASSES: Mapping[str, type[EnvelopeBase]] = {
    _type_name(envelope): envelope for envelope in get_args(get_args(Envelope)[0])
}
EVENT_TYPES: Mapping[str, type[Data]] = {name: _data_model(c) for name, c in EVENT_CLASSES.items()}


def schema_name(model: type[BaseModel]) -> str:
    """The name of a model's schema in docs/openapi.yaml: NotificationReceivedData ->
    NotificationReceived, EnvelopeModel -> Envelope."""
    return model.__name__.removesuffix("Data").removesuffix("Model")


def _envelope_schema(schema: dict[str, Any]) -> None:
    # The data schema follows the type: one branch per event type.
    schema["properties"]["type"] = {"enum": list(EVENT_TYPES)}
    schema["properties"]["id"]["description"] = "the idempotency key"
    schema["oneOf"] = [
        {"properties": {"type": {"const": name}, "data": ref(schema_name(model))}}
        for name, model in EVENT_TYPES.items()
    ]


# An envelope of any type, its data unchecked: the Envelope schema of docs/openapi.yaml, and what
# reports the problems of an envelope whose type is not one of the union's. (A comment: a
# docstring would become the schema's description.)
class EnvelopeModel(EnvelopeBase):
    model_config = ConfigDict(title="Envelope", json_schema_extra=_envelope_schema)

    data: dict[str, Any]

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in EVENT_TYPES:
            raise _fail("unknown_type", f"unknown event type; known types: {', '.join(EVENT_TYPES)}")
        return value
