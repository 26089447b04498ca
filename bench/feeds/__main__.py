"""`python -m bench.feeds [--only snapshot,mail,probation] [--db sqlite|postgres|both] [--quick]`

Each feed's bench (bench/feeds/<name>.py, `async def run(options) -> dict`) measures its adapter
and, in the same run, a least-work baseline for the same job; this prints what each returns and
writes the JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FEEDS = ("snapshot", "mail", "probation")


@dataclass
class FeedOptions:
    databases: list[str]
    quick: bool
    work_dir: Path
    pg_url: str = ""  # an empty PostgreSQL database to use; "" = start a throw-away one
    rows: int = 0  # snapshot rows / mails / events; 0 = each bench's default
    extra: dict[str, Any] = field(default_factory=dict)


def parse(argv: list[str] | None = None) -> tuple[FeedOptions, list[str], Path]:
    p = argparse.ArgumentParser(prog="python -m bench.feeds", description="casewatch feed benchmarks")
    p.add_argument("--only", default=",".join(FEEDS), help=f"comma-separated: {','.join(FEEDS)}")
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    p.add_argument("--quick", action="store_true", help="a smoke run: small inputs")
    p.add_argument("--rows", type=int, default=0, help="rows/mails/events (default: each bench's own)")
    p.add_argument("--pg-url", default="", help="use this (empty) PostgreSQL database instead of pg-temp")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "out"))
    args = p.parse_args(argv)
    only = [x for x in args.only.split(",") if x]
    unknown = sorted(set(only) - set(FEEDS))
    if unknown:
        p.error(f"unknown feed(s): {', '.join(unknown)}")
    options = FeedOptions(
        databases=["sqlite", "postgres"] if args.db == "both" else [args.db], quick=args.quick,
        work_dir=Path(tempfile.mkdtemp(prefix="casewatch-bench-feeds-")), pg_url=args.pg_url, rows=args.rows,
    )
    return options, only, Path(args.out)


async def run_all(options: FeedOptions, only: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in only:
        module = importlib.import_module(f"bench.feeds.{name}")
        print(f"\n== {name}", flush=True)
        results[name] = await module.run(options)
    return results


def main(argv: list[str] | None = None) -> int:
    options, only, out = parse(argv)
    results = asyncio.run(run_all(options, only))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"feeds-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
