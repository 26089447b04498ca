"""What every unit of work needs: the settings and a clock."""

from __future__ import annotations

from dataclasses import dataclass

from casewatch.clock import Clock
from casewatch.config import Settings


@dataclass(frozen=True)
class Context:
    settings: Settings
    clock: Clock
