"""How a border-alert report is read: a TOML template naming, for each field, where it is (the
subject or the plain-text body) and a regular expression with a named group `value`, plus the
date-time formats, the direction words and the expected senders.

The real IEA/Border Force report format is not public (docs/feeds/mail.md): DEFAULT_TEMPLATE is an
inferred layout, and a force writes its own template from a real report.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

FIELDS = (
    "visor_ref", "port", "direction", "checked_at",
    # Only to find the nominal when the report has no ViSOR reference; never stored or logged.
    "surname", "forenames", "date_of_birth",
)
# Fields a report may carry that casewatch never reads (data minimisation): a template naming one
# is refused rather than silently ignored.
NOT_READ = {"passport_number": "the passport number is not used to match, so it is not read"}
REQUIRED = ("port", "direction", "checked_at")
MAX_PATTERN = 1000

DEFAULT_TEMPLATE = """\
# casewatch border-alert template: the built-in default (docs/feeds/mail.md). The layout is
# inferred, not confirmed: write your own from a real report and name it in [inbound_mail] template.

# From addresses a report may come from ([inbound_mail] allowed_senders, when set, wins;
# both empty: any sender).
senders = []
# Times written without an offset are in this zone.
timezone = "Europe/London"
# strptime formats, tried in order.
datetime_formats = ["%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S%z"]
date_formats = ["%d/%m/%Y", "%Y-%m-%d"]

# The words the report uses for each direction (compared case-insensitively, whole value).
[directions]
inbound = ["arrival", "arrived", "arriving", "inbound", "entry", "in"]
outbound = ["departure", "departed", "departing", "outbound", "exit", "embarkation", "out"]

# Each field: where = "subject" or "body"; pattern = a regular expression with a group named
# "value", searched in that text (the same value found twice is fine; two different values is
# not). A field with no pattern is not read.
[fields.visor_ref]
where = "body"
pattern = '(?im)^[ \\t]*ViSOR[ \\t]+(?:reference|ref\\.?|number|no\\.?)[ \\t]*:[ \\t]*(?P<value>[^ \\t\\r\\n]{1,64})[ \\t]*$'

[fields.port]
where = "body"
pattern = '(?im)^[ \\t]*(?:port|location|place)(?:[ \\t]+of[ \\t]+check)?[ \\t]*:[ \\t]*(?P<value>[^\\r\\n]{1,100}?)[ \\t]*$'

[fields.direction]
where = "body"
pattern = '(?im)^[ \\t]*(?:direction|movement)(?:[ \\t]+of[ \\t]+travel)?[ \\t]*:[ \\t]*(?P<value>[A-Za-z]{1,20})[ \\t]*$'

[fields.checked_at]
where = "body"
pattern = '(?im)^[ \\t]*(?:date/time|date[ \\t]+and[ \\t]+time|time)[ \\t]+of[ \\t]+check[ \\t]*:[ \\t]*(?P<value>[0-9][0-9:/ T+-]{9,30}?)[ \\t]*$'

[fields.surname]
where = "body"
pattern = '(?im)^[ \\t]*(?:surname|family[ \\t]+name)[ \\t]*:[ \\t]*(?P<value>[^\\r\\n]{1,200}?)[ \\t]*$'

[fields.forenames]
where = "body"
pattern = '(?im)^[ \\t]*(?:forenames?|given[ \\t]+names?)[ \\t]*:[ \\t]*(?P<value>[^\\r\\n]{1,200}?)[ \\t]*$'

