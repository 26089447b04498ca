"""`casewatch mail-ingest`: border-alert emails into events (integrations/mail_ingest, by way of
the composition root)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from casewatch.wiring import run_mail_ingest

    return run_mail_ingest(args)
