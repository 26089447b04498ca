"""Timing helpers: latency percentiles, a closed-loop load generator, peak memory."""

from __future__ import annotations

import asyncio
import math
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    # The smallest rank whose share reaches q: ceil(q/100 * n), in exact arithmetic (q as written).
    # (It was round(q/100 * n + 0.5), which rounds half to even: with n = 100 the "p99" was the
    # largest value, not the 99th.)
    rank = max(1, min(len(ordered), math.ceil(Fraction(repr(q)) * len(ordered) / 100)))
    return ordered[rank - 1]


def summary(latencies_s: Sequence[float], elapsed_s: float, errors: int = 0) -> dict[str, Any]:
    """p50/p99/max in milliseconds and requests per second."""
    return {
        "n": len(latencies_s),
        "errors": errors,
        "p50_ms": round(percentile(latencies_s, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies_s, 99) * 1000, 2),
        "max_ms": round(max(latencies_s, default=0.0) * 1000, 2),
        "per_s": round(len(latencies_s) / elapsed_s, 1) if elapsed_s > 0 else 0.0,
    }


async def closed_loop(
    call: Callable[[int], Awaitable[bool]], total: int, concurrency: int
) -> dict[str, Any]:
    """`concurrency` requesters each sending their next request as soon as the last is
    answered, `total` requests in all. `call(i)` returns whether request i succeeded."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def requester() -> None:
        nonlocal errors
        for i in counter:
            started = time.perf_counter()
            ok = await call(i)
            latencies.append(time.perf_counter() - started)
            errors += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(requester() for _ in range(concurrency)))
    out = summary(latencies, time.perf_counter() - started, errors)
    out["concurrency"] = concurrency
    return out


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size of this process (or of its waited-for children), in MB."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return round(usage.ru_maxrss / scale, 1)


def process_cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """CPU seconds (user and system) of the process `pid`, or of its children it has waited for,
    from /proc/PID/stat (Linux); OSError once the process is gone."""
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    first = 13 if reaped_children else 11  # cutime, cstime; or utime, stime (fields 14-17 of stat)
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 2) if baseline else None
