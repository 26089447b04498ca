"""`casewatch audit export`: to be written (issue 16)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError
