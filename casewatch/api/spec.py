"""docs/openapi.yaml from the code: the event schemas come from the pydantic models of
casewatch.model.events, the value rules (patterns, enums, lengths, year bounds, characters)
from the same constants the validators use, and the alerts API's query parameters from
casewatch.api.alerts. So the spec says what the API does.

    python -m casewatch.api.spec            # rewrite docs/openapi.yaml
    python -m casewatch.api.spec --check    # exit 1 when docs/openapi.yaml is not up to date

The hand-written rest of the file (paths, descriptions, responses) is kept: the file is read,
the generated parts are replaced, and the whole is written back in one canonical YAML style.
Needs PyYAML (a dev dependency).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from casewatch.api import alerts
from casewatch.model import events
from casewatch.model.text_rules import TextKind, characters_pattern
from casewatch.model.unicode_table import UNICODE_VERSION

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
_PREFIX = "#/components/schemas/"

_CHARACTERS_DESCRIPTION = {
    TextKind.IDENTIFIER: (
        "Characters of an identifier: no controls (C0, DEL, C1), format characters (bidi "
        "controls, zero-width characters, soft hyphen), line or paragraph separators, spaces "
        "other than U+0020, private-use characters, surrogates, noncharacters, code points "
        f"unassigned in Unicode {UNICODE_VERSION} or other default-ignorable code points "
        "(U+115F, U+3164, variation selectors). Identifiers also neither begin nor end with a space."
    ),
    TextKind.NAME: "Characters of a name: as IdentifierCharacters, and U+00A0 (no-break space) is allowed.",
    TextKind.TEXT: (
        "Characters of free text: as NameCharacters, and line feed (\\n) and tab (\\t) are allowed "
        "(no other control character, not \\r)."
    ),
}


_FORMAT_NOTE = (
    " The format names this rule for tools that generate values; the pattern states it (ECMA-262,"
    " with the u flag: astral characters appear as themselves)."
)


def text_format(kind: TextKind) -> str:
    """The custom `format` of a kind of text field: casewatch-identifier, -name, -text."""
    return f"casewatch-{kind.value}"


def _value_components() -> dict[str, Any]:
    year = "years 1900 to 9000"
    components: dict[str, Any] = {
        "VisorRef": {
            "type": "string",
            "pattern": f"^{events.VISOR_REF_PATTERN}$",
            "description": (
                "a ViSOR reference: 1 to 32 letters, digits, '-' or '/', starting with a letter or digit;"
                " stored and matched in capitals (vs-0001234 is VS-0001234)"
            ),
        },
        "Date": {
            "type": "string",
            "format": "date",
            "pattern": f"^{events.DATE_PATTERN}$",
            "description": f"YYYY-MM-DD, a real calendar date, {year}",
        },
        "DateTime": {
            "type": "string",
            "format": "date-time",
            "pattern": f"^{events.DATETIME_PATTERN}$",
            "description": (
                f"RFC 3339 with seconds and an offset (Z or +HH:MM), at most 6 decimals, {year}; "
                "stored in UTC"
            ),
        },
        "Level": {"enum": [1, 2, 3, None], "description": "a MAPPA level, or null (none)"},
        "CountryCode": {
            "enum": sorted(events.COUNTRY_CODES),
            "description": "ISO 3166-1 alpha-2, officially assigned codes, in capitals",
        },
    }
    for kind, name in events.CHARACTER_COMPONENTS.items():
        components[name] = {
            "type": "string",
            "format": text_format(kind),
            "pattern": characters_pattern(kind),
            "description": _CHARACTERS_DESCRIPTION[kind] + _FORMAT_NOTE,
        }
    return components


def _resolve(node: Any) -> Any:
    """pydantic's output as OpenAPI: component stand-ins become $refs, model names lose "Data",
    titles go (the names say it)."""
    if isinstance(node, list):
        return [_resolve(item) for item in node]
    if not isinstance(node, dict):
        return node
    if events.COMPONENT_KEY in node:
        extra = {k: _resolve(v) for k, v in node.items() if k not in (events.COMPONENT_KEY, "title")}
        return {"$ref": _PREFIX + node[events.COMPONENT_KEY], **extra}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "$ref" and isinstance(value, str):
            out[key] = value.removesuffix("Data")
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _resolve(sub) for name, sub in value.items()}
        else:
            out[key] = _resolve(value)
    return out


def _model_components(model: type[BaseModel]) -> dict[str, Any]:
    generated = model.model_json_schema(ref_template=_PREFIX + "{model}", mode="validation")
    defs = generated.pop("$defs", {})
    out = {events.schema_name(model): _resolve(generated)}
    for name, sub in defs.items():
        out[name.removesuffix("Data")] = _resolve(sub)
    return out


def generated_components() -> dict[str, Any]:
    """Every schema component the code defines: value types, the envelope, each event's data."""
    components = _value_components()
    components.update(_model_components(events.EnvelopeModel))
    for model in events.EVENT_TYPES.values():
        components.update(_model_components(model))
    return components


