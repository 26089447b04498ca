"""The audit chain's costs (issue 16), each beside a baseline measured in the same run.

1. Writes: N audited transactions as /flags writes them (`casewatch.audit.record`, one entry a
   transaction) at 1 and 8 concurrent writers, with the sealer running as `serve` runs it
   (start_sealer woken by the service's audit bell), against the same transactions inserting the
   same row by a plain Core INSERT, with no hashing and no sealer.
2. Lock hold: every seal_once transaction is timed (it holds the chain row's lock from its
   SELECT .. FOR UPDATE to its commit, so its time bounds the hold), with the entries it sealed.
   On PostgreSQL also two "processes" (two engines, each with its own sealer) writing at once,
   after which `verify` must say intact and count every entry.
3. Verification: `casewatch.audit.verify.verify` over the sealed entries, in entries/s, beside an
   I/O floor (the same pages read with no hashing) and a CPU floor (the same entries hashed in
   memory), and a profile of where verify's time goes.
"""

from __future__ import annotations

import asyncio
import cProfile
import hashlib
import json
import pstats
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.dataset import Sizes, make_settings, officer_id, visor_ref
from bench.measure import closed_loop, percentile, ratio
from casewatch.audit import hasher_for, record
from casewatch.audit import seal as sealing
from casewatch.audit import verify as verifying
from casewatch.audit.chain import (
    GENESIS,
    VERSION,
    canonical_time,
    content_bytes,
    content_hash,
    content_of,
    link_hash,
)
from casewatch.context import Context
from casewatch.store.engine import is_sqlite, make_sessionmaker
from casewatch.store.models import AuditEntry, AuditNominal
from casewatch.wiring import Service, create_service, stop

WRITERS = (1, 8)
ACTION = "flags.lookup"
PROFILE_TOP = 12

_ENTRIES = AuditEntry.metadata.tables[AuditEntry.__tablename__]
_INDEX = AuditNominal.metadata.tables[AuditNominal.__tablename__]
_PLAIN_INSERT = insert(_ENTRIES)

Round = tuple[float, int]  # (seconds the seal_once transaction took, entries it sealed)
Write = Callable[[int], Awaitable[bool]]


# --- the sealer's rounds ------------------------------------------------------------------------


@contextmanager
def timed_seal_rounds() -> Iterator[list[Round]]:
    """Time every seal_once while in the block (the sealer's loop calls it through seal_pending,
    which looks it up in its module at each call)."""
    original = sealing.seal_once
    rounds: list[Round] = []

    async def timed(
        sessions: async_sessionmaker[AsyncSession], ctx: Context, *, batch: int = sealing.BATCH
    ) -> int:
        started = time.perf_counter()
        count = await original(sessions, ctx, batch=batch)
        rounds.append((time.perf_counter() - started, count))
        return count

    sealing.seal_once = timed
    try:
        yield rounds
    finally:
        sealing.seal_once = original


def rounds_summary(rounds: list[Round]) -> dict[str, Any]:
    holds = [seconds for seconds, _ in rounds]
    sizes = [count for _, count in rounds if count]
    return {
        "rounds": len(rounds), "empty_rounds": len(rounds) - len(sizes),
        "hold_p50_ms": round(percentile(holds, 50) * 1000, 2),
        "hold_p99_ms": round(percentile(holds, 99) * 1000, 2),
        "hold_max_ms": round(max(holds, default=0.0) * 1000, 2),
        "entries_per_batch_p50": percentile(sizes, 50), "entries_per_batch_max": max(sizes, default=0),
        "entries_sealed": sum(sizes),
    }


# --- writers ------------------------------------------------------------------------------------


def _lookup(i: int, sizes: Sizes) -> dict[str, Any]:
    """What /flags audits for a lookup by reference (casewatch.lookup.flags._audit)."""
    return {
        "actor": officer_id(i % sizes.officers + 1), "action": ACTION,
        "subject": visor_ref(i % sizes.nominals + 1), "purpose": "slash /flags",
        "details": {"roles": ["offender_manager"], "outcome": "found"},
    }


def chained_write(service: Service, sizes: Sizes) -> Write:
    async def write(i: int) -> bool:
        async with service.sessions.begin() as session:
            await record(session, service.ctx, **_lookup(i, sizes))
        return True

    return write


