"""`casewatch demo`: see casewatch.demo.runner for what it sets up and where it puts things."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from casewatch.commands._support import quiet_libraries

MAX_NOMINALS = 20000


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.nominals <= MAX_NOMINALS:
        print(f"casewatch demo: --nominals must be between 1 and {MAX_NOMINALS}", file=sys.stderr)
        return 2
    if not 0 <= args.port <= 65535:
        print("casewatch demo: --port must be between 0 and 65535", file=sys.stderr)
        return 2
    if args.exit_after is not None and args.exit_after < 0:
        print("casewatch demo: --exit-after must not be negative", file=sys.stderr)
        return 2
    # The banner is what a person reads; keep library chatter to warnings.
    quiet_libraries()
    logging.getLogger().setLevel(logging.WARNING)
    from casewatch.demo.runner import DemoError, DemoOptions, run_demo  # after the logging set-up

    options = DemoOptions(Path(args.dir), args.port, args.nominals, args.exit_after)
    try:
        return asyncio.run(run_demo(options))
    except DemoError as exc:
        print(f"casewatch demo: {exc}", file=sys.stderr)
        return 2
