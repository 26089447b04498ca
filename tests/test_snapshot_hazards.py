"""`casewatch import --snapshot` against the hazards a review found (issue 18): a stray quote
swallowing rows, an extract time in the future, an extract older than the stored state, bad rows
held without bound, a closed stdout. Through the real command on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from casewatch.store.models import InboundItem, Nominal
from tests.test_snapshot_import import (
    MAPPING,
    NIGHT,
    config_for,
    count,
    nominal,
    person,
    query,
    write_extract,
)

ROOT = Path(__file__).resolve().parent.parent


# --- a closed stdout ------------------------------------------------------------------------------------


def run_with_closed(config: Path, extract: Path, *, stderr_closed: bool = False) -> tuple[int, str]:
    """The real command in a process whose stdout (and stderr, if asked) is a pipe nobody reads."""
    readable, writable = os.pipe()
    os.close(readable)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "casewatch.cli", "import", "--config", str(config), "--no-progress",
             "--snapshot", str(extract), "--mapping", str(MAPPING), "--extracted-at", NIGHT[0]],
            cwd=ROOT, stdout=writable, stderr=writable if stderr_closed else subprocess.PIPE,
            text=True, timeout=120, check=False,
        )
    finally:
        os.close(writable)
    return done.returncode, done.stderr or ""


def test_a_closed_stdout_ends_quietly_with_the_imports_exit_code(db_url: str, tmp_path: Path) -> None:
    config = config_for(tmp_path, db_url)
    extract = write_extract(tmp_path / "extract.csv", [person(1), person(2)])
    code, err = run_with_closed(config, extract)
    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err
    assert nominal(db_url, "VS-T000002") is not None
    # Bad rows reported on a closed stderr too: the import still finishes, exit 1.
    write_extract(extract, [person(3), person(4, DOB="never")])
    code, _ = run_with_closed(config, extract, stderr_closed=True)
    assert code == 1
    assert nominal(db_url, "VS-T000003") is not None
    assert count(db_url, InboundItem) == 1
    refs = {r[0] for r in query(db_url, select(Nominal.visor_ref))}
    assert refs == {"VS-T000001", "VS-T000002", "VS-T000003"}
