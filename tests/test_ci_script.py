"""The README's two commands and CI's entry point are valid bash and executable from a clone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [".ci/run", "scripts/test", "scripts/demo", "scripts/pg-temp", "scripts/dovecot-temp"]


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


def test_venv_setup_installs_with_the_constraints_and_again_when_they_change(tmp_path: Path) -> None:
    """ensure_venv installs with -c constraints.txt, and again only when pyproject.toml,
    constraints.txt or the extras change (a stand-in .venv/bin/python records the pip calls)."""
    (tmp_path / ".venv/bin").mkdir(parents=True)
    fake = tmp_path / ".venv/bin/python"
    fake.write_text('#!/bin/sh\necho "$*" >> pip-calls\n')
    fake.chmod(0o755)
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "constraints.txt").write_text("aiohttp==3.14.5\n")

    def ensure(extras: str = "dev") -> list[str]:
        subprocess.run(
            ["bash", "-c", f". {ROOT / 'scripts/venv-setup'} && ensure_venv {extras}"],
            cwd=tmp_path, check=True, capture_output=True,
        )
        calls = tmp_path / "pip-calls"
        return calls.read_text().splitlines() if calls.exists() else []

    assert ensure() == ["-m pip install --disable-pip-version-check -q -c constraints.txt -e .[dev]"]
    assert len(ensure()) == 1 and len(ensure("")) == 1  # unchanged: nothing installed
    (tmp_path / "constraints.txt").write_text("aiohttp==3.14.6\n")
    assert len(ensure()) == 2
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert len(ensure()) == 3


def test_the_constraints_pin_every_dependency() -> None:
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = [
        line for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    pinned = {}
    for line in lines:
        name, _, version = line.partition("==")
        assert version and re.fullmatch(r"[A-Za-z0-9._-]+", name), f"not a pin: {line!r}"
        pinned[re.sub(r"[-_.]+", "-", name).lower()] = version
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement)[0]).lower()
        assert name in pinned, f"{requirement!r} is not pinned in constraints.txt"
