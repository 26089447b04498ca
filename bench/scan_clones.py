"""`python -m bench.scan_clones build|run|compare`: the first scan, measured on clones of one data set.

Building the 1M-action set takes minutes; a scan takes seconds. So the set is built once per
database (`build`: a PostgreSQL database `scan_base` beside the one pg-temp made, a SQLite file),
and each measured scan (`run`) gets a fresh clone (`CREATE DATABASE .. TEMPLATE scan_base`, a
copy of the file). `run --tree DIR` runs the scan from another source tree (an exported older
commit), so "before" and "after" alternate on the same data in the same minutes. `compare`
checks two scanned clones row by row: alerts, their deliveries and their audit entries (alert
ids are random: each is replaced by its live key before comparing).

    python -m bench.scan_clones build --pg-url URL --sqlite /tmp/x/base.db [--nominals N --actions N]
    python -m bench.scan_clones run --pg-url URL [--pg-data DIR] [--tree DIR] [--keep NAME] [--spy F]
    python -m bench.scan_clones run --sqlite /tmp/x/base.db [--tree DIR] [--keep PATH] [--spy F]
    python -m bench.scan_clones compare URL_A URL_B

`--base NAME` keeps several PostgreSQL base sets (default scan_base); the sizes given to `run`
must be those given to `build` (the officers and teams go into the scan's configuration).
`--pg-data` (pg-temp's data directory) adds the server's CPU for each run; `--spy` records the
first run with py-spy (collapsed stacks). Run it under the bench lock, like `python -m bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.dataset import NOW, Sizes, settings_dict, write_toml
from bench.harness import prepare
from bench.measure import process_cpu_seconds
from casewatch.store.engine import make_engine

# The child: the CLI as `casewatch scan` runs it, then its own CPU time and peak memory.
_CHILD = (
    "import resource, sys, time\n"
    "started = time.perf_counter()\n"
    "from casewatch.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "use = resource.getrusage(resource.RUSAGE_SELF)\n"
    "helper = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(f'SCAN_RUSAGE={use.ru_utime:.3f} {use.ru_stime:.3f} {use.ru_maxrss} {helper}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _pg_url(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


async def _admin(url: str, sql: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.exec_driver_sql(sql)
    finally:
        await engine.dispose()


async def build(pg_url: str, sqlite: str, sizes: Sizes, base: str) -> None:
    if pg_url:
        await _admin(pg_url, f'DROP DATABASE IF EXISTS "{base}"')
        await _admin(pg_url, f'CREATE DATABASE "{base}"')
        print("postgres", await prepare(_pg_url(pg_url, base), sizes), flush=True)
    if sqlite:
        _copy_sqlite(None, sqlite)
        print("sqlite", await prepare(f"sqlite+aiosqlite:///{sqlite}", sizes), flush=True)


async def clone(pg_url: str, sqlite: str, name: str, base: str) -> str:
    """A fresh copy of the base set: its URL."""
    if pg_url:
        await _admin(pg_url, f'DROP DATABASE IF EXISTS "{name}"')
        await _admin(pg_url, f'CREATE DATABASE "{name}" TEMPLATE "{base}"')
        return _pg_url(pg_url, name)
    _copy_sqlite(sqlite, name)
    return f"sqlite+aiosqlite:///{name}"


def _copy_sqlite(source: str | None, target: str) -> None:
    """Remove `target` (and its WAL), then copy `source` (and its WAL, if any) there."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
        if source is not None and suffix != "-shm" and Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")


def _server_cpu(pg_data: str) -> float:
    """The CPU seconds of the PostgreSQL server's ended backends (the postmaster's reaped
    children), from /proc: a scan's connections end with it."""
    if not pg_data:
        return 0.0
    pid = (Path(pg_data) / "postmaster.pid").read_text().split()[0]
    return process_cpu_seconds(int(pid), reaped_children=True)


