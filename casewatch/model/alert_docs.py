"""docs/alerts.md's alert-kind table, generated from the registry (casewatch.model.alerts).

    python -m casewatch.model.alert_docs          # rewrite the table in docs/alerts.md
    python -m casewatch.model.alert_docs --check  # exit 1 if docs/alerts.md differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from casewatch.model.alerts import ALERT_KINDS, SEVERITY_ESCALATION, AlertKind, EscalationStep

DOCS = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"
BEGIN = "<!-- generated from casewatch/model/alerts.py by python -m casewatch.model.alert_docs -->"
END = "<!-- end of the generated alert kinds -->"


def _duration(seconds: int) -> str:
    return f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds // 60} min"


def _step(step: EscalationStep) -> str:
    return f"{_duration(step.after_seconds)} {', '.join(f'`{r}`' for r in step.receivers)}"


def _row(kind: AlertKind) -> str:
    cells = (
        f"`{kind.kind}`", kind.severity_rule or kind.severities[0], kind.opened_when, kind.subject,
        kind.resolved_when, ", ".join(f"`{r}`" for r in kind.receivers),
        "by severity" if kind.escalates else "never",
    )
    return "| " + " | ".join(cells) + " |"


def render() -> str:
    """The generated part of docs/alerts.md, markers included."""
    chains = [
        f"- {severity}: {', then '.join(_step(s) for s in chain) or 'none'}"
        for severity, chain in SEVERITY_ESCALATION.items()
    ]
    return "\n".join([
        BEGIN,
        "| kind | severity | opened when | subject | resolves when | receivers | escalation |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(_row(kind) for kind in ALERT_KINDS.values()),
        "",
        "Escalation by severity (each wait from the opening, then from the previous step):",
        "",
        *chains,
        END,
    ])


def with_table(text: str) -> str:
    """`text` (docs/alerts.md) with its generated part replaced by render()."""
    head, _, rest = text.partition(BEGIN)
    _, found, tail = rest.partition(END)
    if not found:
        raise ValueError(f"docs/alerts.md lacks the markers {BEGIN!r} ... {END!r}")
    return head + render() + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/alerts.md is out of date")
    args = parser.parse_args(argv)
    text = DOCS.read_text(encoding="utf-8")
    wanted = with_table(text)
    if args.check:
        if wanted != text:
            print("docs/alerts.md is out of date: run python -m casewatch.model.alert_docs", file=sys.stderr)
            return 1
        return 0
    DOCS.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
