"""config.example.toml documents every key of every section, each at its default, with a comment:
a key added to casewatch/config/* without documenting it here fails these tests."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, SecretStr

from casewatch.config import Settings, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def _section_models() -> dict[str, tuple[type[BaseModel], bool]]:
    """Section name -> (model, is a list of tables)."""
    found: dict[str, tuple[type[BaseModel], bool]] = {}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found[name] = (annotation, False)
        else:
            (item,) = get_args(annotation)
            found[name] = (item, True)
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}  # TOML keys are strings
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def test_the_example_loads(tmp_path: Path) -> None:
    settings = load_config(EXAMPLE, environ={})
    assert [t.id for t in settings.teams] == ["north"]
    assert [o.id for o in settings.officers] == ["PC1234"]


def test_every_section_is_in_the_example() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert set(data) == set(Settings.model_fields)


def test_every_key_is_documented_at_its_default() -> None:
    """A key whose default is unset (None: TOML has no null) is shown as a commented example line
    `# key = ...` and left out of the table; every other key is set at its default."""
    text = EXAMPLE.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    for name, (model, is_list) in _section_models().items():
        if is_list:
            continue
        documented = data[name]
        defaults = _plain(model())
        unset = {key for key, value in defaults.items() if value is None}
        for key in unset:
            assert re.search(rf"^# {re.escape(key)} = \S", text, re.M), f"{name}.{key}: no commented example"
        keys = set(model.model_fields) - unset
        assert set(documented) == keys, f"[{name}] keys differ from {model.__name__}"
        for key, value in documented.items():
            default = defaults[key]
            assert value == default, f"{name}.{key}: example says {value!r}, default is {default!r}"


def test_every_team_and_officer_key_is_shown() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for name, (model, is_list) in _section_models().items():
        if not is_list:
            continue
        shown = set().union(*(set(row) for row in data[name]))
        assert shown == set(model.model_fields), f"[[{name}]] keys differ from {model.__name__}"


def test_every_key_has_a_comment() -> None:
    """Each `key = value` line is preceded by a comment line (its documentation)."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    undocumented = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "[")):
            continue
        if "=" in stripped and not lines[number - 1].lstrip().startswith("#"):
            undocumented.append(f"line {number + 1}: {stripped}")
    assert undocumented == []


def test_the_secrets_are_empty_in_the_example() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert data["ingest"]["secret"] == ""
    for key in ("bot_token", "signing_secret", "app_token"):
        assert data["slack"][key] == ""
    assert data["smtp"]["password"] == ""


def test_every_built_in_route_is_listed() -> None:
    from casewatch.config.routing import DEFAULT_ROUTES

    text = EXAMPLE.read_text(encoding="utf-8")
    for kind, receivers in DEFAULT_ROUTES.items():
        assert re.search(rf"^#   {re.escape(kind)} +{re.escape(', '.join(receivers))}$", text, re.M), kind
