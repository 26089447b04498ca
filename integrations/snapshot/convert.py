"""One row's cells as nominal.upsert values, by the mapping. Problems name the column and what is
wrong, never the cell (it may be personal data)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from casewatch.model.events import canonical_ref
from integrations.snapshot.fields import FIELDS, NULLABLE, RATIONALE, VISOR_REF, Kind
from integrations.snapshot.mapping import Mapping
from integrations.snapshot.reader import MAX_CELL, Row

_UNDECODED = re.compile("[\udc80-\udcff]")  # bytes the encoding could not read (surrogateescape)


@dataclass(frozen=True)
class Converted:
    line: int
    visor_ref: str
    values: dict[str, Any]  # mapped field -> value as an upsert carries it (dates as ISO strings)
    rationale: str | None  # the level-change rationale column's cell, if mapped
    problems: tuple[str, ...] = ()


def column_label(mapping: Mapping, name: str) -> str:
    column = mapping.columns.get(name)
    return f'column "{column}"' if column is not None else f"field {name}"


def convert(row: Row, mapping: Mapping) -> Converted:
    problems: list[str] = []
    cells = row.cells
    for column, cell in cells.items():
        if len(cell) > MAX_CELL:
            problems.append(f'column "{column}": longer than {MAX_CELL} characters')
        elif _UNDECODED.search(cell):
            problems.append(f'column "{column}": not valid {mapping.encoding} text')
    if problems:
        return Converted(row.line, "", {}, None, tuple(problems))
    ref = canonical_ref(cells[mapping.columns[VISOR_REF]])  # as the events store it
    values: dict[str, Any] = {}
    for name, column, known in mapping.readers:
        value, problem = _value(name, cells[column], mapping, known)
        if problem is not None:
            problems.append(f'column "{column}": {problem}')
        else:
            values[name] = value
    rationale = cells[mapping.columns[RATIONALE]] if RATIONALE in mapping.columns else None
    return Converted(row.line, ref, values, rationale, tuple(problems))


@lru_cache(maxsize=65536)  # an extract repeats its dates (last notifications, releases) a lot
def _date(cell: str, fmt: str) -> str | None:
    try:
        return datetime.strptime(cell, fmt).date().isoformat()
    except ValueError:
        return None


def _value(name: str, cell: str, mapping: Mapping, known: dict[str, Any] | None) -> tuple[Any, str | None]:
    kind = FIELDS[name]
    if known is not None and cell in known:
        return known[cell], None
    if cell == "":
        if name not in NULLABLE:
            return None, "empty (required)"
        return _empty(name, kind), None
    if known is not None:
        return None, f"not a known code (see [values.{name}] in the mapping)"
    match kind:
        case Kind.DATE:
            fmt = mapping.date_formats[name]
            parsed = _date(cell, fmt)
            return (parsed, None) if parsed is not None else (None, f"not a date in format {fmt}")
        case Kind.INT:
            if not cell.isascii() or not cell.isdigit() or len(cell) > 6:
                return None, "not a whole number"
            return int(cell), None
        case Kind.LIST:
            return _split(cell, mapping.separators[name]), None
        case Kind.MARKERS:
            return _markers(name, cell, mapping)
        case _:
            return cell, None


def _empty(name: str, kind: Kind) -> Any:
    if kind in (Kind.LIST, Kind.MARKERS):
        return []
    if name == "forenames":
        return ""
    return None


def _split(cell: str, separator: str) -> list[str]:
    return [part.strip(" ") for part in cell.split(separator) if part.strip(" ")]


def _markers(name: str, cell: str, mapping: Mapping) -> tuple[Any, str | None]:
    found: list[dict[str, Any]] = []
    for code in _split(cell, mapping.separators[name]):
        marker = mapping.markers.get(code)
        if marker is None:
            return None, "a marker code not in the mapping's [markers] table"
        entry = marker.model_dump()
        if entry not in found:
            found.append(entry)
    return found, None