def plain_write(service: Service, sizes: Sizes) -> Write:
    """The baseline: the same row by a plain Core INSERT in its own transaction, no hash, and a
    sessionmaker with no audit bell (so nothing seals)."""
    sessions = make_sessionmaker(service.engine)

    async def write(i: int) -> bool:
        values = {**_lookup(i, sizes), "at": service.ctx.clock.now(), "nominals": [], "content_hash": ""}
        async with sessions.begin() as session:
            await (await session.connection()).execute(_PLAIN_INSERT, values)
        return True

    return write


async def _max_id(service: Service) -> int:
    async with service.sessions() as session:
        return int((await session.execute(select(func.coalesce(func.max(_ENTRIES.c.id), 0)))).scalar_one())


async def _drop_baseline_rows(service: Service, after_id: int) -> None:
    """The baseline's rows are not chained: remove them before anything seals them."""
    async with service.sessions.begin() as session:
        await session.execute(delete(_INDEX).where(_INDEX.c.audit_id > after_id))
        await session.execute(delete(_ENTRIES).where(_ENTRIES.c.id > after_id, _ENTRIES.c.seq.is_(None)))


async def baseline_level(service: Service, sizes: Sizes, n: int, writers: int) -> dict[str, Any]:
    before = await _max_id(service)
    write = plain_write(service, sizes)
    await closed_loop(write, warmup_count(n), writers)
    result = await closed_loop(write, n, writers)
    await _drop_baseline_rows(service, before)
    return result


async def chained_level(service: Service, sizes: Sizes, n: int, writers: int) -> dict[str, Any]:
    write = chained_write(service, sizes)
    await closed_loop(write, warmup_count(n), writers)
    await sealing.seal_pending(service.sessions, service.ctx)  # the warm-up's, before timing
    with timed_seal_rounds() as rounds:
        stop_sealer = sealing.start_sealer(service.sessions, service.ctx, service.audit_bell)
        result = await closed_loop(write, n, writers)
        started = time.perf_counter()
        await stop_sealer()  # seals what is left
        result["drain_ms"] = round((time.perf_counter() - started) * 1000, 1)
    result["sealer"] = rounds_summary(rounds)
    return result


async def unsealed_level(service: Service, sizes: Sizes, n: int, writers: int) -> dict[str, Any]:
    """The chained writes with no sealer running (sealed afterwards, untimed): what hashing and
    record() cost a writer, apart from the sealer."""
    write = chained_write(service, sizes)
    await closed_loop(write, warmup_count(n), writers)
    result = await closed_loop(write, n, writers)
    await sealing.seal_pending(service.sessions, service.ctx)
    return result


