"""HTTP load generators in a process of their own, so that the requesters do not take CPU from
the server under test in the same event loop: closed-loop requesters (closed_loop_remote) and one
paced sender (PacedSender, the e2e bench's)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
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


# --- paced, one at a time (the e2e bench) ---------------------------------------------------------

Maker = Callable[[str], tuple[bytes, dict[str, str]]]  # a key -> the POST's body and headers
Paced = tuple[dict[str, float], list[float], list[int]]  # sent at (monotonic), answer times, statuses


async def send_paced(
    http: aiohttp.ClientSession, url: str, make: Maker, keys: Sequence[str], rate: float
) -> Paced:
    """One POST a key, each built (and signed) just before it is sent, `1 / rate` s after the
    previous one's answer: when each was sent (time.monotonic(), the system-wide clock), how long
    each took to be answered, and each answer's status, in the order sent."""
    sent: dict[str, float] = {}
    answered: list[float] = []
    statuses: list[int] = []
    for key in keys:
        body, headers = make(key)
        sent[key] = time.monotonic()
        async with http.post(url, data=body, headers=headers) as r:
            await r.read()
        answered.append(time.monotonic() - sent[key])
        statuses.append(r.status)
        await asyncio.sleep(1 / rate)
    return sent, answered, statuses


def _paced_child(commands: Connection, url: str, make: Maker) -> None:
    """The child: one event loop and one HTTP session (its keep-alive connection) for every
    command, so a second batch of POSTs goes on the first one's connection, as in one process."""
    loop = asyncio.new_event_loop()
    http = loop.run_until_complete(_session())
    try:
        while True:
            command = commands.recv()
            if command is None:
                return
            keys, rate = command
            commands.send(loop.run_until_complete(send_paced(http, url, make, keys, rate)))
    finally:
        loop.run_until_complete(http.close())
        loop.close()


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


class PacedSender:
    """send_paced from a process of its own (started with "spawn"), so that the client's HTTP
    work and its loop turns are not on the server's loop: `start()`, `await send(keys, rate)`
    (any number of times, one at a time), `stop()`. `make` must be a module-level function."""

    def __init__(self, url: str, make: Maker) -> None:
        context = multiprocessing.get_context("spawn")
        self._commands, child_end = context.Pipe()
        self._process = context.Process(
            target=_paced_child, args=(child_end, url, make), name="bench-sender", daemon=True
        )

    def start(self) -> PacedSender:
        self._process.start()
        return self

    async def send(self, keys: Sequence[str], rate: float) -> Paced:
        self._commands.send((list(keys), rate))
        result: Paced = await asyncio.to_thread(self._commands.recv)
        return result

    def stop(self) -> None:
        if self._process.is_alive():
            self._commands.send(None)
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
