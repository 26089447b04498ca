"""Review (nineteenth session, a fast-path reviewer): the events API's group commit with every fast
path on, against the same requests stored one by one with every fast path off (Batch's switches,
pipeline.DEFER_WRITES,
direct_read.ENABLED, lifecycle.FOLD_OPEN_WRITES, dispatch._Run's reads, outbox.TAKE_HELD_NOMINALS,
audit.DIRECT_ENTRIES), into two fresh databases of one kind. Seeded random requests (1-5 events,
most about one or two of 30 nominals, some unknown): upserts moving levels, risk, area, team,
registration, release and relevant dates, aliases and markers; notifications of every kind;
actions moved between nominals, done and reopened; visits, level changes, detentions, changes
detected, travel with trips and notice times, border checks, recalls and returns, cancellations,
meetings, RMP reviews and orders, after a set-up and a scan that opened live alerts of most kinds.
Every request's answer (accepted, duplicates, the alerts it was given by kind, reference and
subject) and every row of every table (ids, hashes and sequence numbers left out, alert ids
named by their key) are the same. During the review 250 seeds passed on SQLite and 165 on
PostgreSQL, with up to 60 requests on 40 nominals and batches of up to 950 events; two are kept."""

from __future__ import annotations

import asyncio
import json
import random
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import select, text

import casewatch.alerts.lifecycle as lifecycle
import casewatch.audit as audit_mod
import casewatch.ingest.pipeline as pipeline
import casewatch.routing.outbox as outbox
import casewatch.store.direct_read as direct_read
from casewatch.clock import FixedClock
from casewatch.ingest.apply import Batch
from casewatch.ingest.group import GroupCommit
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.models import Base
from casewatch.triggers import dispatch
from casewatch.triggers.scan import run_scan
from casewatch.wiring import stop
from tests.support import envelope, make_service, nominal_data, switched
from tests.test_audit9_folds import backing as backing  # noqa: F401 (fixture)
from tests.test_audit9_folds import two_urls as two_urls  # noqa: F401 (fixture)
from tests.test_triggers_case_data import utc

NOW = "2026-11-20T09:00:00Z"
TIMES = ("2026-11-18T08:00:00Z", "2026-11-19T08:00:00Z", "2026-11-20T08:00:00Z", "2026-11-20T08:30:00Z")
DATES = ("2026-09-01", "2026-10-15", "2026-11-10", "2026-11-18", "2026-11-19")
NREFS = 30
NREQ = 40
SIZES = (1, 1, 2, 3, 5)

SWITCHES = [
    (Batch, "bulk_first_upserts"),
    (Batch, "core_writes"),
    (Batch, "array_writes"),
    (Batch, "carry_checks"),
    (Batch, "keys_as_array"),
    (Batch, "combine_writes"),
    (Batch, "hold_writes"),
    (Batch, "array_events"),
    (pipeline, "DEFER_WRITES"),
    (direct_read, "ENABLED"),
    (lifecycle, "FOLD_OPEN_WRITES"),
    (dispatch._Run, "reuse_reads"),
    (dispatch._Run, "fold_border_reads"),
    (outbox, "TAKE_HELD_NOMINALS"),
    (audit_mod, "DIRECT_ENTRIES"),
]


def plain_ways() -> ExitStack:
    stack = ExitStack()
    for owner, name in SWITCHES:
        stack.enter_context(switched(owner, name, False))
    return stack


def ref(n: int) -> str:
    return f"VS-{n:07d}"


def setup() -> list[dict[str, Any]]:
    out = []
    for n in range(NREFS - 2):  # the last two: no nominal
        out.append(
            envelope(
                "nominal.upsert",
                nominal_data(
                    last_notification_on=("2025-11-01", "2026-11-01", "2026-10-01")[n % 3],
                    risk_level=("high", "medium")[n % 2],
                    mappa_level=1 + n % 3,
                    visit_every_days=30,
                ),
                id=f"setup-up-{n}",
                visor_ref=ref(n),
                occurred_at="2026-07-01T00:00:00Z",
            )
        )
        out.append(
            envelope(
                "action.upsert",
                id=f"setup-act-{n}",
                visor_ref=ref(n),
                occurred_at="2026-10-01T00:00:00Z",
                action_id=f"A-{n}",
                due_on="2026-11-01",
            )
        )
        out.append(
            envelope(
                "recall.issued",
                id=f"setup-recall-{n}",
                visor_ref=ref(n),
                occurred_at="2026-10-01T00:00:00Z",
                issued_at="2026-10-01T00:00:00Z",
            )
        )
        out.append(
            envelope(
                "meeting.held",
                id=f"setup-meet-{n}",
                visor_ref=ref(n),
                occurred_at="2026-10-01T00:00:00Z",
                meeting_id="M-1",
                held_on="2026-09-01",
            )
        )
        out.append(
            envelope(
                "order.upsert",
                id=f"setup-order-{n}",
                visor_ref=ref(n),
                occurred_at="2026-10-01T00:00:00Z",
                order_id="O-1",
                expires_on="2026-11-25",
            )
        )
    return out


