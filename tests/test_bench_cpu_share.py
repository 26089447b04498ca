"""bench.cpu_share: a process put in a share gets no more CPU than the share, and the group goes
away afterwards (bench.multi's fixed-share phases rest on it). Needs root and cgroup v1's cpu
controller, as on the project's machines; skipped, with the reason, anywhere else."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import cpu_share
from bench.measure import process_cpu_seconds

BUSY = "while True: pass"


def _cores_used(proc: subprocess.Popen[bytes], seconds: float) -> float:
    before, started = process_cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)
    return (process_cpu_seconds(proc.pid) - before) / (time.monotonic() - started)


def test_a_busy_process_in_a_share_gets_the_share_and_no_more() -> None:
    if why := cpu_share.unavailable():
        pytest.skip(why)
    share = cpu_share.CpuShare(0.2)
    busy = subprocess.Popen([sys.executable, "-c", BUSY])  # noqa: S603 (our own interpreter)
    try:
        share.add(busy.pid)
        held = _cores_used(busy, 1.5)
        assert held <= 0.2 + 0.05, held
        # The quota held it back (CFS throttles a group only when it wants more than its quota):
        # the share, not a busy machine, is what kept it near 0.2 of a core.
        assert share.throttled_us() > 0
    finally:
        busy.kill()
        busy.wait()
        share.remove()
    assert not share.path.exists()


def test_a_share_outside_what_the_machine_has_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        cpu_share.CpuShare(0.0, root=tmp_path)
    with pytest.raises(ValueError, match="outside"):
        cpu_share.CpuShare((os.cpu_count() or 1) + 1, root=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing made


def test_unavailable_says_why_without_a_cpu_controller(tmp_path: Path) -> None:
    assert cpu_share.unavailable(tmp_path) == f"no cgroup v1 cpu controller at {tmp_path}"


def test_unavailable_says_why_when_the_group_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller is there and writable, but the kernel refuses the group's quota (as a
    container may): the reason is said, and the probe group is taken away again."""
    (tmp_path / "cpu.cfs_quota_us").write_text("-1")
    plain_write = Path.write_text

    def refused(path: Path, data: str, *args: Any, **kwargs: Any) -> int:
        if path.parent != tmp_path and path.name.startswith("cpu.cfs_"):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return plain_write(path, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", refused)
    why = cpu_share.unavailable(tmp_path)
    assert why == f"a cgroup under {tmp_path} was refused: Operation not permitted"
    assert [p.name for p in tmp_path.iterdir()] == ["cpu.cfs_quota_us"]
