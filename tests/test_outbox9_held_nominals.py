"""The outbox takes the nominals the ingest holds (ninth session: outbox.hold_nominals, called by
the ingest before the rules run) instead of reading them again, on SQLite and PostgreSQL. The
border-fold traffic (tests/test_ingest8_border_folds.py), and requests that change a held
nominal's routing columns in the same batch as the border check that routes by them, give the
same answers, alerts, audit entries, deliveries (payloads, order) and border checks as with the
outbox's own read, and a lone border check runs one statement fewer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import casewatch.routing.outbox as outbox
from casewatch.clock import FixedClock
from casewatch.ingest.pipeline import ingest
from casewatch.store.models import Delivery
from casewatch.wiring import Service, stop
from tests.support import TEAMS, envelope, make_service, nominal_data
from tests.test_ingest8_border_folds import _check, _ref, _run, _state
from tests.test_ingest_single_fast import NOW, _parsed
from tests.test_triggers_case_data import utc

# Every column the outbox reads of a nominal shows in what it writes: the area picks the npt
# channel, the names go to the cleared SPOC inbox, the offender manager owns the alert.
ROUTING = {
    "routes": {kind: ["team_channel", "spoc", "npt", "owner_email"]
               for kind in ("travel.unnotified", "travel.record_fta", "travel.confirmed")},
    "personal_data_targets": ["north.spoc@force.example"],
}
NPT = {"N01": "C0NPTN01", "S02": "C0NPTS02"}


@pytest.fixture(name="service")
async def service_fixture(db_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    teams = [{**team, "npt_channels": NPT} for team in TEAMS]
    chat = {"chat_log_path": str(tmp_path / "chat.jsonl")}  # Slack rows queued, Slack off
    svc = await make_service(db_url, clock=FixedClock(utc(NOW)), routing=ROUTING, teams=teams, delivery=chat)
    try:
        yield svc
    finally:
        await stop(svc)


def _moved(base: int, tag: str) -> list[list[dict[str, Any]]]:
    """The "batch" nominal (already known) changes hands, area and name in the same batch as its
    border check, then in a batch of its own before the next check."""

    def upsert(n: int, **data: Any) -> dict[str, Any]:
        return envelope("nominal.upsert", nominal_data(**data), id=f"{tag}-move-{n}",
                        visor_ref=_ref(base, "batch"), occurred_at=f"2026-11-20T09:0{n}:00Z")

    return [
        [upsert(1, offender_manager="PC5678", area="S02", surname="Example"),
         _check(base, tag, "batch", 11, "outbound", "2026-11-20T09:30:00Z")],
        [upsert(2, offender_manager="PC1234", area="N01", surname="Testperson")],
        [_check(base, tag, "batch", 12, "inbound", "2026-11-20T10:30:00Z")],
    ]


async def _traffic(service: Service, base: int, tag: str, *, held: bool,
                   monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[int]]:
    with monkeypatch.context() as patch:
        patch.setattr(outbox, "TAKE_HELD_NOMINALS", held)
        answers, statements = await _run(service, base, tag, folded=True)
        for request in _moved(base, tag):
            result = await ingest(service.sessions, _parsed(request), service.ctx, source="test")
            answers.append((result.accepted, result.duplicates, len(result.alerts)))
    return answers, statements


async def test_held_nominals_route_as_the_read_ones(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_answers, read_statements = await _traffic(service, 1000, "read", held=False, monkeypatch=monkeypatch)
    held_answers, held_statements = await _traffic(service, 2000, "held", held=True, monkeypatch=monkeypatch)
    assert held_answers == read_answers
    read, held = await _state(service, 1000, "read"), await _state(service, 2000, "held")
    assert held == read
    assert read["deliveries"] and read["audit"]
    # The moved nominal's check went to its new offender manager (the held instance's values after
    # its flush, as a read gives them), the next one back to the first.
    async with service.sessions() as session:
        targets = list((await session.execute(
            select(Delivery.target).where(Delivery.alert_id.is_not(None)).order_by(Delivery.id)
        )).scalars())
    assert {"C0NPTS02", "C0NPTN01", "north.spoc@force.example"} <= set(targets), sorted(set(targets))
    assert any("Alex Sample Example" in d for d in held["deliveries"])
    # A lone border check: one statement fewer (the nominal's read for routing); never more.
    assert read_statements[0] - held_statements[0] == 1
    assert all(h <= r for h, r in zip(held_statements, read_statements, strict=True))