def warmup_count(n: int) -> int:
    return max(20, min(500, n // 20))


async def bench_writes(service: Service, sizes: Sizes, n: int) -> list[dict[str, Any]]:
    levels = []
    for writers in WRITERS:
        base = await baseline_level(service, sizes, n, writers)
        unsealed = await unsealed_level(service, sizes, n, writers)
        chained = await chained_level(service, sizes, n, writers)
        levels.append({
            "writers": writers, "chained": chained, "baseline": base, "chained_no_sealer": unsealed,
            "p99_ratio_no_sealer": ratio(unsealed["p99_ms"], base["p99_ms"]),
            "throughput_ratio_no_sealer": ratio(unsealed["per_s"], base["per_s"]),
            "p50_ratio": ratio(chained["p50_ms"], base["p50_ms"]),
            "p99_ratio": ratio(chained["p99_ms"], base["p99_ms"]),
            "throughput_ratio": ratio(chained["per_s"], base["per_s"]),
            # What chaining adds to each write, CPU and round trips, per entry.
            "added_ms_per_write": round(1000 / chained["per_s"] * writers - 1000 / base["per_s"] * writers, 3)
            if chained["per_s"] and base["per_s"] else None,
        })
    return levels


async def two_processes(db_url: str, sizes: Sizes, n: int, writers: int) -> dict[str, Any]:
    """Two services (engines, pools, bells, sealers) writing at once, as two `serve` processes
    would; then the chain must verify intact with every entry in it."""
    settings = make_settings(db_url, sizes, database={"pool_size": writers + 4})
    services = [await create_service(settings) for _ in range(2)]
    try:
        with timed_seal_rounds() as rounds:
            stops = [sealing.start_sealer(s.sessions, s.ctx, s.audit_bell) for s in services]
            started = time.perf_counter()
            results = await asyncio.gather(*(
                closed_loop(chained_write(s, sizes), n // 2, writers) for s in services
            ))
            elapsed = time.perf_counter() - started
            for stop_sealer in stops:
                await stop_sealer()
        checked = await verifying.verify(services[0].sessions, hasher_for(services[0].ctx))
        async with services[0].sessions() as session:
            total = int((await session.execute(select(func.count()).select_from(_ENTRIES))).scalar_one())
        assert checked.intact, checked.broken
        assert checked.unsealed == 0 and checked.checked == total, (checked.checked, checked.unsealed, total)
        return {
            "writers_per_process": writers, "entries": 2 * (n // 2),
            "per_s": round(2 * (n // 2) / elapsed, 1),
            "p99_ms": [r["p99_ms"] for r in results], "p50_ms": [r["p50_ms"] for r in results],
            "sealer": rounds_summary(rounds),
            "verify": {"intact": checked.intact, "checked": checked.checked, "entries_in_log": total},
        }
    finally:
        for s in services:
            await stop(s)


# --- verification -------------------------------------------------------------------------------


async def read_pages(sessions: async_sessionmaker[AsyncSession], page: int, index: bool) -> list[Any]:
    """verify's reads with no hashing: the same pages in seq order (and, with `index`, the same
    nominal-index query per page)."""
    rows: list[Any] = []
    seq = 0
    async with sessions() as session:
        while True:
            got = list(await session.execute(
                select(*verifying._COLUMNS).where(_ENTRIES.c.seq > seq).order_by(_ENTRIES.c.seq).limit(page)
            ))
            if not got:
                return rows
            if index:
                await verifying._index_for(session, [r.id for r in got])
            rows.extend(got)
            seq = got[-1].seq


def hash_in_memory(hasher: Any, rows: list[Any]) -> None:
    """The CPU floor: what verify computes for each entry, with no database."""
    previous = GENESIS
    for row in rows:
        content_hash(hasher, **content_of(row))
        previous = link_hash(hasher, previous, row.seq, row.id, row.content_hash)


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def canonicalisation(rows: list[Any]) -> dict[str, Any]:
    """rfc8785 alone, sha256 alone, and json.dumps(sort_keys) (not RFC 8785 in general: floats and
    keys beyond the BMP differ) on the same contents, and whether its bytes came out the same."""
    contents = [content_of(row) for row in rows]
    jcs = [content_bytes(**c) for c in contents]
    n = max(len(rows), 1)

    def plain(c: dict[str, Any]) -> bytes:
        return json.dumps(content_list(c), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()

    rfc = _timed(lambda: [content_bytes(**c) for c in contents])
    stdlib = _timed(lambda: [plain(c) for c in contents])
    sha = _timed(lambda: [hashlib.sha256(b).hexdigest() for b in jcs])
    same = sum(plain(c) == b for c, b in zip(contents, jcs, strict=True))
    return {
        "rfc8785_us_per_entry": round(rfc / n * 1e6, 2), "sha256_us_per_entry": round(sha / n * 1e6, 2),
        "json_dumps_sorted_us_per_entry": round(stdlib / n * 1e6, 2), "json_dumps_same_bytes": same,
        "entries": len(rows),
    }


def content_list(c: dict[str, Any]) -> list[Any]:
    """content_bytes()'s list, before rfc8785 serialises it."""
    return [VERSION, canonical_time(c["at"]), c["actor"], c["action"], c["subject"], c["purpose"],
            dict(c["details"]), list(c["nominals"])]


async def profile_verify(service: Service) -> list[dict[str, Any]]:
    """cProfile of one verify run (the event loop's thread): the top functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    await verifying.verify(service.sessions, hasher_for(service.ctx))
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(tt for (_, _, tt, _, _) in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:PROFILE_TOP]  # type: ignore[attr-defined]
    return [
        {"function": f"{path.rsplit('/', 2)[-1]}:{line}({name})", "calls": nc,
         "own_s": round(tt, 3), "own_share": round(tt / total, 3), "cumulative_s": round(ct, 3)}
        for (path, line, name), (_, nc, tt, ct, _) in top
    ]


async def bench_verify(service: Service) -> dict[str, Any]:
    hasher = hasher_for(service.ctx)
    started = time.perf_counter()
    result = await verifying.verify(service.sessions, hasher)
    verify_s = time.perf_counter() - started
    assert result.intact, result.broken
    entries = result.checked
    started = time.perf_counter()
    rows = await read_pages(service.sessions, verifying.PAGE, index=False)
    rows_s = time.perf_counter() - started
    started = time.perf_counter()
    await read_pages(service.sessions, verifying.PAGE, index=True)
    io_s = time.perf_counter() - started
    cpu_s = _timed(lambda: hash_in_memory(hasher, rows))
    per_s = {
        "verify": entries / verify_s, "io_floor_rows_only": entries / rows_s,
        "io_floor_rows_and_index": entries / io_s, "cpu_floor_hashing": entries / cpu_s,
    }
    # Both floors add up when one process does both one after another, as verify does.
    serial_floor = entries / (io_s + cpu_s)
    return {
        "entries": entries, "keyed": bool(hasher.key),
        "entries_per_s": {k: round(v, 1) for k, v in per_s.items()},
        "serial_floor_per_s": round(serial_floor, 1),
        "verify_vs_slower_floor": ratio(
            per_s["verify"], min(per_s["io_floor_rows_and_index"], per_s["cpu_floor_hashing"])
        ),
        "verify_vs_serial_floor": ratio(per_s["verify"], serial_floor),
        "canonicalisation": canonicalisation(rows),
        "profile_top_own_time": await profile_verify(service),
    }


# --- the benchmark ------------------------------------------------------------------------------


async def bench_audit(db_url: str, sizes: Sizes, entries: int) -> dict[str, Any]:
    """The audit benchmark on one database: `entries` writes a level and mode, then the two
    processes (PostgreSQL only), then verification over everything sealed."""
    writers_most = max(WRITERS)
    settings = make_settings(db_url, sizes, database={"pool_size": writers_most + 4})
    service = await create_service(settings)
    out: dict[str, Any] = {"entries_per_level": entries, "keyed": bool(settings.audit.key.get_secret_value())}
    try:
        await sealing.seal_pending(service.sessions, service.ctx)  # what other benchmarks audited
        out["writes"] = await bench_writes(service, sizes, entries)
        if not is_sqlite(db_url):
            out["two_processes"] = await two_processes(db_url, sizes, entries, writers_most)
        out["verify"] = await bench_verify(service)
    finally:
        await stop(service)
    return out


def table_rows(kind: str, audit: dict[str, Any]) -> list[tuple[str, ...]]:
    """The audit rows of the bench table (bench.harness.table)."""
    rows: list[tuple[str, ...]] = []
    for lv in audit.get("writes", []):
        c, b, s = lv["chained"], lv["baseline"], lv["chained"]["sealer"]
        rows.append((kind, f"audit write c={lv['writers']} p50/p99 ms", f"{c['p50_ms']}/{c['p99_ms']}",
                     f"{b['p50_ms']}/{b['p99_ms']}", f"p99 x{lv['p99_ratio']}"))
        rows.append((kind, f"audit write c={lv['writers']} writes/s", str(c["per_s"]), str(b["per_s"]),
                     f"x{lv['throughput_ratio']}"))
        u = lv["chained_no_sealer"]
        rows.append((kind, f"audit write, sealer off, c={lv['writers']} p99 ms, writes/s",
                     f"{u['p99_ms']}, {u['per_s']}", f"{b['p99_ms']}, {b['per_s']}",
                     f"p99 x{lv['p99_ratio_no_sealer']}"))
        rows.append((kind, f"audit seal lock c={lv['writers']} p50/p99/max ms",
                     f"{s['hold_p50_ms']}/{s['hold_p99_ms']}/{s['hold_max_ms']}",
                     f"batch p50 {s['entries_per_batch_p50']} max {s['entries_per_batch_max']}", ""))
    two = audit.get("two_processes")
    if two:
        s = two["sealer"]
        rows.append((kind, "audit 2 processes writes/s, p99 ms", f"{two['per_s']}, {two['p99_ms']}",
                     f"verify {two['verify']['checked']}/{two['verify']['entries_in_log']}",
                     "intact" if two["verify"]["intact"] else "BROKEN"))
        rows.append((kind, "audit 2 processes seal p50/p99/max ms",
                     f"{s['hold_p50_ms']}/{s['hold_p99_ms']}/{s['hold_max_ms']}",
                     f"batch p50 {s['entries_per_batch_p50']}", ""))
    ver = audit.get("verify")
    if ver:
        per = ver["entries_per_s"]
        rows.append((kind, f"audit verify {ver['entries']} entries/s", str(per["verify"]),
                     f"io {per['io_floor_rows_and_index']} / cpu {per['cpu_floor_hashing']}",
                     f"x{ver['verify_vs_slower_floor']} of min floor"))
    return rows
