"""Where one border check's end-to-end time goes: the e2e bench (bench.cases.bench_end_to_end)
with its steps timed, event by event.

    python -m bench.e2e_trace --db sqlite --alerts 100 [--nominals 10000 ...]

Wraps, for the run only, the steps of the lone path: the POST read and its signature checked,
the JSON parsed, the ingest transaction (each statement, its commit), the handoff to the worker,
the round, each send (and, for SMTP, each command of the client), the record transaction, the
audit sealer's rounds; and, from their own processes (bench.cases.bench_end_to_end's `observe`),
the Slack stand-in's receipts ("standin:received") and the relay's acceptances ("sink:accepted").
With CASEWATCH_BENCH_SLACK=loop the stand-in's handler is timed in this process too. Events are
~0.2 s apart and each takes ~20 ms, so each mark belongs to the event whose window (its POST to
the next POST) it falls in. Prints each step's p50 / p90 / max across events, in ms from the
POST, and the ingest's statements.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import functools
import gc
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import event
from sqlalchemy.orm import Session

import casewatch.api.events as events_api
import casewatch.ingest.group as group_mod
from bench import cases
from bench.dataset import Sizes
from bench.harness import Options, database, prepare
from bench.measure import percentile
from casewatch.bell import Handoff
from casewatch.delivery.worker import DeliveryWorker
from tests.slack_standin import Call

PHASE: contextvars.ContextVar[str] = contextvars.ContextVar("phase", default="other")
Mark = tuple[float, str, str, float]  # (monotonic start, phase, label, duration s)


class Trace:
    def __init__(self) -> None:
        self.marks: list[Mark] = []
        self.gcs: list[tuple[float, int, float]] = []
        self._gc_start = 0.0
        self.gen2: list[dict[str, Any]] = []

    def mark(self, label: str, at: float | None = None, duration: float = 0.0) -> None:
        self.marks.append((time.monotonic() if at is None else at, PHASE.get(), label, duration))

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.monotonic()
        else:
            self.gcs.append((self._gc_start, int(info["generation"]), time.monotonic() - self._gc_start))
            if info["generation"] == 2:
                self.gen2.append({
                    "ms": round((time.monotonic() - self._gc_start) * 1000, 1),
                    "collected": info["collected"], "left_in_gen2": len(gc.get_objects(2)),
                    "frozen": gc.get_freeze_count(),
                })


def _wrap_async(owner: Any, name: str, label: str, trace: Trace, phase: str | None = None) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        token = PHASE.set(phase) if phase is not None else None
        start = time.monotonic()
        trace.mark(f"{label}.start", start)
        try:
            return await original(*args, **kwargs)
        finally:
            trace.mark(f"{label}.end", duration=time.monotonic() - start)
            if token is not None:
                PHASE.reset(token)

    setattr(owner, name, timed)


def _wrap_sync(owner: Any, name: str, label: str, trace: Trace) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            trace.mark(label, start, time.monotonic() - start)

    setattr(owner, name, timed)


def install(trace: Trace) -> Callable[[], None]:
    """Patch the steps; returns what undoes it."""
    saved: list[tuple[Any, str, Any]] = []

    def keep(owner: Any, name: str) -> None:
        saved.append((owner, name, getattr(owner, name)))

    import aiosmtplib

    import tests.slack_standin as standin
    from integrations.slack_notifier import SlackNotifier
    from integrations.smtp_notifier import SmtpNotifier

    for owner, name in ((events_api, "signature_problem"), (events_api, "loads_strict"),
                        (events_api, "parse_envelopes"), (Handoff, "hand"), (Handoff, "take")):
        keep(owner, name)
        _wrap_sync(owner, name, name, trace)
    keep(group_mod.GroupCommit, "ingest")
    _wrap_async(group_mod.GroupCommit, "ingest", "group_ingest", trace, phase="ingest")
    keep(group_mod, "ingest")
    _wrap_async(group_mod, "ingest", "pipeline", trace)
    keep(DeliveryWorker, "_run_round")
    _wrap_async(DeliveryWorker, "_run_round", "round", trace, phase="deliver")
    keep(DeliveryWorker, "_record_many")
    _wrap_async(DeliveryWorker, "_record_many", "record", trace)
    keep(DeliveryWorker, "_claim")
    _wrap_async(DeliveryWorker, "_claim", "claim", trace, phase="claim")
    keep(SlackNotifier, "send")
    _wrap_async(SlackNotifier, "send", "slack_send", trace)
    keep(SmtpNotifier, "send")
    _wrap_async(SmtpNotifier, "send", "smtp_send", trace)
    for name in ("mail", "rcpt", "data", "sendmail"):
        keep(aiosmtplib.SMTP, name)
        _wrap_async(aiosmtplib.SMTP, name, f"smtp_{name}", trace)
    import casewatch.audit.seal as seal

    keep(seal, "seal_once")
    _wrap_async(seal, "seal_once", "seal", trace, phase="seal")
    keep(standin.SlackStandIn, "_handle")
    _wrap_async(standin.SlackStandIn, "_handle", "standin", trace)

    def undo() -> None:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)

    return undo


def watch_engine(engine: Any, trace: Trace) -> None:
    sync = engine.sync_engine

    @event.listens_for(sync, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        conn.info["trace_started"] = time.monotonic()

    @event.listens_for(sync, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        start = conn.info.pop("trace_started", time.monotonic())
        words = statement.split()
        verb = words[0].upper() if words else "?"
        table = ""
        for keyword in ("INTO", "FROM", "UPDATE"):
            if keyword in (w.upper() for w in words[:12]):
                idx = [w.upper() for w in words].index(keyword)
                if idx + 1 < len(words):
                    table = words[idx + 1].strip('"')
                    break
        if verb == "UPDATE" and len(words) > 1:
            table = words[1].strip('"')
        trace.mark(f"sql {verb} {table}", start, time.monotonic() - start)

    @event.listens_for(sync, "commit")
    def _commit(conn: Any) -> None:
        trace.mark("commit.start")


def watch_sessions(trace: Trace) -> None:
    @event.listens_for(Session, "after_commit")
    def _committed(session: Any) -> None:
        trace.mark("commit.end")


def analyse(trace: Trace, result: dict[str, Any], sent: list[float], sink_at: list[float]) -> dict[str, Any]:
    windows = [(s, sent[i + 1] if i + 1 < len(sent) else s + 10.0) for i, s in enumerate(sent)]
    per_event: list[dict[str, Any]] = []
    marks = sorted(trace.marks)
    j = 0
    for start, end in windows:
        while j < len(marks) and marks[j][0] < start:
            j += 1
        k = j
        firsts: dict[str, float] = {}
        sql: list[tuple[str, float, float]] = []
        for at, phase, label, duration in marks[j:]:
            if at >= end:
                break
            k += 1
            key = f"{phase}:{label}"
            if label.endswith(".end"):
                firsts.setdefault(key, at + 0 - start)
            else:
                firsts.setdefault(key, at - start)
            if label.startswith("sql ") and phase == "ingest":
                sql.append((label, at - start, duration))
        per_event.append({"firsts": firsts, "ingest_sql": sql})
    steps: dict[str, list[float]] = defaultdict(list)
    for ev in per_event:
        for key, offset in ev["firsts"].items():
            steps[key].append(offset * 1000)
    table = {
        key: {"n": len(v), "p50": round(percentile(v, 50), 2), "p90": round(percentile(v, 90), 2),
              "max": round(max(v), 2)}
        for key, v in sorted(steps.items(), key=lambda kv: percentile(kv[1], 50))
    }
    sql_count = [len(ev["ingest_sql"]) for ev in per_event]
    sql_time = [sum(d for _, _, d in ev["ingest_sql"]) * 1000 for ev in per_event]
    by_stmt: dict[str, list[float]] = defaultdict(list)
    for ev in per_event:
        for label, _, d in ev["ingest_sql"]:
            by_stmt[label].append(d * 1000)
    durations: dict[str, list[float]] = defaultdict(list)
    for _at, phase, label, duration in marks:
        if duration and not label.startswith("sql "):
            durations[f"{phase}:{label}"].append(duration * 1000)
    return {
        "steps_ms_from_post": table,
        "ingest_statements": {"count_p50": percentile(sql_count, 50), "count_max": max(sql_count),
                              "time_p50_ms": round(percentile(sql_time, 50), 2),
                              "time_p90_ms": round(percentile(sql_time, 90), 2)},
        "ingest_statement_kinds": {
            k: {"n_per_event": round(len(v) / len(per_event), 2), "p50": round(percentile(v, 50), 3),
                "p90": round(percentile(v, 90), 3)}
            for k, v in sorted(by_stmt.items())
        },
        "durations_ms": {
            k: {"n": len(v), "p50": round(percentile(v, 50), 2), "p90": round(percentile(v, 90), 2),
                "max": round(max(v), 2)}
            for k, v in sorted(durations.items())
        },
        "gc_over_5ms": [(round(d * 1000, 1), g) for _, g, d in trace.gcs if d > 0.005],
        "slowest": slowest_events(marks, trace.gcs, windows),
        "raw": [(round((at - sent[0]) * 1000, 3), phase, label, round(d * 1000, 3))
                for at, phase, label, d in marks if sent and at >= sent[0]],
        "sent_ms": [round((s - sent[0]) * 1000, 3) for s in sent],
    }


def slowest_events(
    marks: list[Mark], gcs: list[tuple[float, int, float]], windows: list[tuple[float, float]],
    count: int = 6,
) -> list[dict[str, Any]]:
    """The `count` events whose mail the sink accepted last (from the POST): each one's largest
    gaps between consecutive marks up to that acceptance (where its time went: the mark before a
    gap is the step that took it, or after which the loop or the disk was busy elsewhere), and
    what else ran in its window then (the sealer, a claim, a record transaction, collections)."""
    events = []
    for start, end in windows:
        inside = [(at - start, f"{phase}:{label}", d) for at, phase, label, d in marks if start <= at < end]
        accepted = next((off for off, key, _ in inside if key == "sink:accepted"), None)
        if accepted is None:
            continue
        upto = [m for m in inside if m[0] <= accepted]
        gaps = sorted(
            ((b[0] - a[0], a[1], b[1]) for a, b in zip(upto, upto[1:], strict=False)), reverse=True
        )[:3]
        others = sorted({key.rsplit(".", 1)[0] for _, key, _ in upto
                         if key.split(":", 1)[0] in ("seal", "claim") or "record" in key})
        collected = [(round((at - start) * 1000, 1), gen, round(d * 1000, 1))
                     for at, gen, d in gcs if start <= at < start + accepted]
        event: dict[str, Any] = {
            "email_ms": round(accepted * 1000, 2),
            "answer_ms": next((round(o * 1000, 2) for o, k, _ in upto if k == "ingest:commit.end"), None),
            "gaps_ms": [(round(g * 1000, 2), a, b) for g, a, b in gaps],
            "beside": others, "gc": collected,
        }
        events.append(event)
    return sorted(events, key=lambda e: float(e["email_ms"]), reverse=True)[:count]


def no_autocheckpoint(engine: Any) -> None:
    """SQLite: no automatic checkpoint in the service's commits (the WAL grows for the run)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _pragma(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()


