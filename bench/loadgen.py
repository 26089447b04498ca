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


def _run(requests: Sequence[Request], concurrency: int, ok_statuses: tuple[int, ...]) -> dict[str, Any]:
    return asyncio.run(_load(requests, concurrency, ok_statuses))


async def _load(
    requests: Sequence[Request], concurrency: int, ok_statuses: tuple[int, ...]
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    pending = iter(requests)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def requester() -> None:
            nonlocal errors
            for req in pending:
                started = time.perf_counter()
                headers = dict(req.headers)
                async with http.request(req.method, req.url, data=req.body or None, headers=headers) as r:
                    await r.read()
                    ok = r.status in ok_statuses
                latencies.append(time.perf_counter() - started)
                errors += 0 if ok else 1

        started = time.perf_counter()
        await asyncio.gather(*(requester() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    out = summary(latencies, elapsed, errors)
    out["concurrency"] = concurrency
    return out


_POOL: concurrent.futures.ProcessPoolExecutor | None = None


def _pool() -> concurrent.futures.ProcessPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    return _POOL


async def closed_loop_remote(
    requests: Sequence[Request], concurrency: int, ok_statuses: tuple[int, ...] = (200,)
) -> dict[str, Any]:
    """`requests` sent by `concurrency` requesters from a child process; their summary."""
    loop = asyncio.get_running_loop()
    result: dict[str, Any] = await loop.run_in_executor(
        _pool(), _run, list(requests), concurrency, ok_statuses
    )
    return result


def shutdown() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown()
        _POOL = None
