"""What the feed benches share: a one-team configuration and fictional registered nominals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from casewatch.config import Settings, load_config
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.wiring import Service

TEAM = {
    "id": "north", "name": "North MOSOVO (bench)", "channel": "C0BENCH",
    "spoc_email": "spoc@force.example", "supervisor_emails": ["sgt@force.example"],
}
OFFICER = {
    "id": "PC0001", "name": "PC Benchmark", "email": "pc0001@force.example",
    "slack_user_id": "U0BENCH", "team": "north", "roles": ["officer"],
}


def bench_settings(url: str, **sections: Any) -> Settings:
    """The bench's configuration on `url` (Slack off, one team and officer), with `sections`."""
    return load_config("/dev/null", environ={}, overrides={
        "database": {"url": url}, "slack": {"mode": "off"}, "teams": [TEAM], "officers": [OFFICER],
        **sections,
    })


async def add_nominals(service: Service, refs: list[str], crns: list[str | None] | None = None) -> None:
    """A registered, fictional nominal for each reference (with its CRN, if given), a month old."""
    at = (datetime.now(UTC) - timedelta(days=30)).isoformat().replace("+00:00", "Z")
    raw = [
        {
            "id": f"bench-nominal-{ref}", "type": "nominal.upsert", "occurred_at": at, "visor_ref": ref,
            "data": {
                "surname": "Testperson", "forenames": "Bench", "date_of_birth": "1980-01-01",
                "category": "1", "mappa_level": 1, "registered": True, "risk_level": "medium",
                "lead_agency": "police", "team": "north", "offender_manager": "PC0001", "area": "N01",
                "on_licence": False, "no_fixed_abode": False, "last_notification_on": "2026-01-01",
                "markers": [], **({"crn": crn} if crn else {}),
            },
        }
        for ref, crn in zip(refs, crns or [None] * len(refs), strict=True)
    ]
    for start in range(0, len(raw), 1000):
        envelopes, errors = parse_envelopes(raw[start : start + 1000])
        assert not errors, errors
        await ingest(service.sessions, envelopes, service.ctx, source="bench")
