"""Escalation chains. (Issue 4 fills this in.)"""

from __future__ import annotations

from typing import Any

from casewatch.context import Context


def chain_for(kind: str, severity: str, ctx: Context) -> list[dict[str, Any]]:
    """The escalation chain to snapshot onto a new alert of this kind and severity."""
    return []
