"""Delivery workers, retries and pacing. Extended by the delivery work (issue 4)."""

from __future__ import annotations

from pydantic import Field

from casewatch.config.sections import Section


class DeliverySection(Section):
    workers: int = Field(2, ge=1, le=64)