async def run(kind: str, sizes: Sizes, alerts: int, *, autocheckpoint: bool = True) -> dict[str, Any]:
    trace = Trace()
    options = Options(sizes=sizes, databases=[kind])
    async with database(kind, options) as url:
        await prepare(url, sizes)
        sent_log: list[float] = []
        patched = cast(Any, cases)  # the bench's own names, replaced for this run
        make_service = patched.create_service

        async def traced_service(*args: Any, **kwargs: Any) -> Any:
            service = await make_service(*args, **kwargs)
            watch_engine(service.engine, trace)
            if not autocheckpoint and kind == "sqlite":
                no_autocheckpoint(service.engine)
            return service

        def observe(sent: list[float], calls: list[Call], accepted: list[tuple[str, float]]) -> None:
            """The timed POSTs' send times; the stand-in's receipts and the sink's acceptances as
            marks (in whichever process they ran: their times are time.monotonic() too)."""
            sent_log.extend(sent)
            for call in calls:
                if call.method == "chat.postMessage":
                    trace.marks.append((call.at, "standin", "received", 0.0))
            for _subject, at in accepted:
                trace.marks.append((at, "sink", "accepted", 0.0))

        undo = install(trace)
        watch_sessions(trace)
        patched.create_service = traced_service
        gc.callbacks.append(trace.on_gc)
        try:
            rate = max(1.0, min(10.0, sizes.teams / 2))  # as bench.harness
            result = await cases.bench_end_to_end(url, sizes, alerts, rate=rate, observe=observe)
        finally:
            gc.callbacks.remove(trace.on_gc)
            patched.create_service = make_service
            undo()
    out = analyse(trace, result, sent_log, [])
    out["bench"] = {k: result[k] for k in ("slack", "email", "http_answer")}
    out["bench"]["processes"] = {k: result[k] for k in ("sink", "slack_standin", "sender")}
    out["gen2"] = trace.gen2
    return out


