"""`python -m bench [--quick] [--db sqlite|postgres|both] [--nominals N] [--actions N] ...`

Builds a synthetic data set on each database (a throw-away PostgreSQL from scripts/pg-temp, a
temporary SQLite file), runs the benchmarks, prints a table and writes JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from bench.dataset import Sizes
from bench.harness import Options, run_all
from bench.multi import SHARE_CORES


def parse(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench", description="casewatch benchmarks")
    p.add_argument("--quick", action="store_true", help="a smoke run: small data set, few requests")
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    defaults = Sizes()
    for name in ("nominals", "actions", "officers", "teams"):
        p.add_argument(f"--{name}", type=int, default=None, help=f"default {getattr(defaults, name)}")
    p.add_argument("--requests", type=int, default=None, help="/flags requests per concurrency level")
    p.add_argument("--only", default="", help="comma-separated: flags,ingest,e2e,scan,digest,audit,multi")
    p.add_argument("--audit-entries", type=int, default=0, help="audit writes a level and mode (20000)")
    p.add_argument("--e2e-alerts", type=int, default=0, help="e2e border checks (300; quick 20)")
    p.add_argument("--out", default=str(Path(__file__).parent / "out"), help="where the JSON goes")
    p.add_argument("--multi-share", type=float, default=SHARE_CORES,
                   help=f"multi: each process's share of a core in the fixed-share phases, 0 for none "
                        f"(default {SHARE_CORES})")
    p.add_argument("--pg-url", default="", help="use this (empty) PostgreSQL database instead of pg-temp")
    args = p.parse_args(argv)
    base = Sizes.quick() if args.quick else Sizes()
    sizes = Sizes(**{
        name: getattr(args, name) if getattr(args, name) is not None else getattr(base, name)
        for name in ("nominals", "actions", "officers", "teams")
    })
    return Options(
        sizes=sizes, quick=args.quick, databases=["sqlite", "postgres"] if args.db == "both" else [args.db],
        requests=args.requests or (100 if args.quick else 1000),
        only=[x for x in args.only.split(",") if x], out=Path(args.out), pg_url=args.pg_url,
        audit_entries=args.audit_entries, e2e_alerts=args.e2e_alerts, multi_share=args.multi_share,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    results = asyncio.run(run_all(options))
    options.out.mkdir(parents=True, exist_ok=True)
    path = options.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