def random_event(rng: random.Random, eid: str, refs: list[int] | None = None) -> dict[str, Any]:
    n = rng.choice(refs) if refs else rng.randrange(NREFS)
    r, at = ref(n), rng.choice(TIMES)
    kind = rng.randrange(17)
    if kind == 0:
        data = nominal_data(
            last_notification_on=rng.choice((None, *DATES)),
            mappa_level=rng.choice((None, 1, 2, 3)),
            risk_level=rng.choice(("medium", "high", "very_high")),
            area=rng.choice(("N01", "N02")),
            team=rng.choice(("north", "south")),
            registered=rng.random() < 0.8,
            no_fixed_abode=rng.random() < 0.3,
            on_licence=rng.random() < 0.5,
            visit_every_days=rng.choice((None, 7, 30)),
            release_date=rng.choice((None, "2026-11-01", "2026-11-15")),
            relevant_date=rng.choice((None, "2026-10-01", "2026-11-10")),
            notification_ends_on=rng.choice((None, "2026-11-19", "2030-01-01")),
            category=rng.choice(("1", "2")),
            offender_manager=rng.choice(("PC1234", "PC5678", "")),
            aliases=rng.choice(([], ["Jon Smythe"], ["A B"])),
            markers=rng.choice(
                (
                    [],
                    [{"code": "VIO", "label": "V", "restricted": False}],
                    [{"code": "XRS", "label": "R", "restricted": True}],
                )
            ),
        )
        if data["offender_manager"] == "":
            data["offender_manager"] = "PC9999"
        return envelope("nominal.upsert", data, id=eid, visor_ref=r, occurred_at=at)
    if kind == 1:
        k = rng.choice(("periodic", "weekly", "initial", "change", "travel", "return"))
        extra = {"what": "home_address", "changed_on": rng.choice(DATES)} if k == "change" else {}
        return envelope(
            "notification.received",
            id=eid,
            visor_ref=r,
            occurred_at=at,
            kind=k,
            notified_on=rng.choice(DATES),
            **extra,
        )
    if kind == 2:
        return envelope(
            "action.upsert",
            id=eid,
            visor_ref=r,
            occurred_at=at,
            action_id=f"A-{rng.randrange(NREFS)}",
            due_on=rng.choice(DATES),
            status=rng.choice(("open", "done")),
        )
    if kind == 3:
        return envelope("visit.recorded", id=eid, visor_ref=r, occurred_at=at, visited_on=rng.choice(DATES))
    if kind == 4:
        lv = rng.choice((1, 2, 3))
        return envelope(
            "mappa.level_changed",
            id=eid,
            visor_ref=r,
            occurred_at=at,
            from_level=lv,
            to_level=rng.choice([x for x in (1, 2, 3) if x != lv]),
            rationale=rng.choice(("", "Fictional reason")),
        )
    if kind == 5:
        return envelope("detention.ended", id=eid, visor_ref=r, occurred_at=at, ended_on=rng.choice(DATES))
    if kind == 6:
        return envelope(
            "detention.started", id=eid, visor_ref=r, occurred_at=at, started_on=rng.choice(DATES)
        )
    if kind == 7:
        return envelope("change.detected", id=eid, visor_ref=r, occurred_at=at, changed_on=rng.choice(DATES))
    if kind == 8:
        extra: dict[str, Any] = {}
        if rng.random() < 0.5:
            extra["notified_at"] = rng.choice(TIMES)
        if rng.random() < 0.5:
            extra["departure_at"] = rng.choice(("2026-11-19T10:00:00Z", "2026-11-20T07:00:00Z"))
        return envelope(
            "travel.notified",
            id=eid,
            visor_ref=r,
            occurred_at=at,
            departure_on=rng.choice(("2026-11-18", "2026-11-19", "2026-11-20", "2026-12-01")),
            return_on=rng.choice((None, "2026-12-20")),
            trip_id=rng.choice((None, "T-1", "T-2")),
            **extra,
        )
    if kind == 9:
        return envelope(
            "travel.border_alert",
            id=eid,
            visor_ref=r,
            occurred_at=at,
            direction=rng.choice(("inbound", "outbound")),
            checked_at=rng.choice(TIMES),
        )
    if kind == 10:
        return envelope(
            "recall.issued",
            id=eid,
            visor_ref=r,
            occurred_at=at,
            recall_type=rng.choice(("standard", "emergency")),
            issued_at=rng.choice(TIMES),
        )
    if kind == 11:
        return envelope("recall.returned", id=eid, visor_ref=r, occurred_at=at, returned_at=rng.choice(TIMES))
    if kind == 12:
        return envelope(
            "travel.cancelled", id=eid, visor_ref=r, occurred_at=at, trip_id=rng.choice(("T-1", "T-2"))
        )
    if kind == 13:
        return envelope(
            "meeting.held",
            id=eid,
            visor_ref=r,
            occurred_at=at,
            meeting_id="M-1",
            held_on="2026-09-01",
            minutes_on_visor_on=rng.choice((None, "2026-11-19")),
        )
    if kind == 14:
        return envelope("rmp.reviewed", id=eid, visor_ref=r, occurred_at=at, reviewed_on=rng.choice(DATES))
    if kind == 15:
        return envelope(
            "order.upsert",
            id=eid,
            visor_ref=r,
            occurred_at=at,
            order_id="O-1",
            expires_on="2026-11-25",
            status=rng.choice(("active", "discharged")),
        )
    return envelope("visit.recorded", id=eid, visor_ref=r, occurred_at=at, visited_on=rng.choice(DATES))