def bare_commits(count: int, autocheckpoint: int) -> dict[str, Any]:
    """One small row and a commit, `count` times, on a fresh WAL file with synchronous=FULL (the
    service's pragmas), on this machine's disk: what a durable commit costs alone, and what the
    commit that runs SQLite's automatic checkpoint (every `autocheckpoint` WAL pages) costs."""
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory(prefix="casewatch-commit-") as tmp:
        db = sqlite3.connect(f"{tmp}/c.db", isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", f"wal_autocheckpoint={autocheckpoint}"):
            db.execute(f"PRAGMA {pragma}")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
        body = "x" * 2000  # about an event's rows: the page or two each statement touches
        times: list[float] = []
        for _ in range(count):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (body) VALUES (?)", (body,))
            started = time.perf_counter()
            db.execute("COMMIT")
            times.append((time.perf_counter() - started) * 1000)
        db.close()
    slow = sorted(times)[-5:]
    return {"commits": count, "wal_autocheckpoint": autocheckpoint, "p50_ms": round(percentile(times, 50), 3),
            "p90_ms": round(percentile(times, 90), 3), "p99_ms": round(percentile(times, 99), 3),
            "slowest_ms": [round(x, 1) for x in slow]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.e2e_trace")
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--alerts", type=int, default=100)
    for name, default in (("nominals", 10000), ("actions", 50000), ("officers", 200), ("teams", 10)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--out", default="")
    p.add_argument("--hold", type=float, default=None, help="worker.RECORD_HOLD_SECONDS for this run")
    p.add_argument("--no-autocheckpoint", action="store_true", help="SQLite: wal_autocheckpoint=0")
    p.add_argument("--seal-burst", type=float, default=None, help="audit.seal.BURST_SECONDS for this run")
    p.add_argument("--bare-commits", type=int, default=0, help="time this many bare commits instead")
    args = p.parse_args(argv)
    if args.bare_commits:
        for autocheckpoint in (1000, 0):
            print(bare_commits(args.bare_commits, autocheckpoint))
        return 0
    if args.seal_burst is not None:
        import casewatch.audit.seal as seal

        seal.BURST_SECONDS = args.seal_burst
    if args.hold is not None:
        import casewatch.delivery.worker as worker

        worker.RECORD_HOLD_SECONDS = args.hold
    sizes = Sizes(nominals=args.nominals, actions=args.actions, officers=args.officers, teams=args.teams)
    out = asyncio.run(run(args.db, sizes, args.alerts, autocheckpoint=not args.no_autocheckpoint))
    text = json.dumps(out, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    steps = out["steps_ms_from_post"]
    print(f"{'step (phase:label)':48} {'n':>4} {'p50':>7} {'p90':>7} {'max':>7}")
    for key, row in steps.items():
        print(f"{key:48} {row['n']:>4} {row['p50']:>7} {row['p90']:>7} {row['max']:>7}")
    print("ingest statements:", out["ingest_statements"])
    for k, v in out["ingest_statement_kinds"].items():
        print(f"  {k:48} {v}")
    print("durations:")
    for k, v in out["durations_ms"].items():
        print(f"  {k:48} {v}")
    print("gc > 5 ms:", out["gc_over_5ms"], "gen2:", out["gen2"])
    print("slowest events (mail accepted, ms from the POST; commit.end = durable):")
    for slow in out["slowest"]:
        print(f"  {slow}")
    for part in ("slack", "email", "http_answer"):
        b = out["bench"][part]
        print(part, {k: b.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
