"""Periodic jobs. Extended by the schedules work (issue 6)."""

from __future__ import annotations

from pydantic import Field

from casewatch.config.sections import Section


class ScheduleSection(Section):
    scan_interval_seconds: int = Field(300, ge=10, le=86400)
