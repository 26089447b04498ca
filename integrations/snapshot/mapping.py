"""The mapping file (TOML): which column of the extract fills which nominal.upsert field, and how
its cells read (value maps for codes, date formats, list separators, the marker table, the
file's encoding and delimiter). docs/feeds/snapshot.md documents it with a full sample.

A bad mapping is refused as a whole before any row is read, each problem naming its key.
"""

from __future__ import annotations

import codecs
import tomllib
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from casewatch.model.events import MarkerData
from casewatch.model.text_rules import TextKind, text_problem
from integrations.snapshot.fields import (
    CODES,
    DEFAULT_BOOLEANS,
    DEFAULT_LEVELS,
    FIELDS,
    NO_LEVEL,
    RATIONALE,
    SPECIAL,
    VISOR_REF,
    Kind,
)

DEFAULT_SEPARATOR = "|"
DEFAULT_DATE_FORMAT = "%Y-%m-%d"
MAX_HEADER = 200
_SECTIONS = ("extract", "columns", "date_formats", "separators", "values", "markers")
_EXTRACT_KEYS = ("encoding", "delimiter", "full", "teams", "date_format")
_MAPPED_KINDS = (Kind.TEXT, Kind.CODE, Kind.LEVEL, Kind.BOOL)  # kinds a [values.<field>] may translate
_PROBE_DAY = date(2001, 2, 3)  # day, month and year all differ: a format missing one cannot round-trip


