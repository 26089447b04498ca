"""A fixed share of CPU for one process: a Linux cgroup (v1 `cpu` controller) with a CFS quota.

bench.multi runs 1 and then 2 `casewatch serve` processes. Unlimited, on a 2-core machine, the
servers, PostgreSQL, the load generator and the stand-ins already take both cores with one
server, so a second server has no core to add (bench/README.md, "Two serve processes"). Giving
each server the same fixed share (say half a core) is how a machine with a core per server would
look to one server: the question "does a second process add throughput?" is then asked with
the CPU the second process brings, and the store (the only shared state) shows whether it lets
the work spread.

Needs root and a writable `cpu` hierarchy of cgroup v1 at /sys/fs/cgroup/cpu (as on this
machine); anywhere else `unavailable()` says why and the case is skipped. cgroup v2 is not
handled: it would need the `cpu` controller delegated to the bench's own subtree.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000  # the kernel's default CFS period


def unavailable(root: Path = ROOT) -> str | None:
    """Why a share cannot be made here, or None: one is made and removed to find out (a
    container may show the controller writable and still refuse a group or its quota)."""
    if not (root / "cpu.cfs_quota_us").exists():
        return f"no cgroup v1 cpu controller at {root}"
    if not os.access(root, os.W_OK):
        return f"{root} is not writable (needs root)"
    try:
        CpuShare(0.5, root).remove()
    except OSError as error:
        return f"a cgroup under {root} was refused: {error.strerror or error}"
    return None


class CpuShare:
    """One cgroup whose processes together get at most `cores` of CPU time (CFS quota)."""

    def __init__(self, cores: float, root: Path = ROOT) -> None:
        if not 0.01 <= cores <= (os.cpu_count() or 1):
            raise ValueError(f"a share of {cores} cores is outside 0.01-{os.cpu_count()}")
        self.cores = cores
        self.path = root / f"casewatch-bench-{uuid.uuid4().hex[:12]}"
        self.path.mkdir()
        try:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(round(cores * PERIOD_US)))
        except OSError:
            self.path.rmdir()
            raise

    def add(self, pid: int) -> None:
        """Move the process `pid` (all its threads, and children it starts later) into the share."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_us(self) -> int:
        """CPU time the quota has held back so far, microseconds (cpu.stat's throttled_time is ns)."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_time":
                return int(value) // 1000
        return 0

    def remove(self) -> None:
        """Remove the group; its processes must have ended (the kernel refuses a busy group)."""
        self.path.rmdir()