def scan(
    url: str, sizes: Sizes, tree: Path, workdir: Path, spy: str = "", pg_data: str = ""
) -> dict[str, Any]:
    """`casewatch scan --at NOW` from `tree`, as its own process, twice: wall, CPU, peak RSS.
    `spy`: record the first run with py-spy (100 Hz, collapsed stacks) into this file."""
    config = workdir / "bench.toml"
    write_toml(config, settings_dict(url, sizes))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEWATCH_")}
    env["PYTHONPATH"] = str(tree)
    at = NOW.isoformat().replace("+00:00", "Z")
    out: dict[str, Any] = {}
    # The bench's data set is as of NOW, far from the wall clock: --act says so (trees from before
    # the nineteenth session have no such option and need none).
    act = ["--act"] if '"--act"' in (tree / "casewatch" / "cli.py").read_text(encoding="utf-8") else []
    for run in ("first", "second"):
        command = [sys.executable, "-c", _CHILD, "scan", "--at", at, *act, "--config", str(config)]
        if spy and run == "first":
            py_spy = str(Path(sys.executable).with_name("py-spy"))
            command = [py_spy, "record", "-r", "100", "--format", "raw", "-o", spy, "--", *command]
        server = _server_cpu(pg_data)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            command,
            capture_output=True, text=True, env=env, cwd=workdir, check=False,
        )
        wall = time.perf_counter() - started
        time.sleep(0.2)  # the backends' exits reaped
        server = _server_cpu(pg_data) - server
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # The scan process and its helper, if any (py-spy's own too, with --spy).
        cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        user = system = peak = helper_peak = 0.0
        for line in done.stderr.splitlines():
            if line.startswith("SCAN_RUSAGE="):
                u, s, kb, helper_kb = line.split("=", 1)[1].split()
                user, system, peak, helper_peak = float(u), float(s), int(kb) / 1024, int(helper_kb) / 1024
        out[run] = {
            "exit": done.returncode, "wall_s": round(wall, 2), "user_s": user, "sys_s": system,
            "peak_mb": round(peak, 1), "helper_peak_mb": round(helper_peak, 1),
            "cpu_with_helper_s": round(cpu, 2), "server_cpu_s": round(server, 2),
            "opened": next((ln.split(":")[1].strip() for ln in done.stdout.splitlines()
                            if ln.startswith("alerts opened")), "?"),
        }
        if done.returncode:
            out[run]["stderr"] = done.stderr.strip().splitlines()[-5:]
    return out


async def run(args: argparse.Namespace, tree: Path) -> None:
    sizes = _sizes(args)
    name = args.keep or ("scan_clone" if args.pg_url else str(Path(args.sqlite).with_name("clone.db")))
    url = await clone(args.pg_url, args.sqlite, name, args.base)
    with tempfile.TemporaryDirectory(prefix="casewatch-scan-") as tmp:
        result = await asyncio.to_thread(scan, url, sizes, tree, Path(tmp), args.spy, args.pg_data)
    load = os.getloadavg()
    print(json.dumps({
        "db": "postgres" if args.pg_url else "sqlite", "tree": str(tree), "load": [round(x, 2) for x in load],
        **result,
    }), flush=True)


# --- row by row ------------------------------------------------------------------------------

# Columns that differ between two runs of the same scan by construction: ids, wall-clock times
# and hashes over them (the audit chain is checked by `casewatch audit verify`, not here).
_VOLATILE = {
    "alerts": {"id", "version", "opened_at", "next_escalation_at", "resolved_at"},
    "deliveries": {"id", "alert_id", "content_hash", "created_at", "next_attempt_at"},
    "audit_log": {"id", "at", "content_hash", "seq", "chain_hash"},
}