[fields.date_of_birth]
where = "body"
pattern = '(?im)^[ \\t]*(?:date[ \\t]+of[ \\t]+birth|DOB)[ \\t]*:[ \\t]*(?P<value>[0-9][0-9/-]{7,9})[ \\t]*$'
"""  # noqa: E501


class TemplateError(ValueError):
    """The template cannot be used; the message names the key."""


@dataclass(frozen=True)
class FieldRule:
    where: Literal["subject", "body"]
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class Template:
    fields: dict[str, FieldRule]
    timezone: ZoneInfo
    datetime_formats: tuple[str, ...]
    date_formats: tuple[str, ...]
    directions: dict[str, str]  # casefolded word -> "inbound" | "outbound"
    senders: frozenset[str] = field(default_factory=frozenset)  # lower-case addresses

    def parse_datetime(self, text: str) -> datetime | None:
        for fmt in self.datetime_formats:
            try:
                value = datetime.strptime(text, fmt)
            except ValueError:
                continue
            return value if value.tzinfo is not None else value.replace(tzinfo=self.timezone)
        return None

    def parse_date(self, text: str) -> datetime | None:
        for fmt in self.date_formats:
            try:
                return datetime.strptime(text, fmt)
            except ValueError:
                continue
        return None


def _strings(data: dict[str, Any], key: str, default: list[str]) -> tuple[str, ...]:
    value = data.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TemplateError(f"{key}: must be a list of strings")
    return tuple(value)


def parse_template(text: str, origin: str = "template") -> Template:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{origin}: not valid TOML: {exc}") from exc
    unknown = set(data) - {"senders", "timezone", "datetime_formats", "date_formats", "directions", "fields"}
    if unknown:
        raise TemplateError(f"{origin}: unknown keys {sorted(unknown)}")
    try:
        zone = ZoneInfo(str(data.get("timezone", "Europe/London")))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TemplateError(f"{origin}: timezone: unknown time zone") from exc
    raw_fields = data.get("fields", {})
    if not isinstance(raw_fields, dict):
        raise TemplateError(f"{origin}: fields: must be a table")
    rules: dict[str, FieldRule] = {}
    for name, spec in raw_fields.items():
        if name in NOT_READ:
            raise TemplateError(f"{origin}: fields.{name}: {NOT_READ[name]}; remove it")
        if name not in FIELDS:
            raise TemplateError(f"{origin}: fields.{name}: unknown field (known: {', '.join(FIELDS)})")
        if not isinstance(spec, dict) or set(spec) - {"where", "pattern"}:
            raise TemplateError(f"{origin}: fields.{name}: must hold only where and pattern")
        where, pattern = spec.get("where", "body"), spec.get("pattern")
        if where not in ("subject", "body"):
            raise TemplateError(f"{origin}: fields.{name}.where: must be \"subject\" or \"body\"")
        if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN:
            raise TemplateError(f"{origin}: fields.{name}.pattern: must be 1 to {MAX_PATTERN} characters")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise TemplateError(f"{origin}: fields.{name}.pattern: not a regular expression: {exc}") from exc
        if "value" not in compiled.groupindex:
            raise TemplateError(f"{origin}: fields.{name}.pattern: needs a group named value: (?P<value>...)")
        rules[name] = FieldRule(where, compiled)
    missing = [name for name in REQUIRED if name not in rules]
    if missing:
        raise TemplateError(f"{origin}: fields: {', '.join(missing)} must be given")
    if "visor_ref" not in rules and not {"surname", "date_of_birth"} <= set(rules):
        raise TemplateError(f"{origin}: fields: visor_ref, or surname and date_of_birth, must be given")
    directions_table = data.get("directions", {})
    if not isinstance(directions_table, dict) or set(directions_table) - {"inbound", "outbound"}:
        raise TemplateError(f"{origin}: directions: only inbound and outbound lists")
    directions: dict[str, str] = {}
    for direction in ("inbound", "outbound"):
        for word in _strings(directions_table, direction, [direction]):
            folded = word.casefold()
            if directions.get(folded, direction) != direction:
                raise TemplateError(f"{origin}: directions: {word!r} is both inbound and outbound")
            directions[folded] = direction
    senders = _strings(data, "senders", [])
    return Template(
        fields=rules,
        timezone=zone,
        datetime_formats=_strings(data, "datetime_formats", ["%Y-%m-%dT%H:%M:%S%z"]),
        date_formats=_strings(data, "date_formats", ["%Y-%m-%d"]),
        directions=directions,
        senders=frozenset(s.lower() for s in senders),
    )


def load_template(path: str | Path | None) -> Template:
    """The template at `path`, or the built-in default when `path` is empty or None."""
    if not path:
        return parse_template(DEFAULT_TEMPLATE, "built-in template")
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"{file}: cannot be read: {exc.strerror}") from exc
    return parse_template(text, str(file))
