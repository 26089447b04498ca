"""`casewatch audit verify` and `casewatch audit export`.

verify walks the hash chain (casewatch.audit.verify) and prints the first broken link: exit 0
intact, 1 broken, 2 could not run (no database, not migrated, or the configured key is not the
chain's). export is in casewatch.commands.audit_export.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.audit import hasher_for
from casewatch.audit.verify import KeyMismatch, Verification, verify
from casewatch.clock import SystemClock
from casewatch.commands._support import configure_logging, on_database
from casewatch.config import load_config
from casewatch.context import Context
from casewatch.store.engine import make_sessionmaker, reader


def run(args: argparse.Namespace) -> int:
    if args.audit_command == "export":
        from casewatch.commands.audit_export import run as export

        code: int = export(args)
        return code
    return _verify(args)


def _verify(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    configure_logging(settings)

    async def go(engine: AsyncEngine) -> int:
        hasher = hasher_for(Context(settings, SystemClock()))
        show = sys.stderr.isatty()

        def progress(checked: int) -> None:
            if show:
                print(f"\r{checked:,} entries checked", end="", file=sys.stderr, flush=True)

        try:
            result = await verify(make_sessionmaker(reader(engine)), hasher, progress=progress)
        except KeyMismatch as exc:
            print(f"casewatch audit verify: cannot check: {exc}", file=sys.stderr)
            return 2
        if show:
            print(file=sys.stderr)
        return _report(result)

    return asyncio.run(on_database(settings, args.config or "", "audit verify", go))


def _report(result: Verification) -> int:
    if result.broken is not None:
        print(f"audit log BROKEN at {result.broken.line()}")
        print(f"{result.checked:,} entries before it verified (from seq {result.base_seq + 1})")
        return 1
    first = result.base_seq + 1
    span = f"seq {first} to {result.head_seq}" if result.head_seq >= first else "no sealed entries"
    print(f"audit log intact: {result.checked:,} entries verified ({span})")
    if result.base_seq:
        print(f"from the retention checkpoint at seq {result.base_seq}")
    print(f"head: seq {result.head_seq} hash {result.head_hash}")
    if result.unsealed:
        oldest = result.oldest_unsealed_at.isoformat(timespec="seconds") if result.oldest_unsealed_at else "-"
        print(
            f"{result.unsealed:,} newer entries not yet sealed into the chain (oldest {oldest}); "
            "their content hashes verified"
        )
    return 0
