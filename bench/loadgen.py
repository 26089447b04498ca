"""A closed-loop HTTP load generator in its own process, so that the requesters do not take CPU
from the server under test in the same event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.measure import summary


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    tag: str = ""  # timed requests with a tag are also summarised by it ("by_tag")


def _run(
    requests: Sequence[Request], concurrency: int, ok_statuses: tuple[int, ...], warmup: Sequence[Request]
) -> dict[str, Any]:
    return asyncio.run(_load(requests, concurrency, ok_statuses, warmup))


async def _load(
    requests: Sequence[Request],
    concurrency: int,
    ok_statuses: tuple[int, ...],
    warmup: Sequence[Request] = (),
) -> dict[str, Any]:
    """`warmup` requests go first through the same requesters and HTTP connections, uncounted,
    and the measured ones follow without a pause: the server's connections (HTTP and database
    pool) are opened and left open at this concurrency before anything is timed."""
    latencies: list[float] = []
    tagged: dict[str, list[float]] = {}
    errors = 0
    warm_errors = 0
    total_warm = len(warmup)
    pending = enumerate([*warmup, *requests])
    measuring_since: float | None = None
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def requester() -> None:
            nonlocal errors, warm_errors, measuring_since
            for i, req in pending:
                started = time.perf_counter()
                if i == total_warm:
                    measuring_since = started
                headers = dict(req.headers)
                async with http.request(req.method, req.url, data=req.body or None, headers=headers) as r:
                    await r.read()
                    ok = r.status in ok_statuses
                if i < total_warm:
                    warm_errors += 0 if ok else 1
                    continue
                took = time.perf_counter() - started
                latencies.append(took)
                if req.tag:
                    tagged.setdefault(req.tag, []).append(took)
                errors += 0 if ok else 1

        await asyncio.gather(*(requester() for _ in range(concurrency)))
        ended = time.perf_counter()
    elapsed = ended - (measuring_since or ended)
    out = summary(latencies, elapsed, errors)
    out["concurrency"] = concurrency
    if tagged:
        # Latencies only: the tags share the one timed window, so no throughput of their own.
        out["by_tag"] = {
            tag: {k: v for k, v in summary(values, 0.0).items() if k != "per_s"}
            for tag, values in tagged.items()
        }
    if not total_warm:
        return out
    out["warmup"] = {"n": total_warm, "errors": warm_errors}
    # The timed part on the system-wide monotonic clock (the same in every process on Linux),
    # so the server can tell what happened during it (bench.cases.ConnectCounter).
    shift = time.monotonic() - time.perf_counter()
    out["timed_window"] = [(measuring_since or ended) + shift, ended + shift]
    return out


_POOL: concurrent.futures.ProcessPoolExecutor | None = None


def _pool() -> concurrent.futures.ProcessPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    return _POOL


async def closed_loop_remote(
    requests: Sequence[Request],
    concurrency: int,
    ok_statuses: tuple[int, ...] = (200,),
    *,
    warmup: Sequence[Request] = (),
) -> dict[str, Any]:
    """`requests` sent by `concurrency` requesters from a child process; their summary. The
    `warmup` requests are sent first by the same requesters, untimed (see _load)."""
    loop = asyncio.get_running_loop()
    result: dict[str, Any] = await loop.run_in_executor(
        _pool(), _run, list(requests), concurrency, ok_statuses, list(warmup)
    )
    return result


def shutdown() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown()
        _POOL = None
