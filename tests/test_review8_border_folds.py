"""Review 8 (R): the border check's folded reads (ingest 77d7efc: Batch.carry_checks,
dispatch._Run.fold_border_reads) against the plain reads, on traffic the ingest's own comparison
does not send: a nominal's first upsert and its check in one batch; a trip notified, both its
legs checked and a second trip, in one batch; a trip cancelled in the same batch as its check; a
check given with a non-UTC offset and the same check again in UTC (in the batch and after it); a
nominal made not registered in the check's batch; and requests grouped by the events API's group
commit. Each run's answers and the alerts, audit entries, deliveries and border checks it leaves
must be the same, row by row, references made neutral."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from casewatch.ingest.group import GroupCommit
from casewatch.ingest.pipeline import ingest
from casewatch.wiring import Service
from tests.support import envelope, nominal_data
from tests.test_ingest8_border_folds import folded_reads, store_state
from tests.test_ingest_single_fast import _parsed, service_fixture  # noqa: F401 (fixture)

SETUP_AT = "2026-11-01T00:00:00Z"
AT = "2026-11-20T08:30:00Z"
ROLES = ("first", "legs", "cancelled", "offset", "unregistered", "grouped_a", "grouped_b", "history")


class _Traffic:
    def __init__(self, base: int, tag: str) -> None:
        self.base, self.tag, self.n = base, tag, 0

    def ref(self, role: str) -> str:
        return f"VS-{self.base + ROLES.index(role):07d}"

    def ev(self, type_: str, role: str, at: str = AT, **data: Any) -> dict[str, Any]:
        self.n += 1
        return envelope(type_, id=f"{self.tag}-{self.n}", visor_ref=self.ref(role), occurred_at=at, **data)

    def upsert(self, role: str, at: str = AT, **data: Any) -> dict[str, Any]:
        self.n += 1
        return envelope("nominal.upsert", nominal_data(**data), id=f"{self.tag}-{self.n}",
                        visor_ref=self.ref(role), occurred_at=at)

    def check(self, role: str, direction: str, checked_at: str, port: str = "Dover") -> dict[str, Any]:
        return self.ev("travel.border_alert", role, port=port, direction=direction, checked_at=checked_at)

    def setup(self) -> list[dict[str, Any]]:
        return [
            *(self.upsert(r, SETUP_AT) for r in ROLES if r != "first"),
            # history: two earlier trips, each checked out; the day's checks must find the free leg
            self.ev("travel.notified", "history", SETUP_AT, departure_on="2026-11-18",
                    return_on="2026-11-21", destination="FR", trip_id=f"H1-{self.tag}",
                    notified_at="2026-11-01T00:00:00Z"),
            self.ev("travel.notified", "history", SETUP_AT, departure_on="2026-11-19",
                    return_on="2026-11-22", destination="BE", trip_id=f"H2-{self.tag}",
                    notified_at="2026-11-01T00:00:00Z"),
            self.check("history", "outbound", "2026-11-18T06:00:00Z"),
            self.check("history", "outbound", "2026-11-19T06:00:00Z"),
        ]

    def requests(self) -> list[list[dict[str, Any]]]:
        return [
            # a nominal's first upsert and its check together: unnotified
            [self.upsert("first"), self.check("first", "outbound", "2026-11-20T07:00:00Z")],
            # a trip notified, both legs checked (the inbound after the outbound), and another
            # outbound the same day that no trip covers
            [
                self.ev("travel.notified", "legs", departure_on="2026-11-20", return_on="2026-11-20",
                        destination="FR", trip_id=f"L-{self.tag}", notified_at="2026-11-15T00:00:00Z"),
                self.check("legs", "outbound", "2026-11-20T05:00:00Z"),
                self.check("legs", "inbound", "2026-11-20T08:00:00Z"),
                self.check("legs", "outbound", "2026-11-20T08:20:00Z", port="Folkestone"),
            ],
            # a trip and its cancellation in the check's batch: unnotified
            [
                self.ev("travel.notified", "cancelled", departure_on="2026-11-20", return_on="2026-11-27",
                        destination="FR", trip_id=f"C-{self.tag}", notified_at="2026-11-15T00:00:00Z"),
                self.ev("travel.cancelled", "cancelled", trip_id=f"C-{self.tag}"),
                self.check("cancelled", "outbound", "2026-11-20T07:00:00Z"),
            ],
            # an offset time, then the same instant in UTC within the batch (stale) ...
            [
                self.check("offset", "outbound", "2026-11-20T12:30:00+05:30"),
                self.check("offset", "outbound", "2026-11-20T07:05:00Z"),
            ],
            # ... and after it, 9 minutes off, and 11 minutes off (a check of its own)
            [self.check("offset", "outbound", "2026-11-20T07:09:00Z")],
            [self.check("offset", "outbound", "2026-11-20T02:41:00-04:30")],
            # made not registered in the check's batch: owes no notice
            [self.upsert("unregistered", registered=False),
             self.check("unregistered", "outbound", "2026-11-20T07:00:00Z")],
            # the third outbound of the history nominal: the free leg is trip H1's return? no:
            # an outbound on the 20th matches neither trip's departure leg (both taken)
            [self.check("history", "outbound", "2026-11-20T06:00:00Z"),
             self.check("history", "inbound", "2026-11-21T06:00:00Z")],
        ]

    def grouped(self) -> list[list[dict[str, Any]]]:
        return [
            [self.check("grouped_a", "outbound", "2026-11-20T07:00:00Z")],
            [self.check("grouped_b", "outbound", "2026-11-20T07:00:00Z"),
             self.check("grouped_b", "inbound", "2026-11-20T08:00:00Z")],
            [self.check("grouped_a", "outbound", "2026-11-20T07:04:00Z")],  # same check: stale
        ]


async def _run(service: Service, base: int, tag: str, *, folded: bool) -> tuple[list[Any], int]:
    traffic = _Traffic(base, tag)
    await ingest(service.sessions, _parsed(traffic.setup()), service.ctx, source="test")
    answers: list[Any] = []
    with folded_reads(folded):
        for request in traffic.requests():
            result = await ingest(service.sessions, _parsed(request), service.ctx, source="test")
            answers.append((result.accepted, result.duplicates, len(result.alerts)))
        group = GroupCommit(service.sessions, service.ctx, source="test")
        results = await asyncio.gather(*(group.ingest(_parsed(r)) for r in traffic.grouped()))
        answers.extend((r.accepted, r.duplicates, len(r.alerts)) for r in results)
    return answers, group.groups


async def _state(service: Service, base: int, tag: str) -> dict[str, Any]:
    return await store_state(service, {f"VS-{base + i:07d}": role for i, role in enumerate(ROLES)}, tag)


async def test_folded_border_reads_match_the_plain_ones_on_more_traffic(service: Service) -> None:
    plain_answers, plain_groups = await _run(service, 3000, "r8plain", folded=False)
    folded_answers, folded_groups = await _run(service, 4000, "r8fold", folded=True)
    assert folded_answers == plain_answers
    assert plain_groups == folded_groups == 1  # the first two grouped requests shared a transaction
    plain, folded = await _state(service, 3000, "r8plain"), await _state(service, 4000, "r8fold")
    assert folded == plain
    kinds = Counter(json.loads(a)[0] for a in plain["alerts"])
    assert kinds["travel.unnotified"] >= 5 and kinds["travel.confirmed"] >= 2, kinds
    assert plain_answers[3] == (2, 0, 2)  # the offset check and its UTC twin: one set of alerts
    assert plain_answers[4] == (1, 0, 0)  # 4 minutes after it: the same check