async def snapshot(url: str) -> dict[str, Counter[str]]:
    """Each table's rows as canonical JSON (alert ids replaced by their live keys), counted."""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            keys = {
                aid: f"<{key}>" for aid, key in (await conn.execute(text("SELECT id, live_key FROM alerts")))
            }
            ids = re.compile("|".join(re.escape(a) for a in sorted(keys, key=len, reverse=True)) or "(?!)")
            out: dict[str, Counter[str]] = {}
            for table, volatile in _VOLATILE.items():
                rows = (await conn.execute(text(f"SELECT * FROM {table}"))).mappings().all()  # noqa: S608
                counted: Counter[str] = Counter()
                for row in rows:
                    kept = {k: _plain(v) for k, v in row.items() if k not in volatile}
                    if table == "alerts":  # opened, raised, resolved at the wall clock's now, not --at
                        kept["escalates_after"] = _after(row["opened_at"], row["next_escalation_at"])
                        kept["resolved"] = row["resolved_at"] is not None
                    if table == "deliveries":
                        kept["alert"] = keys.get(row["alert_id"], row["alert_id"])
                    line = json.dumps(kept, sort_keys=True, default=str)
                    counted[ids.sub(lambda m: keys[m.group(0)], line)] += 1
                out[table] = counted
            return out
    finally:
        await engine.dispose()


def _after(start: Any, end: Any) -> int | None:
    if start is None or end is None:
        return None
    first, last = (datetime.fromisoformat(v) if isinstance(v, str) else v for v in (start, end))
    # To the minute: a raise times the next step from the raise, a few seconds after the opening.
    minutes: float = (last - first).total_seconds() / 60
    return round(minutes)


def _plain(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)  # SQLite hands JSON columns back as text
        except ValueError:
            return value
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "")
    return value


async def compare(url_a: str, url_b: str) -> int:
    a, b = await snapshot(url_a), await snapshot(url_b)
    failed = 0
    for table in _VOLATILE:
        only_a, only_b = a[table] - b[table], b[table] - a[table]
        same = sum(a[table].values()) - sum(only_a.values())
        print(f"{table}: {sum(a[table].values())} / {sum(b[table].values())} rows, {same} equal")
        for line in list(only_a)[:3]:
            print("  only A:", line[:400])
        for line in list(only_b)[:3]:
            print("  only B:", line[:400])
        failed += bool(only_a or only_b)
    return 1 if failed else 0


def _sizes(args: argparse.Namespace) -> Sizes:
    base = Sizes()
    names = ("nominals", "actions", "officers", "teams")
    return Sizes(**{n: getattr(args, n) or getattr(base, n) for n in names})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scan_clones")
    p.add_argument("command", choices=["build", "run", "compare"])
    p.add_argument("urls", nargs="*", help="compare: the two scanned databases' URLs")
    p.add_argument("--pg-url", default="", help="a pg-temp URL (the base and clones go beside it)")
    p.add_argument("--sqlite", default="", help="the SQLite base file")
    p.add_argument("--pg-data", default="", help="run: pg-temp's data directory (the server's CPU)")
    p.add_argument("--base", default="scan_base", help="the PostgreSQL base database's name")
    p.add_argument("--tree", default="", help="run: the source tree to scan with (default this one)")
    p.add_argument("--spy", default="", help="run: py-spy the first scan into this file (collapsed)")
    p.add_argument("--keep", default="", help="run: the clone's name (PostgreSQL database or file)")
    for name in ("nominals", "actions", "officers", "teams"):
        p.add_argument(f"--{name}", type=int, default=0)
    args = p.parse_args(argv)
    if args.command == "build":
        asyncio.run(build(args.pg_url, args.sqlite, _sizes(args), args.base))
        return 0
    if args.command == "run":
        if bool(args.pg_url) == bool(args.sqlite):
            p.error("run: one of --pg-url or --sqlite")
        tree = Path(args.tree or Path(__file__).parent.parent).resolve()
        asyncio.run(run(args, tree))
        return 0
    if len(args.urls) != 2:
        p.error("compare: two URLs")
    return asyncio.run(compare(*args.urls))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build", "clone", "compare", "scan", "snapshot"]
