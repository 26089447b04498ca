"""Where SQLite's long commits come from: the e2e bench (bench.cases.bench_end_to_end) with every
call the service makes on its SQLite connections' threads timed there, and for each COMMIT what
the WAL did during it.

    python -m bench.commit_trace --alerts 300 [--no-autocheckpoint] [--out FILE]

Each call aiosqlite runs on a connection's thread (a statement's trip, a commit) is timed twice:
on that thread (what SQLite itself took) and on the event loop (from the call until the loop
resumes the awaiting task: the thread's queue, SQLite, then waiting for the loop). For a commit
the WAL index (the -shm file) is read before and after it on the thread, without taking a lock:
its checkpoint record says how many WAL frames are already copied into the database
(nBackfill), its header how many the WAL holds (mxFrame). nBackfill rising inside a commit means
that commit ran a checkpoint (only the automatic checkpoint does that inside a commit); mxFrame
falling means the WAL was started again from its beginning.

The -shm layout (little-endian here, the machine's order): WalIndexHdr at 0 (mxFrame at 16), a
second copy at 48, WalCkptInfo at 96 (nBackfill at 96). Source: SQLite's wal.c ("The wal-index
header" and "struct WalCkptInfo") and https://www.sqlite.org/walformat.html section 2.2 (the
same offsets).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiosqlite

from bench import cases
from bench.dataset import Sizes
from bench.harness import Options, database, prepare
from bench.measure import percentile
from casewatch.store import sqlite_driver


@dataclass
class WalState:
    mx_frame: int
    backfilled: int
    wal_bytes: int
    db_bytes: int
    db_mtime_ns: int


def wal_state(db_path: str) -> WalState | None:
    """The WAL index's frame counts and the files' sizes, read without SQLite's locks (a
    snapshot that may be torn while another connection writes: good enough for a trace)."""
    try:
        with open(db_path + "-shm", "rb") as shm:
            head = shm.read(136)
        wal_bytes = os.stat(db_path + "-wal").st_size
        db_stat = os.stat(db_path)
    except OSError:
        return None
    if len(head) < 100:
        return None
    (mx_frame,) = struct.unpack_from("<I", head, 16)
    (backfilled,) = struct.unpack_from("<I", head, 96)
    return WalState(mx_frame, backfilled, wal_bytes, db_stat.st_size, db_stat.st_mtime_ns)


@dataclass
class Call:
    kind: str  # "commit", "statement", "other"
    task: str
    called: float  # loop: monotonic when the call was queued
    ran: float = 0.0  # thread: when SQLite's work began
    ran_s: float = 0.0  # thread: how long it took
    resumed: float = 0.0  # loop: when the awaiting task had the result
    thread: str = ""
    before: WalState | None = None
    after: WalState | None = None
    statement: str = ""
    tid: int = 0
    # The thread's kernel stacks (/proc/self/task/TID/stack) sampled while the call ran long.
    stacks: list[tuple[float, str]] = field(default_factory=list)


def kernel_stack(tid: int) -> str:
    try:
        with open(f"/proc/self/task/{tid}/stack") as f:
            frames = [line.split("] ", 1)[-1].split("+", 1)[0] for line in f.read().splitlines()]
    except OSError:
        return "?"
    return " < ".join(frames[:12])


def meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("Dirty", "Writeback"):
                    out[name] = int(rest.split()[0])
    except OSError:
        pass
    return out


def disk_counters(device: str = "vda") -> tuple[int, ...]:
    """/proc/diskstats for `device`: writes completed, sectors written, ms writing, I/Os in flight,
    flushes completed, ms flushing (Documentation/admin-guide/iostats.rst, fields 5, 7, 8, 9, 16, 17)."""
    try:
        with open("/proc/diskstats") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 20 and parts[2] == device:
                    return tuple(int(parts[3 + i]) for i in (4, 6, 7, 8, 15, 16))
    except OSError:
        pass
    return ()


@dataclass
class Recorder:
    db_path: str = ""
    calls: list[Call] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)  # each POST /api/v1/events
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (when, how late) the loop woke
    running: dict[int, Call] = field(default_factory=dict)  # calls now on a driver thread, by tid
    heartbeat: float = 0.0  # the loop's last wake-up (watch_loop)
    loop_tid: int = 0
    loop_stacks: list[tuple[float, str, str]] = field(default_factory=list)
    memory: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    apart: list[tuple[float, float, bool]] = field(default_factory=list)  # checkpointer: start, s, restart
    disk: list[tuple[float, tuple[int, ...]]] = field(default_factory=list)
    stop_watchdog: threading.Event = field(default_factory=threading.Event)
    collections: list[tuple[float, int, float]] = field(default_factory=list)  # gc: start, generation, s
    _gc_started: float = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """A gc.callbacks hook: each collection of this process, its generation and how long it took
        (the loop is held for all of it)."""
        if phase == "start":
            self._gc_started = time.monotonic()
        else:
            took = time.monotonic() - self._gc_started
            self.collections.append((self._gc_started, int(info["generation"]), took))

    def watchdog(self, every: float = 0.002, long: float = 0.008) -> None:
        """A thread: while a driver call has run `long` or more, sample its kernel stack (where it
        waits: an fsync, a page fault, a lock); likewise the loop's thread when its heartbeat is
        that late (with its Python frame); and the kernel's dirty and writeback memory each 50 ms."""
        last_memory = 0.0
        while not self.stop_watchdog.wait(every):
            now = time.monotonic()
            for tid, call in list(self.running.items()):
                if now - call.ran >= long and len(call.stacks) < 40:
                    call.stacks.append((now, kernel_stack(tid)))
            loop_late = self.heartbeat and now - self.heartbeat >= long
            if loop_late and self.loop_tid and len(self.loop_stacks) < 400:
                frame = sys._current_frames().get(threading.main_thread().ident or 0)
                where = ""
                if frame is not None:
                    code = frame.f_code
                    where = f"{code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {code.co_name}"
                self.loop_stacks.append((now, kernel_stack(self.loop_tid), where))
            self.disk.append((now, disk_counters()))
            if now - last_memory >= 0.05:
                last_memory = now
                self.memory.append((now, meminfo()))

    async def watch_loop(self, every: float = 0.002, late: float = 0.010) -> None:
        """Notes each time the loop woke this task `late` or more after it asked to be woken:
        the loop was busy (or the process had no CPU) that long."""
        self.loop_tid = threading.get_native_id()
        while True:
            due = time.monotonic() + every
            self.heartbeat = due
            await asyncio.sleep(every)
            overshoot = time.monotonic() - due
            if overshoot >= late:
                self.stalls.append((due, overshoot))

    def wrap(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Call, Callable[..., Any]]:
        kind, statement = "other", ""
        if fn is sqlite_driver._commit_after or getattr(fn, "__name__", "") == "commit":
            kind = "commit"
        elif fn is sqlite_driver._run:
            kind, statement = "statement", " ".join(str(args[2]).split()[:4])
        task = asyncio.current_task()
        coro = task.get_coro() if task is not None else None
        name = getattr(coro, "__qualname__", "?") if coro is not None else "?"
        call = Call(kind, name, time.monotonic(), statement=statement)
        path = self.db_path

        running = self.running

        def timed(*a: Any, **kw: Any) -> Any:
            call.thread = threading.current_thread().name
            call.tid = threading.get_native_id()
            if kind == "commit":
                call.before = wal_state(path)
            call.ran = time.monotonic()
            running[call.tid] = call
            try:
                return fn(*a, **kw)
            finally:
                call.ran_s = time.monotonic() - call.ran
                running.pop(call.tid, None)
                if kind == "commit":
                    call.after = wal_state(path)

        self.calls.append(call)
        return call, timed


