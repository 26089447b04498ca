"""The ingest pipeline on real SQLite and PostgreSQL: events stored once, applied to the case
store in order, out-of-order events never overwriting newer state."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import casewatch.triggers.dispatch as dispatch
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.ingest.pipeline import IngestResult, ingest, retry_delay
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.models import (
    Action,
    BorderCheck,
    Event,
    LevelChange,
    Marker,
    Nominal,
    NotificationReceived,
    Recall,
    TravelNotification,
    Visit,
)
from casewatch.triggers.applied import Applied
from tests.support import SAMPLE_DATA, T0, envelope, make_settings, nominal_data

REF = "VS-0000042"


@pytest.fixture
def ctx(db_url: str) -> Context:
    return Context(make_settings(db_url), FixedClock(T0 + timedelta(hours=1)))


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Applied]:
    """Every Applied outcome handed to the event-driven rules (which still run)."""
    outcomes: list[Applied] = []
    real = dispatch.on_applied

    async def spy(
        session: AsyncSession, applied: Sequence[Applied], ctx: Context, held: Any = None, checks: Any = None,
        **more: Any,
    ) -> list[str]:
        outcomes.extend(applied)
        return await real(session, applied, ctx, held, checks, **more)

    monkeypatch.setattr("casewatch.ingest.pipeline.on_applied", spy)
    return outcomes


async def run(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, *raws: dict[str, Any], source: str = "test"
) -> IngestResult:
    envelopes, errors = parse_envelopes(list(raws))
    assert errors == []
    return await ingest(sessions, envelopes, ctx, source=source)


async def count(sessions: async_sessionmaker[AsyncSession], model: Any) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def nominal(sessions: async_sessionmaker[AsyncSession], ref: str = REF) -> Nominal:
    async with sessions() as session:
        found = await session.get(Nominal, ref)
        assert found is not None
        return found


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


# --- storing and idempotency --------------------------------------------------------------------


async def test_each_event_type_lands_in_its_table(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    raws = [envelope(t, visor_ref=REF) for t in SAMPLE_DATA]
    result = await run(sessions, ctx, *raws, source="api")
    assert (result.accepted, result.duplicates) == (len(SAMPLE_DATA), 0)
    async with sessions() as session:
        events = (await session.execute(select(Event).order_by(Event.id))).scalars().all()
        assert {e.type for e in events} == set(SAMPLE_DATA)
        assert all(e.source == "api" and e.received_at == ctx.clock.now() for e in events)
        stored = {e.id: e for e in events}
        assert stored[raws[0]["id"]].data == raws[0]  # kept as received
        nom = await session.get(Nominal, REF)
        assert nom is not None and nom.surname == "Testperson" and nom.date_of_birth == date(1980, 2, 29)
        assert nom.state_as_of == T0 and nom.team == "north"
        assert [m.code for m in (await session.execute(select(Marker))).scalars()] == ["VIO"]
        note = (await session.execute(select(NotificationReceived))).scalar_one()
        assert (note.kind, note.notified_on) == ("periodic", date(2026, 11, 19))
        trip = (await session.execute(select(TravelNotification))).scalar_one()
        assert (trip.destination, trip.departure_on, trip.return_on) == (
            "FR",
            date(2026, 12, 1),
            date(2026, 12, 8),
        )
        check = (await session.execute(select(BorderCheck))).scalar_one()
        assert (check.port, check.direction, check.checked_at) == (
            "Dover",
            "inbound",
            datetime(2026, 11, 20, 8, tzinfo=UTC),
        )
        change = (await session.execute(select(LevelChange))).scalar_one()
        assert (change.from_level, change.to_level, change.rationale) == (
            1,
            2,
            "Fictional MAPP meeting decision",
        )
        assert change.recorded_by == "api"
        recall = (await session.execute(select(Recall))).scalar_one()
        assert recall.recall_type == "standard"
        assert recall.returned_at == datetime(2026, 11, 20, 12, tzinfo=UTC)
        action = await session.get(Action, "ACT-0001")
        assert action is not None and action.status == "open" and action.due_on == date(2026, 12, 1)
        visit = (await session.execute(select(Visit))).scalar_one()
        assert visit.visited_on == date(2026, 11, 19)
        # the level change applied after the upsert in the same batch
        assert nom.mappa_level == 2


async def test_duplicates_are_counted_and_change_nothing(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    first = envelope("nominal.upsert", visor_ref=REF, id="dup-1")
    assert (await run(sessions, ctx, first)).accepted == 1
    # The same id again, now carrying other data and a later time: a duplicate, ignored.
    again = envelope(
        "nominal.upsert", nominal_data(surname="Changed"), visor_ref=REF, id="dup-1", occurred_at=at(5)
    )
    visit = envelope("visit.recorded", visor_ref=REF, id="dup-2")
    result = await run(sessions, ctx, again, visit, visit, visit)
    assert (result.accepted, result.duplicates, result.alerts) == (1, 3, [])
    assert (await nominal(sessions)).surname == "Testperson"
    assert await count(sessions, Event) == 2
    assert await count(sessions, Visit) == 1
    result = await run(sessions, ctx, visit, first)
    assert (result.accepted, result.duplicates) == (0, 2)


async def test_unknown_visor_ref_is_still_stored_and_applied(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    raws = [envelope(t, visor_ref="VS-NOBODY") for t in SAMPLE_DATA if t != "nominal.upsert"]
    assert (await run(sessions, ctx, *raws)).accepted == len(raws)
    assert await count(sessions, Nominal) == 0
    for model in (BorderCheck, TravelNotification, Recall, Action, Visit, LevelChange, NotificationReceived):
        assert await count(sessions, model) == 1, model


async def test_batch_of_1000_in_one_transaction(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    raws = [envelope("visit.recorded", visor_ref=f"VS-{i:07d}") for i in range(1000)]
    raws += [envelope("nominal.upsert", visor_ref=f"VS-{i:07d}") for i in range(0, 1000, 4)]
    started = time.perf_counter()
    result = await run(sessions, ctx, *raws[:1000])
    elapsed = time.perf_counter() - started
    assert result.accepted == 1000
    assert elapsed < 20, f"1000 events took {elapsed:.1f} s"
    result = await run(sessions, ctx, *raws[500:])  # half duplicates, 250 upserts new
    assert (result.accepted, result.duplicates) == (250, 500)
    assert await count(sessions, Visit) == 1000
    assert await count(sessions, Nominal) == 250


# --- nominals and levels --------------------------------------------------------------------------


async def test_older_upsert_never_overwrites_newer_state(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, seen: list[Applied]
) -> None:
    newer = envelope(
        "nominal.upsert", nominal_data(risk_level="high", markers=[]), visor_ref=REF, occurred_at=at(2)
    )
    older = envelope(
        "nominal.upsert",
        nominal_data(
            risk_level="low",
            mappa_level=3,
            surname="Oldname",
            markers=[{"code": "OLD", "label": "old marker", "restricted": True}],
        ),
        visor_ref=REF,
        occurred_at=at(1),
    )
    await run(sessions, ctx, newer)
    result = await run(sessions, ctx, older)
    assert result.accepted == 1  # kept as an event...
    state = await nominal(sessions)  # ...but changed nothing
    assert (state.risk_level, state.mappa_level, state.surname, state.state_as_of) == (
        "high",
        1,
        "Testperson",
        at(2),
    )
    assert await count(sessions, Marker) == 0
    assert await count(sessions, LevelChange) == 0
    assert [a.stale for a in seen] == [False, True]
    assert all(a.level_change is None for a in seen)


async def test_upsert_level_change_recorded_first_upsert_is_not_a_change(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, seen: list[Applied]
) -> None:
    await run(
        sessions,
        ctx,
        envelope("nominal.upsert", nominal_data(mappa_level=1), visor_ref=REF, occurred_at=at(0)),
    )
    await run(
        sessions,
        ctx,
        envelope("nominal.upsert", nominal_data(mappa_level=1), visor_ref=REF, occurred_at=at(1)),
    )
    await run(
        sessions,
        ctx,
        envelope(
            "nominal.upsert",
            nominal_data(mappa_level=3, surname="  Van   der  BERG "),
            visor_ref=REF,
            occurred_at=at(2),
        ),
        source="visor-sync",
    )
    assert [a.level_change is not None for a in seen] == [False, False, True]
    change = seen[-1].level_change
    assert change is not None
    assert (change.from_level, change.to_level, change.rationale, change.recorded_by) == (
        1,
        3,
        "",
        "visor-sync",
    )
    assert change.changed_at == at(2) and change.event_id == seen[-1].event_id
    state = await nominal(sessions)
    assert (state.mappa_level, state.level_as_of, state.surname_key) == (3, at(2), "vanderberg")
    assert await count(sessions, LevelChange) == 1


async def test_an_upsert_restating_the_level_does_not_hide_an_earlier_change_that_arrives_later(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, seen: list[Applied]
) -> None:
    """Issue 18 review: an extract that does not carry levels restates the stored one at 02:00;
    a probation level change made at 01:00 arrives after it (delayed in its queue). The restatement
    is not a change, so the change is newer than the last change and is applied, with its alert."""
    await run(sessions, ctx, envelope("nominal.upsert", nominal_data(mappa_level=1), visor_ref=REF,
                                      occurred_at=at(0)))
    await run(sessions, ctx, envelope("nominal.upsert", nominal_data(mappa_level=1, area="N02"),
                                      visor_ref=REF, occurred_at=at(2)))
    assert (await nominal(sessions)).level_as_of == at(0)
    await run(sessions, ctx, envelope(
        "mappa.level_changed", {"from_level": 1, "to_level": 2, "rationale": "registration 222"},
        visor_ref=REF, occurred_at=at(1),
    ))
    state = await nominal(sessions)
    assert (state.mappa_level, state.level_as_of) == (2, at(1))
    assert seen[-1].level_change is not None and not seen[-1].stale


async def test_markers_are_replaced_by_a_newer_upsert(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    await run(sessions, ctx, envelope("nominal.upsert", visor_ref=REF, occurred_at=at(0)))
    markers = [
        {"code": "WEA", "label": "Weapons (fictional)", "restricted": False},
        {"code": "CHI", "label": "Risk to children (fictional)", "restricted": True},
    ]
    await run(
        sessions,
        ctx,
        envelope("nominal.upsert", nominal_data(markers=markers), visor_ref=REF, occurred_at=at(1)),
    )
    async with sessions() as session:
        rows = (await session.execute(select(Marker).order_by(Marker.code))).scalars().all()
    assert [(m.code, m.restricted) for m in rows] == [("CHI", True), ("WEA", False)]


async def test_level_changed_event_and_out_of_order_history(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, seen: list[Applied]
) -> None:
    await run(
        sessions,
        ctx,
        envelope("nominal.upsert", nominal_data(mappa_level=1), visor_ref=REF, occurred_at=at(0)),
    )
    await run(
        sessions,
        ctx,
        envelope(
            "mappa.level_changed",
            {"from_level": 1, "to_level": 3, "rationale": "r1", "recorded_by": "MAPPA-coord"},
            visor_ref=REF,
            occurred_at=at(3),
        ),
    )
    late = envelope(
        "mappa.level_changed",
        {"from_level": 1, "to_level": 2, "rationale": "r0"},
        visor_ref=REF,
        occurred_at=at(2),
    )
    await run(sessions, ctx, late)
    # An upsert older than the newest level change updates the rest but not the level.
    await run(
        sessions,
        ctx,
        envelope(
            "nominal.upsert",
            nominal_data(mappa_level=2, risk_level="high"),
            visor_ref=REF,
            occurred_at=at(2.5),
        ),
    )
    state = await nominal(sessions)
    assert (state.mappa_level, state.level_as_of, state.risk_level) == (3, at(3), "high")
    assert await count(sessions, LevelChange) == 2  # history keeps the late one too
    assert [(a.stale, a.level_change is not None) for a in seen] == [
        (False, False),
        (False, True),
        (True, True),
        (False, False),
    ]
    first_change = seen[1].level_change
    assert first_change is not None and first_change.recorded_by == "MAPPA-coord"


async def test_first_upsert_after_a_newer_level_change_takes_that_level(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    await run(
        sessions,
        ctx,
        envelope(
            "mappa.level_changed",
            {"from_level": 1, "to_level": 2, "rationale": "x"},
            visor_ref=REF,
            occurred_at=at(5),
        ),
    )
    await run(
        sessions,
        ctx,
        envelope("nominal.upsert", nominal_data(mappa_level=1), visor_ref=REF, occurred_at=at(1)),
    )
    state = await nominal(sessions)
    assert (state.mappa_level, state.level_as_of) == (2, at(5))


# --- notifications --------------------------------------------------------------------------------


async def test_notifications_move_last_notification_forward_only(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    # A notification before the nominal exists is taken into account when it appears.
    await run(
        sessions,
        ctx,
        envelope("notification.received", {"kind": "change", "notified_on": "2026-04-01"}, visor_ref=REF),
    )
    await run(
        sessions,
        ctx,
        envelope("nominal.upsert", nominal_data(last_notification_on="2026-03-01"), visor_ref=REF),
    )
    assert (await nominal(sessions)).last_notification_on == date(2026, 4, 1)
    for kind, day, expected in [
        ("periodic", "2026-10-01", date(2026, 10, 1)),
        ("initial", "2026-05-01", date(2026, 10, 1)),  # older: no step back
        # a weekly notification is the s.85(1) notification of a person with no fixed abode
        # (s.85(5)(a), SI 2012/1876): it restarts the clocks; travel (s.86) does not
        ("weekly", "2026-11-15", date(2026, 11, 15)),
        ("travel", "2026-11-16", date(2026, 11, 15)),
        ("return", "2026-11-17", date(2026, 11, 15)),
    ]:
        await run(
            sessions,
            ctx,
            envelope("notification.received", {"kind": kind, "notified_on": day}, visor_ref=REF),
        )
        assert (await nominal(sessions)).last_notification_on == expected, kind
    assert await count(sessions, NotificationReceived) == 6


# --- recalls --------------------------------------------------------------------------------------


def recall(issued: float, **kw: Any) -> dict[str, Any]:
    return envelope(
        "recall.issued",
        {"recall_type": "emergency", "issued_at": at(issued).isoformat()},
        visor_ref=REF,
        occurred_at=at(issued),
        **kw,
    )


def returned(when: float, **kw: Any) -> dict[str, Any]:
    return envelope(
        "recall.returned", {"returned_at": at(when).isoformat()}, visor_ref=REF, occurred_at=at(when), **kw
    )


async def recalls(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[datetime, datetime | None]]:
    async with sessions() as session:
        rows = (await session.execute(select(Recall).order_by(Recall.issued_at))).scalars().all()
    return [(r.issued_at, r.returned_at) for r in rows]


async def test_recall_return_closes_the_open_recall(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    await run(sessions, ctx, recall(0))
    assert await recalls(sessions) == [(at(0), None)]
    await run(sessions, ctx, returned(4))
    assert await recalls(sessions) == [(at(0), at(4))]
    await run(sessions, ctx, recall(10))
    assert await recalls(sessions) == [(at(0), at(4)), (at(10), None)]


async def test_recall_return_before_its_recall_arrives(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, seen: list[Applied]
) -> None:
    await run(sessions, ctx, returned(4))
    await run(sessions, ctx, recall(1))
    assert await recalls(sessions) == [(at(1), at(4))]
    await run(sessions, ctx, recall(6))  # a later recall is not closed by the earlier return
    assert await recalls(sessions) == [(at(1), at(4)), (at(6), None)]
    assert seen[0].stale  # the return found nothing to close when it arrived


async def test_recall_and_return_in_one_batch(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, seen: list[Applied]
) -> None:
    await run(sessions, ctx, recall(1), returned(2))
    assert await recalls(sessions) == [(at(1), at(2))]
    assert [a.stale for a in seen] == [False, False]  # the return is applied as itself


# --- actions --------------------------------------------------------------------------------------


def action(hours: float, **data: Any) -> dict[str, Any]:
    return envelope(
        "action.upsert", {**SAMPLE_DATA["action.upsert"], **data}, visor_ref=REF, occurred_at=at(hours)
    )


async def get_action(sessions: async_sessionmaker[AsyncSession]) -> Action:
    async with sessions() as session:
        found = await session.get(Action, "ACT-0001")
        assert found is not None
        return found


async def test_action_upsert_guarded_and_done_at(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, seen: list[Applied]
) -> None:
    await run(sessions, ctx, action(1))
    await run(sessions, ctx, action(3, status="done"))
    done = await get_action(sessions)
    assert (done.status, done.done_at, done.state_as_of) == ("done", at(3), at(3))
    await run(sessions, ctx, action(2, status="open", due_on="2027-01-01"))  # older: ignored
    assert (await get_action(sessions)).status == "done"
    await run(sessions, ctx, action(4, status="done", summary="Fictional: still done"))
    assert (await get_action(sessions)).done_at == at(3)  # stays when it was done already
    await run(sessions, ctx, action(5, status="open", due_on="2027-01-01"))
    reopened = await get_action(sessions)
    assert (reopened.status, reopened.done_at, reopened.due_on) == ("open", None, date(2027, 1, 1))
    assert [a.stale for a in seen] == [False, False, True, False, False]


# --- concurrency (PostgreSQL: real concurrent transactions) --------------------------------------


@pytest.mark.postgres
async def test_concurrent_posts_of_one_batch_accept_it_once(pg_url: str) -> None:
    from casewatch.store.engine import make_engine, make_sessionmaker

    engine = make_engine(pg_url)
    try:
        sessions = make_sessionmaker(engine)
        ctx = Context(make_settings(pg_url), FixedClock(T0))
        raws = [envelope("nominal.upsert", visor_ref=f"VS-C{i:05d}") for i in range(40)]
        raws += [
            envelope("action.upsert", visor_ref=f"VS-C{i:05d}", action_id=f"ACT-C{i}") for i in range(40)
        ]
        envelopes, errors = parse_envelopes(raws)
        assert errors == []
        results = await asyncio.gather(*(ingest(sessions, envelopes, ctx, source="test") for _ in range(4)))
        assert sorted(r.accepted for r in results) == [0, 0, 0, 80]
        assert sorted(r.duplicates for r in results) == [0, 80, 80, 80]
        assert await count(sessions, Event) == 80
        assert await count(sessions, Nominal) == 40
        assert await count(sessions, Marker) == 40
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_concurrent_first_upserts_of_one_nominal_both_land(pg_url: str) -> None:
    """Two new events creating the same nominal at once: the loser retries and applies as an
    update; the newer state wins whatever the commit order."""
    from casewatch.store.engine import make_engine, make_sessionmaker

    engine = make_engine(pg_url)
    try:
        sessions = make_sessionmaker(engine)
        ctx = Context(make_settings(pg_url), FixedClock(T0))
        for round_ in range(5):
            ref = f"VS-R{round_}"
            old = parse_envelopes(
                envelope("nominal.upsert", nominal_data(risk_level="low"), visor_ref=ref, occurred_at=at(1))
            )[0]
            new = parse_envelopes(
                envelope("nominal.upsert", nominal_data(risk_level="high"), visor_ref=ref, occurred_at=at(2))
            )[0]
            results = await asyncio.gather(
                ingest(sessions, old, ctx, source="t"), ingest(sessions, new, ctx, source="t")
            )
            assert [r.accepted for r in results] == [1, 1]
            assert (await nominal(sessions, ref)).risk_level == "high"
    finally:
        await engine.dispose()


# --- several events about one thing in one batch ---------------------------------------------------


async def test_one_batch_with_newer_level_change_before_the_first_upsert(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    change = envelope(
        "mappa.level_changed",
        {"from_level": 1, "to_level": 3, "rationale": "x"},
        visor_ref=REF,
        occurred_at=at(5),
    )
    note = envelope("notification.received", {"kind": "initial", "notified_on": "2026-06-01"}, visor_ref=REF)
    upsert = envelope("nominal.upsert", nominal_data(mappa_level=1), visor_ref=REF, occurred_at=at(1))
    await run(sessions, ctx, change, note, upsert)
    state = await nominal(sessions)
    assert (state.mappa_level, state.level_as_of, state.last_notification_on) == (3, at(5), date(2026, 6, 1))


async def test_one_batch_upserting_a_nominal_and_an_action_twice(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    def upsert(hours: float, *codes: str) -> dict[str, Any]:
        markers = [{"code": c, "label": f"Fictional {c}", "restricted": False} for c in codes]
        return envelope("nominal.upsert", nominal_data(markers=markers), visor_ref=REF, occurred_at=at(hours))

    await run(sessions, ctx, upsert(1, "A", "B"), upsert(2, "C"), action(1), action(2, status="done"))
    await run(
        sessions, ctx, upsert(3, "D", "E"), upsert(4, "F"), upsert(3.5, "OLD"), action(3, status="open")
    )
    async with sessions() as session:
        codes = sorted(m.code for m in (await session.execute(select(Marker))).scalars())
    assert codes == ["F"]
    assert (await nominal(sessions)).state_as_of == at(4)
    reopened = await get_action(sessions)
    assert (reopened.status, reopened.done_at, reopened.state_as_of) == ("open", None, at(3))


async def test_one_batch_with_a_return_before_its_recall(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    await run(sessions, ctx, returned(4), recall(1), recall(6))
    assert await recalls(sessions) == [(at(1), at(4)), (at(6), None)]
    await run(sessions, ctx, returned(7), returned(8))
    assert await recalls(sessions) == [(at(1), at(4)), (at(6), at(7))]


@pytest.mark.postgres
async def test_concurrent_batches_updating_the_same_nominals_in_opposite_orders(pg_url: str) -> None:
    from casewatch.store.engine import make_engine, make_sessionmaker

    engine = make_engine(pg_url)
    try:
        sessions = make_sessionmaker(engine)
        ctx = Context(make_settings(pg_url), FixedClock(T0))
        refs = [f"VS-D{i:04d}" for i in range(50)]
        await run(sessions, ctx, *[envelope("nominal.upsert", visor_ref=r, occurred_at=at(0)) for r in refs])
        forward = [
            envelope("nominal.upsert", nominal_data(risk_level="high"), visor_ref=r, occurred_at=at(1))
            for r in refs
        ]
        backward = [
            envelope("nominal.upsert", nominal_data(risk_level="low"), visor_ref=r, occurred_at=at(2))
            for r in reversed(refs)
        ]
        results = await asyncio.gather(run(sessions, ctx, *forward), run(sessions, ctx, *backward))
        assert [r.accepted for r in results] == [50, 50]
        async with sessions() as session:
            risks = set((await session.execute(select(Nominal.risk_level))).scalars())
        assert risks == {"low"}  # the newer state wins whatever the commit order
    finally:
        await engine.dispose()


# --- transient conflicts: retried with backoff and jitter -----------------------------------------


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 0.025, 0.05), (2, 0.05, 0.1), (3, 0.1, 0.2),
                                                      (5, 0.4, 0.8), (9, 0.5, 1.0)])
def test_retry_delay_doubles_up_to_a_cap_with_jitter(attempt: int, low: float, high: float) -> None:
    rng = random.Random(1)
    delays = [retry_delay(attempt, rng) for _ in range(200)]
    assert low <= min(delays) and max(delays) <= high
    assert max(delays) - min(delays) > (high - low) / 2  # drawn, not fixed


async def _fail_event_inserts(sessions: async_sessionmaker[AsyncSession], sqlstate: str, times: int) -> None:
    """A fault at the database itself: the next `times` INSERTs into events raise `sqlstate`
    (a sequence counts them: it is not rolled back with the transaction)."""
    async with sessions.begin() as session:
        for statement in (
            "DROP TRIGGER IF EXISTS fault ON events",
            "DROP SEQUENCE IF EXISTS fault_count",
            "CREATE SEQUENCE fault_count",
            "CREATE OR REPLACE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF nextval('fault_count') <= {times} THEN "
            f"RAISE EXCEPTION 'injected fault' USING ERRCODE = '{sqlstate}'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER fault BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION fault()",
        ):
            await session.execute(text(statement))


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.mark.postgres
@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
async def test_a_deadlocked_or_unserializable_ingest_is_retried_after_a_backoff(
    pg_url: str, sqlstate: str, caplog: pytest.LogCaptureFixture
) -> None:
    from casewatch.store.engine import make_engine, make_sessionmaker

    engine = make_engine(pg_url)
    try:
        sessions = make_sessionmaker(engine)
        ctx = Context(make_settings(pg_url), FixedClock(T0))
        await _fail_event_inserts(sessions, sqlstate, times=2)
        envelopes, _ = parse_envelopes([envelope("nominal.upsert"), envelope("action.upsert")])
        sleeps = Sleeps()
        result = await ingest(sessions, envelopes, ctx, source="test", sleep=sleeps, rng=random.Random(3))
        assert (result.accepted, result.retries) == (2, 2)
        assert len(sleeps) == 2 and 0.025 <= sleeps[0] <= 0.05 and 0.05 <= sleeps[1] <= 0.1
        retried = [r.getMessage() for r in caplog.records if "transient conflict" in r.getMessage()]
        assert len(retried) == 2 and all(sqlstate in m for m in retried)
        assert "retry 2 of 3" in retried[1]
        assert await count(sessions, Event) == 2 and await count(sessions, Nominal) == 1
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_retries_are_bounded_and_other_errors_are_not_retried(pg_url: str) -> None:
    from casewatch.store.engine import make_engine, make_sessionmaker

    engine = make_engine(pg_url)
    try:
        sessions = make_sessionmaker(engine)
        ctx = Context(make_settings(pg_url), FixedClock(T0))
        await _fail_event_inserts(sessions, "40P01", times=4)
        envelopes, _ = parse_envelopes([envelope("nominal.upsert")])
        sleeps = Sleeps()
        with pytest.raises(DBAPIError):
            await ingest(sessions, envelopes, ctx, source="test", sleep=sleeps)
        assert len(sleeps) == 3  # four attempts in all
        assert await count(sessions, Event) == 0

        await _fail_event_inserts(sessions, "22023", times=1)  # invalid_parameter_value
        sleeps.clear()
        with pytest.raises(DBAPIError):
            await ingest(sessions, envelopes, ctx, source="test", sleep=sleeps)
        assert sleeps == []  # not a transient conflict: raised at once
    finally:
        await engine.dispose()



async def test_the_same_border_check_reported_twice_is_one_check_with_one_set_of_alerts(
    sessions: async_sessionmaker[AsyncSession], ctx: Context
) -> None:
    """Issue 18 review: the Border Force email and the events API (or two emails spelling the port
    differently) report one passport check under different event ids. Same nominal, direction and
    time within SAME_CHECK_WITHIN: one check, one set of alerts; both events are kept as received.
    A check the other way, or hours later, is another check."""
    await run(sessions, ctx, envelope("nominal.upsert", nominal_data(registered=True), visor_ref=REF,
                                      occurred_at=at(-100)))
    check = {"port": "Dover", "direction": "inbound", "checked_at": "2026-11-20T09:30:27Z"}
    first = await run(sessions, ctx, envelope("travel.border_alert", check, visor_ref=REF, id="api-check"))
    again = await run(sessions, ctx,
        envelope("travel.border_alert", {**check, "port": "Dover Eastern Docks",
                                         "checked_at": "2026-11-20T09:30:00Z"}, visor_ref=REF, id="mail-1"),
        envelope("travel.border_alert", {**check, "checked_at": "2026-11-20T09:31:00Z"}, visor_ref=REF,
                 id="mail-2"),
    )
    assert first.alerts and (again.accepted, again.alerts) == (2, [])
    assert await count(sessions, BorderCheck) == 1 and await count(sessions, Event) == 4
    other_way = await run(sessions, ctx, envelope(
        "travel.border_alert", {**check, "direction": "outbound"}, visor_ref=REF, id="out"))
    later = await run(sessions, ctx, envelope(
        "travel.border_alert", {**check, "checked_at": "2026-11-20T12:00:00Z"}, visor_ref=REF, id="later"))
    assert (other_way.accepted, later.accepted) == (1, 1)
    assert await count(sessions, BorderCheck) == 3