class MappingError(Exception):
    """The mapping cannot be used; the message lists every problem, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Mapping:
    columns: dict[str, str]  # field (or visor_ref, mappa_rationale) -> column header
    encoding: str = "utf-8"
    delimiter: str = ","
    full: bool = False
    teams: tuple[str, ...] = ()  # the teams a full extract covers; () = those its rows name
    date_formats: dict[str, str] = field(default_factory=dict)  # every mapped date field -> format
    separators: dict[str, str] = field(default_factory=dict)  # every mapped list field -> separator
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> cell -> value
    markers: dict[str, MarkerData] = field(default_factory=dict)  # the extract's code -> marker

    @cached_property
    def readers(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        """(field, column, the cells it reads or None) for each mapped upsert field."""
        return [
            (name, column, cell_map(self, name))
            for name, column in self.columns.items() if name not in SPECIAL
        ]


def load_mapping(path: str | Path) -> Mapping:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise MappingError([f"cannot read the mapping file: {exc.strerror or type(exc).__name__}"]) from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise MappingError(["the mapping file is not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingError([f"the mapping file is not valid TOML: {exc}"]) from None
    return parse_mapping(document)


def parse_mapping(document: AnyMapping[str, Any]) -> Mapping:
    problems: list[str] = []
    for key in document:
        if key not in _SECTIONS:
            problems.append(f"{key}: not a known section (known: {', '.join(_SECTIONS)})")
    extract = _table(document, "extract", problems)
    columns = _columns(_table(document, "columns", problems), problems)
    encoding = _encoding(extract, problems)
    delimiter = _delimiter(extract, problems)
    full = extract.get("full", False)
    if not isinstance(full, bool):
        problems.append("extract.full: must be true or false")
        full = False
    teams = _teams(extract, problems)
    for key in extract:
        if key not in _EXTRACT_KEYS:
            problems.append(f"extract.{key}: not a known key (known: {', '.join(_EXTRACT_KEYS)})")
    date_formats = _date_formats(extract, _table(document, "date_formats", problems), columns, problems)
    separators = _separators(_table(document, "separators", problems), columns, problems)
    values = _values(_table(document, "values", problems), problems)
    markers = _markers(_table(document, "markers", problems), problems)
    if "markers" in columns and not markers and "markers" not in problems:
        problems.append("markers: the markers column is mapped, so the marker table must list its codes")
    if problems:
        raise MappingError(problems)
    return Mapping(
        columns=columns, encoding=encoding, delimiter=delimiter, full=bool(full), teams=teams,
        date_formats=date_formats, separators=separators, values=values, markers=markers,
    )


def _table(document: AnyMapping[str, Any], key: str, problems: list[str]) -> dict[str, Any]:
    value = document.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"{key}: must be a table ([{key}])")
        return {}
    return value


def _columns(table: dict[str, Any], problems: list[str]) -> dict[str, str]:
    columns: dict[str, str] = {}
    used: dict[str, str] = {}
    for name, header in table.items():
        key = f"columns.{name}"
        if name not in FIELDS and name not in SPECIAL:
            problems.append(f"{key}: not a nominal.upsert field (see docs/feeds/snapshot.md for the list)")
            continue
        if not isinstance(header, str) or not header.strip() or len(header) > MAX_HEADER:
            problems.append(f"{key}: must be the column's header, 1 to {MAX_HEADER} characters")
            continue
        if (problem := text_problem(header, TextKind.NAME)) is not None:
            problems.append(f"{key}: {problem[1]}")
            continue
        header = header.strip()
        if header in used:
            problems.append(f"{key}: the column is already mapped to columns.{used[header]}")
            continue
        used[header] = name
        columns[name] = header
    if VISOR_REF not in columns and "columns.visor_ref" not in " ".join(problems):
        problems.append("columns.visor_ref: required (the column holding the ViSOR reference)")
    if RATIONALE in columns and "mappa_level" not in columns:
        problems.append(f"columns.{RATIONALE}: needs columns.mappa_level (a rationale is for a level change)")
    return columns


def _encoding(extract: dict[str, Any], problems: list[str]) -> str:
    value = extract.get("encoding", "utf-8")
    if not isinstance(value, str):
        problems.append("extract.encoding: must be a string such as \"utf-8\" or \"cp1252\"")
        return "utf-8"
    try:
        name = codecs.lookup(value).name
    except LookupError:
        problems.append("extract.encoding: not an encoding Python knows (e.g. utf-8, cp1252, latin-1)")
        return "utf-8"
    # Rows are split on bytes: the encoding must write the ASCII delimiter, quote and newline as
    # themselves (UTF-16 and UTF-32 do not).
    if "\n,;\t|\"".encode(name, errors="replace") != b"\n,;\t|\"":
        problems.append(
            "extract.encoding: must be ASCII-compatible (utf-8, cp1252, latin-1, ...), not UTF-16/32"
        )
        return "utf-8"
    return "utf-8" if name == "utf-8-sig" else name


def _delimiter(extract: dict[str, Any], problems: list[str]) -> str:
    value = extract.get("delimiter", ",")
    if (
        not isinstance(value, str) or len(value) != 1 or value in "\"\r\n" or value.isalnum()
        or ord(value) > 127
    ):
        problems.append('extract.delimiter: must be one ASCII punctuation character or "\\t" (not a quote)')
        return ","
    return value


def _teams(extract: dict[str, Any], problems: list[str]) -> tuple[str, ...]:
    value = extract.get("teams", [])
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        problems.append("extract.teams: must be a list of team ids")
        return ()
    for team in value:
        if (problem := text_problem(team, TextKind.IDENTIFIER)) is not None:
            problems.append(f"extract.teams: {problem[1]}")
            return ()
    return tuple(value)


def _date_format(value: Any, key: str, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not value:
        problems.append(f"{key}: must be a strptime format such as \"%d/%m/%Y\"")
        return None
    try:
        round_trip = datetime.strptime(_PROBE_DAY.strftime(value), value).date()
    except ValueError:
        round_trip = None
    if round_trip != _PROBE_DAY:
        problems.append(f"{key}: must be a strptime format with the day, month and year (e.g. \"%d/%m/%Y\")")
        return None
    return value


def _date_formats(
    extract: dict[str, Any], table: dict[str, Any], columns: dict[str, str], problems: list[str]
) -> dict[str, str]:
    default = _date_format(extract.get("date_format", DEFAULT_DATE_FORMAT), "extract.date_format", problems)
    formats: dict[str, str] = {}
    for name, value in table.items():
        if FIELDS.get(name) is not Kind.DATE:
            problems.append(f"date_formats.{name}: not a date field")
            continue
        if (checked := _date_format(value, f"date_formats.{name}", problems)) is not None:
            formats[name] = checked
    for name in columns:
        if FIELDS.get(name) is Kind.DATE and name not in formats and default is not None:
            formats[name] = default
    return formats


def _separators(table: dict[str, Any], columns: dict[str, str], problems: list[str]) -> dict[str, str]:
    separators: dict[str, str] = {}
    for name, value in table.items():
        if FIELDS.get(name) not in (Kind.LIST, Kind.MARKERS):
            problems.append(f"separators.{name}: not a list field (aliases, markers, licence_conditions, "
                            "exclusion_zones)")
            continue
        if not isinstance(value, str) or not value or value.isspace() or len(value) > 5:
            problems.append(f"separators.{name}: must be 1 to 5 characters, not only spaces")
            continue
        separators[name] = value
    for name in columns:
        if FIELDS.get(name) in (Kind.LIST, Kind.MARKERS):
            separators.setdefault(name, DEFAULT_SEPARATOR)
    return separators


def _values(table: dict[str, Any], problems: list[str]) -> dict[str, dict[str, Any]]:
    maps: dict[str, dict[str, Any]] = {}
    for name, entries in table.items():
        key = f"values.{name}"
        kind = FIELDS.get(name)
        if kind not in _MAPPED_KINDS:
            problems.append(f"{key}: a value map is only for text, code, level and yes/no fields")
            continue
        if not isinstance(entries, dict) or not entries:
            problems.append(f"{key}: must be a table of \"extract value\" = value")
            continue
        translated: dict[str, Any] = {}
        for cell, value in entries.items():
            checked = _target(name, kind, value)
            if isinstance(checked, _Bad):
                problems.append(f'{key}."{cell}": {checked.why}')
            else:
                translated[cell.strip()] = checked
        maps[name] = translated
    return maps


@dataclass(frozen=True)
class _Bad:
    why: str


def _target(name: str, kind: Kind | None, value: Any) -> Any:
    match kind:
        case Kind.CODE:
            allowed = CODES[name]
            return value if value in allowed else _Bad(f"must be one of {', '.join(allowed)}")
        case Kind.LEVEL:
            if value == NO_LEVEL:
                return None
            if type(value) is int and value in (1, 2, 3):
                return value
            return _Bad(f'must be 1, 2, 3 or "{NO_LEVEL}"')
        case Kind.BOOL:
            return value if isinstance(value, bool) else _Bad("must be true or false")
        case _:
            return value if isinstance(value, str) else _Bad("must be a string")


def _markers(table: dict[str, Any], problems: list[str]) -> dict[str, MarkerData]:
    markers: dict[str, MarkerData] = {}
    for code, entry in table.items():
        key = f'markers."{code}"'
        if not isinstance(entry, dict):
            problems.append(f"{key}: must be a table with label (and code, restricted)")
            continue
        unknown = set(entry) - {"code", "label", "restricted"}
        if unknown:
            problems.append(f"{key}.{sorted(unknown)[0]}: not a known key (code, label, restricted)")
            continue
        try:
            markers[code.strip()] = MarkerData.model_validate(
                {"code": entry.get("code", code), "label": entry.get("label"),
                 "restricted": entry.get("restricted", False)}
            )
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            problems.append(f"{key}.{where}: {first['msg']}")
    return markers


def cell_map(mapping: Mapping, name: str) -> dict[str, Any] | None:
    """The cells `name` reads and what each means: the mapping's own value map, else the default
    one for yes/no and level fields, else None (any text; codes must already be ours)."""
    if name in mapping.values:
        return mapping.values[name]
    kind = FIELDS[name]
    if kind is Kind.BOOL:
        return dict(DEFAULT_BOOLEANS)
    if kind is Kind.LEVEL:
        return dict(DEFAULT_LEVELS)
    if kind is Kind.CODE:
        return {code: code for code in CODES[name]}
    return None
