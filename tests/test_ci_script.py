"""The README's two commands and CI's entry point are valid bash and executable from a clone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [".ci/run", "scripts/test", "scripts/demo", "scripts/pg-temp"]


@pytest.mark.parametrize("name", [*SCRIPTS, "scripts/venv-setup"])
def test_script_is_valid_bash(name: str) -> None:
    result = subprocess.run(["bash", "-n", str(ROOT / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_is_executable(name: str) -> None:
    assert os.access(ROOT / name, os.X_OK), f"chmod +x {name}"


def test_readme_names_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n./scripts/demo\n" in readme
    assert "\n./scripts/test\n" in readme
    assert "bash scripts/test" in (ROOT / ".ci/run").read_text(encoding="utf-8")