def install(recorder: Recorder) -> Callable[[], None]:
    original = aiosqlite.Connection._execute

    async def _execute(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        call, timed = recorder.wrap(fn, args)
        try:
            return await original(self, timed, *args, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            call.resumed = time.monotonic()

    aiosqlite.Connection._execute = _execute  # type: ignore[method-assign]

    def undo() -> None:
        aiosqlite.Connection._execute = original  # type: ignore[method-assign]

    return undo


def commit_row(call: Call, origin: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "at_ms": round((call.called - origin) * 1000, 1), "task": call.task,
        "sqlite_ms": round(call.ran_s * 1000, 2),
        "queued_ms": round((call.ran - call.called) * 1000, 2),
        "loop_wait_ms": round((call.resumed - call.ran - call.ran_s) * 1000, 2),
        "on_loop_ms": round((call.resumed - call.called) * 1000, 2),
    }
    if call.before is not None and call.after is not None:
        row["checkpointed_frames"] = call.after.backfilled - call.before.backfilled
        row["wal_frames"] = [call.before.mx_frame, call.after.mx_frame]
        row["wal_mb"] = round(call.after.wal_bytes / 1e6, 2)
        row["db_written"] = call.after.db_mtime_ns != call.before.db_mtime_ns
    return row


def event_of(recorder: Recorder, at: float) -> int | None:
    """The index of the last POST sent at or before `at` (None before the first)."""
    index = None
    for i, sent in enumerate(recorder.sent):
        if sent > at:
            break
        index = i
    return index


def disk_during(recorder: Recorder, start: float, end: float) -> dict[str, int]:
    """What the disk did from just before `start` to just after `end`: writes and flushes
    completed (every process's), the most I/Os in flight at once."""
    window = [(at, c) for at, c in recorder.disk if start - 0.003 <= at <= end + 0.003 and c]
    if len(window) < 2:
        return {}
    first, last = window[0][1], window[-1][1]
    return {"writes": last[0] - first[0], "kb_written": (last[1] - first[1]) // 2,
            "flushes": last[4] - first[4], "most_in_flight": max(c[3] for _, c in window)}


def memory_at(recorder: Recorder, at: float) -> dict[str, int]:
    """Dirty and writeback memory (kB) at the sample nearest `at`."""
    if not recorder.memory:
        return {}
    return min(recorder.memory, key=lambda sample: abs(sample[0] - at))[1]


def summarise(recorder: Recorder, origin: float, slow_ms: float) -> dict[str, Any]:
    commits = [c for c in recorder.calls if c.kind == "commit" and c.called >= origin and c.resumed]
    statements = [c for c in recorder.calls if c.kind == "statement" and c.called >= origin and c.resumed]
    def beside_apart(c: Call) -> bool:
        return any(at < c.ran + c.ran_s and c.ran < at + took for at, took, _ in recorder.apart)

    advanced = [c for c in commits if c.before and c.after and c.after.backfilled > c.before.backfilled]
    checkpointing = [c for c in advanced if not beside_apart(c)]
    plain = [c for c in commits if c not in checkpointing]
    overlapping = [c for c in commits if beside_apart(c)]

    def stats(calls: list[Call], attr: Callable[[Call], float]) -> dict[str, Any]:
        values = [attr(c) * 1000 for c in calls]
        if not values:
            return {"n": 0}
        return {"n": len(values), "p50": round(percentile(values, 50), 2),
                "p90": round(percentile(values, 90), 2), "p99": round(percentile(values, 99), 2),
                "max": round(max(values), 2)}

    def on_loop(c: Call) -> float:
        return c.resumed - c.called

    def in_sqlite(c: Call) -> float:
        return c.ran_s

    slow = [c for c in commits + statements if on_loop(c) * 1000 >= slow_ms]
    last = commits[-1].after if commits and commits[-1].after else None
    return {
        "commits_in_sqlite_ms": stats(commits, in_sqlite),
        "commits_on_loop_ms": stats(commits, on_loop),
        "checkpointing_commits": {
            "count": len(checkpointing), "in_sqlite_ms": stats(checkpointing, in_sqlite),
            "on_loop_ms": stats(checkpointing, on_loop),
        },
        "other_commits_in_sqlite_ms": stats(plain, in_sqlite),
        "checkpoints_apart": {
            "count": len(recorder.apart), "restart": sum(r for _, _, r in recorder.apart),
            "ms": stats([Call("apart", "", 0.0, ran_s=took) for _, took, _ in recorder.apart], in_sqlite),
            "commits_beside": len(overlapping), "commits_beside_in_sqlite_ms": stats(overlapping, in_sqlite),
        },
        "statements_in_sqlite_ms": stats(statements, in_sqlite),
        "statements_on_loop_ms": stats(statements, on_loop),
        "slow_calls": [
            {**commit_row(c, origin), "kind": c.kind, "statement": c.statement,
             "event": event_of(recorder, c.called), "thread": c.thread,
             "kernel_stacks": sorted({stack for _, stack in c.stacks}),
             "memory_kb": memory_at(recorder, c.ran), "disk": disk_during(recorder, c.ran, c.ran + c.ran_s),
             "beside_checkpoint": beside_apart(c)} for c in slow
        ],
        "loop_stacks": [
            {"at_ms": round((at - origin) * 1000, 1), "kernel": stack, "python": where}
            for at, stack, where in recorder.loop_stacks
            if recorder.sent and recorder.sent[0] <= at <= recorder.sent[-1] + 1.0
        ][:60],
        "loop_stalls": [
            {"at_ms": round((at - origin) * 1000, 1), "late_ms": round(late * 1000, 1),
             "event": event_of(recorder, at)} for at, late in recorder.stalls if at >= origin
        ],
        "collections": {
            str(generation): {
                "count": len(took), "ms": stats([Call("gc", "", 0.0, ran_s=t) for t in took], in_sqlite),
            }
            for generation in (0, 1, 2)
            if (took := [t for at, g, t in recorder.collections if g == generation and at >= origin])
        },
        "long_collections": [
            {"at_ms": round((at - origin) * 1000, 1), "generation": g, "ms": round(took * 1000, 2),
             "event": event_of(recorder, at)}
            for at, g, took in recorder.collections if at >= origin and took >= 0.005
        ][:60],
        "sent": {"first_ms": round((recorder.sent[0] - origin) * 1000, 1) if recorder.sent else None,
                 "last_ms": round((recorder.sent[-1] - origin) * 1000, 1) if recorder.sent else None,
                 "count": len(recorder.sent)},
        "checkpoints": [commit_row(c, origin) for c in checkpointing],
        "wal_at_end": None if last is None else {
            "frames": last.mx_frame, "mb": round(last.wal_bytes / 1e6, 2),
        },
    }


async def run(
    sizes: Sizes, alerts: int, *, autocheckpoint: bool, slow_ms: float, checkpointer: str = "wiring"
) -> dict[str, Any]:
    recorder = Recorder()
    options = Options(sizes=sizes, databases=["sqlite"])
    async with database("sqlite", options) as url:
        await prepare(url, sizes)
        recorder.db_path = url.split("///", 1)[1]
        patched = cast(Any, cases)
        make_service = patched.create_service
        import casewatch.wiring as wiring

        wired = getattr(wiring, "start_wal_checkpoints", None)
        started: list[float] = []

        async def traced_service(*args: Any, **kwargs: Any) -> Any:
            service = await make_service(*args, **kwargs)
            if not autocheckpoint:
                from bench.e2e_trace import no_autocheckpoint

                no_autocheckpoint(service.engine)
            if checkpointer == "on" and wired is None:  # as casewatch.wiring.start_background does
                from casewatch.store.checkpoint import start_wal_checkpoints

                stop_checkpoints = start_wal_checkpoints(service.engine)
                if stop_checkpoints is not None:
                    service.cleanups.insert(0, stop_checkpoints)
            started.append(time.monotonic())
            return service

        def observe(sent: list[float], _calls: Any, _accepted: Any) -> None:
            recorder.sent.extend(sent)

        from casewatch.store import checkpoint

        timed_checkpoint = checkpoint.WalCheckpointer._checkpoint

        def checkpoint_apart(self: Any, *, restart: bool) -> int:
            started_at = time.monotonic()
            try:
                return timed_checkpoint(self, restart=restart)
            finally:
                recorder.apart.append((started_at, time.monotonic() - started_at, restart))

        checkpoint.WalCheckpointer._checkpoint = checkpoint_apart  # type: ignore[method-assign]
        if checkpointer == "off" and wired is not None:
            cast(Any, wiring).start_wal_checkpoints = lambda *_args, **_kwargs: None
        undo = install(recorder)
        gc.callbacks.append(recorder.on_gc)
        patched.create_service = traced_service
        watcher = asyncio.create_task(recorder.watch_loop())
        dog = threading.Thread(target=recorder.watchdog, name="commit-trace-watchdog", daemon=True)
        dog.start()
        try:
            rate = max(1.0, min(10.0, sizes.teams / 2))  # as bench.harness
            result = await cases.bench_end_to_end(url, sizes, alerts, rate=rate, observe=observe)
        finally:
            recorder.stop_watchdog.set()
            gc.callbacks.remove(recorder.on_gc)
            watcher.cancel()
            patched.create_service = make_service
            checkpoint.WalCheckpointer._checkpoint = timed_checkpoint  # type: ignore[method-assign]
            if wired is not None:
                cast(Any, wiring).start_wal_checkpoints = wired
            undo()
            dog.join()
    out = summarise(recorder, started[0] if started else 0.0, slow_ms)
    out["bench"] = {part: {k: result[part].get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "worst")}
                    for part in ("slack", "email", "http_answer")}
    out["autocheckpoint"] = autocheckpoint
    out["checkpointer"] = checkpointer
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.commit_trace")
    p.add_argument("--alerts", type=int, default=300)
    for name, default in (("nominals", 10000), ("actions", 50000), ("officers", 200), ("teams", 10)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--no-autocheckpoint", action="store_true", help="wal_autocheckpoint=0 on the service")
    p.add_argument("--checkpointer", choices=["wiring", "on", "off"], default="wiring",
                   help="on: store.checkpoint's WalCheckpointer (started here if casewatch.wiring does not); "
                   "off: none (SQLite's checkpoint in the commits, as before); wiring: as the tree does")
    p.add_argument("--slow-ms", type=float, default=15.0, help="list calls at least this long on the loop")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    sizes = Sizes(nominals=args.nominals, actions=args.actions, officers=args.officers, teams=args.teams)
    autocheckpoint = not args.no_autocheckpoint
    out = asyncio.run(run(sizes, args.alerts, autocheckpoint=autocheckpoint, slow_ms=args.slow_ms,
                          checkpointer=args.checkpointer))
    text = json.dumps(out, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    for key, value in out.items():
        if isinstance(value, list):
            print(f"{key}:")
            for item in value:
                print("  ", json.dumps(item))
        else:
            print(f"{key}: {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
