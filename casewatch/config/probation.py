"""`[probation]`: HMPPS probation domain events (contract v2, issue 18)."""

from __future__ import annotations

from pydantic import Field

from casewatch.config.sections import Section


class ProbationSection(Section):
    enabled: bool = Field(
        False,
        description="accept HMPPS domain events at POST /api/v1/probation/events (signed like the "
        "events API, with ingest.secret)",
    )