def random_requests(seed: int) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    reqs = []
    for i in range(rng.randint(4, NREQ)):
        local = [rng.randrange(NREFS) for _ in range(rng.choice((1, 1, 2)))] if rng.random() < 0.7 else None
        reqs.append([random_event(rng, f"s{seed}-q{i}-e{j}", local) for j in range(rng.choice(SIZES))])
    return reqs


def parsed(raws: list[dict[str, Any]]) -> Any:
    envs, errors = parse_envelopes(raws)
    assert not errors, errors
    return envs


async def alert_names(service: Any) -> dict[str, str]:
    async with service.sessions() as session:
        alerts = (await session.execute(text("SELECT id, kind, visor_ref, subject FROM alerts"))).all()
    return {a.id: f"{a.kind}|{a.visor_ref}|{a.subject}" for a in alerts}


async def dump(service: Any) -> dict[str, Any]:
    async with service.sessions() as session:
        alerts = (
            await session.execute(text("SELECT id, kind, visor_ref, subject, opened_by_event FROM alerts"))
        ).all()
        names = {a.id: f"<{a.kind}|{a.visor_ref}|{a.subject}|{a.opened_by_event}>" for a in alerts}
        out: dict[str, Any] = {}
        for table in Base.metadata.sorted_tables:
            if table.name in ("leases", "job_runs", "alembic_version", "audit_chain"):
                continue
            rows = (await session.execute(select(table))).mappings().all()
            norm = []
            for row in rows:
                d = {
                    k: v
                    for k, v in row.items()
                    if k not in ("id", "content_hash", "seq", "chain_hash", "audit_id")
                }
                s = json.dumps(d, default=str, sort_keys=True)
                for old, new in names.items():
                    s = s.replace(old, new)
                norm.append(s)
            out[table.name] = sorted(norm)
    return out


async def _service(url: str) -> Any:
    return await make_service(url, clock=FixedClock(utc(NOW)))


@pytest.mark.parametrize("backing", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("seed", [600, 633])
async def test_a_group_stores_and_answers_as_the_plain_ways_one_by_one(
    two_urls: tuple[str, str], seed: int
) -> None:
    reqs = random_requests(seed)
    plain, fast = await _service(two_urls[0]), await _service(two_urls[1])
    try:
        for svc in (plain, fast):
            with plain_ways():
                await ingest(svc.sessions, parsed(setup()), svc.ctx, source="api")
            await run_scan(svc.sessions, svc.ctx, utc(NOW))
        one_by_one = []
        with plain_ways():
            for r in reqs:
                res = await ingest(plain.sessions, parsed(r), plain.ctx, source="api")
                names = await alert_names(plain)
                one_by_one.append((res.accepted, res.duplicates, sorted(names[x] for x in res.alerts)))
        committer = GroupCommit(fast.sessions, fast.ctx, source="api", gather_seconds=0)
        results = await asyncio.gather(*(committer.ingest(parsed(r)) for r in reqs))
        names = await alert_names(fast)
        grouped = [(res.accepted, res.duplicates, sorted(names[x] for x in res.alerts)) for res in results]
        assert committer.groups > 0
        assert grouped == one_by_one
        assert await dump(fast) == await dump(plain)
    finally:
        await stop(plain)
        await stop(fast)