def _query_parameters() -> list[dict[str, Any]]:
    def param(name: str, description: str, value: Mapping[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "description": description, "schema": dict(value)}

    return [
        param("state", "the alert's state", {"type": "string", "enum": list(alerts.STATES)}),
        param("kind", "an alert kind, e.g. travel.unnotified",
              {"type": "string", "pattern": f"^{alerts.KIND_PATTERN}$"}),
        param("visor_ref", "the nominal's ViSOR reference", {"$ref": _PREFIX + "VisorRef"}),
        param("team", "a team id (as in nominal.upsert and the configuration)", {
            "$ref": _PREFIX + events.CHARACTER_COMPONENTS[TextKind.IDENTIFIER],
            "minLength": 1, "maxLength": alerts.TEAM_MAX_LENGTH,
        }),
        param("limit", "alerts per page (ASCII digits)", {
            "type": "integer", "minimum": 1, "maximum": alerts.MAX_LIMIT, "default": alerts.DEFAULT_LIMIT,
        }),
        param("cursor", "the `next_cursor` of the previous page (opaque; any other value is refused)",
              {"type": "string", "pattern": f"^{alerts.CURSOR_PATTERN}$"}),
    ]


def _alert_id_parameter() -> dict[str, Any]:
    return {
        "name": "alert_id",
        "in": "path",
        "required": True,
        "description": 'the alert id, e.g. A-7K3Q9M (matched case-insensitively; "A7K3Q9M" also works)',
        "schema": {"type": "string", "pattern": f"^{alerts.ALERT_ID_PATTERN}$"},
    }


def build(current: dict[str, Any]) -> dict[str, Any]:
    """`current` (the parsed docs/openapi.yaml) with the generated parts replaced."""
    spec = dict(current)
    components = dict(spec.get("components", {}))
    schemas = dict(components.get("schemas", {}))
    schemas.pop("EnvelopeModel", None)
    schemas.update(generated_components())
    components["schemas"] = schemas
    spec["components"] = components
    paths = spec["paths"]
    paths["/api/v1/alerts"]["get"]["parameters"] = _query_parameters()
    paths["/api/v1/alerts/{alert_id}"]["get"]["parameters"] = [_alert_id_parameter()]
    return spec


def render(spec: Mapping[str, Any]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # Descriptions of several lines stay readable as literal blocks.
        style = "|" if "\n" in value and value.isascii() else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(dict(spec), Dumper=Dumper, sort_keys=False, allow_unicode=False, width=100)


def expected_text(path: Path = DOC) -> str:
    """What docs/openapi.yaml should read, given its hand-written parts."""
    import yaml

    return render(build(yaml.safe_load(path.read_text(encoding="utf-8"))))


def main(argv: list[str]) -> int:
    text = expected_text()
    if argv == ["--check"]:
        if DOC.read_text(encoding="utf-8") != text:
            print("docs/openapi.yaml is out of date: run python -m casewatch.api.spec", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: python -m casewatch.api.spec [--check]", file=sys.stderr)
        return 2
    DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
