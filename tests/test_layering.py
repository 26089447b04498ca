"""The layers of the design (shared/design.md), checked on the source, every import counted (also
those inside functions and under TYPE_CHECKING): the model imports nothing of ours and no I/O
library; the rules import only the model; the core imports no adapter (bot, integrations,
schedules) except its composition root. And at run time: importing every model and rule module
loads no I/O library."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("casewatch", "bot", "integrations", "schedules")
ADAPTERS = ("bot", "integrations", "schedules")
IO_LIBRARIES = (
    "sqlalchemy", "alembic", "aiosqlite", "asyncpg", "aiohttp", "slack_sdk", "slack_bolt",
    "aiosmtplib", "aiosmtpd", "apscheduler",
)
# The core modules that put the adapters together (every one of them does so today).
COMPOSITION_ROOT = frozenset({"casewatch.wiring", "casewatch.demo.runner"})
MODEL = "casewatch.model"
RULES = ("casewatch.triggers.rules", "casewatch.rules")  # where the rules are, or will be


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module `source` imports; `from x import y` counts as x and x.y (y may be a module)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            origin = ".".join([*base, *([node.module] if node.module else [])])
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


IMPORTS = {
    module_name(path): imports_of(path.read_text("utf-8"), module_name(path), path.name == "__init__.py")
    for top in OURS
    for path in sorted((ROOT / top).rglob("*.py"))
    if "migrations" not in path.parts
}


@dataclass(frozen=True)
class Arrow:
    name: str
    applies_to: Callable[[str], bool]
    forbidden: Callable[[str], bool]


def _foreign(name: str, *allowed: str) -> bool:
    return (within(name, *OURS) and not within(name, *allowed)) or within(name, *IO_LIBRARIES)


ARROWS = [
    Arrow(
        "the core imports no adapter",
        lambda m: within(m, "casewatch") and m not in COMPOSITION_ROOT,
        lambda i: within(i, *ADAPTERS),
    ),
    Arrow("the model imports nothing of ours and no I/O library", lambda m: within(m, MODEL),
          lambda i: _foreign(i, MODEL)),
    Arrow("the rules import only the model", lambda m: within(m, *RULES),
          lambda i: _foreign(i, MODEL, *RULES)),
]


def offences(arrow: Arrow) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in IMPORTS.items()
        if arrow.applies_to(module)
        for name in names
        if arrow.forbidden(name) and not within(name, module)  # `from . import x` in a package
    )


@pytest.mark.parametrize("arrow", ARROWS, ids=[a.name for a in ARROWS])
def test_arrow(arrow: Arrow) -> None:
    assert any(arrow.applies_to(m) for m in IMPORTS), f"no module is subject to {arrow.name!r}"
    assert offences(arrow) == []


def test_every_composition_root_module_still_imports_an_adapter() -> None:
    for module in sorted(COMPOSITION_ROOT):
        assert any(within(i, *ADAPTERS) for i in IMPORTS[module]), f"{module}: drop it from the list"


def test_model_and_rule_modules_load_no_io_library() -> None:
    modules = sorted(m for m in IMPORTS if within(m, MODEL, *RULES))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted({{n.split('.')[0] for n in sys.modules}} & {set(IO_LIBRARIES)!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "is_package", "source", "expected"),
    [
        ("casewatch.x", False, "import sqlalchemy.orm", {"sqlalchemy.orm"}),
        ("casewatch.x", False, "from casewatch.model import alerts",
         {"casewatch.model", "casewatch.model.alerts"}),
        ("casewatch.triggers.rules.x", False, "from . import recall",
         {"casewatch.triggers.rules", "casewatch.triggers.rules.recall"}),
        ("casewatch.triggers.rules.x", False, "from ..scan import run",
         {"casewatch.triggers.scan", "casewatch.triggers.scan.run"}),
        ("casewatch.model", True, "from .alerts import Kind",
         {"casewatch.model.alerts", "casewatch.model.alerts.Kind"}),
        ("casewatch.x", False, "def f():\n    import bot.app", {"bot.app"}),
        ("casewatch.x", False, "if TYPE_CHECKING:\n    from aiohttp import web", {"aiohttp", "aiohttp.web"}),
    ],
)
def test_imports_are_found_and_resolved(
    module: str, is_package: bool, source: str, expected: set[str]
) -> None:
    assert imports_of(source, module, is_package) == expected
