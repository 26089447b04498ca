"""`casewatch digest`: the daily supervisor digest is built by the schedules work (issue 6).

Until then the command says so and exits 3, rather than printing something that looks real.
"""

from __future__ import annotations

import argparse
import sys

NOT_BUILT = 3


def run(args: argparse.Namespace) -> int:
    print(
        "casewatch digest: the daily digest is not built yet in this version; nothing was sent.",
        file=sys.stderr,
    )
    return NOT_BUILT
