"""Review of the twelfth session's folded open_alerts writes (helper review2): paths
tests/test_alerts12_folded_writes.py leaves out, folded against plain in two fresh databases of
one kind (alert ids from one script, a fixed clock): one batch's alerts about two nominals (the
entries' nominal index joined by place: a swap would show only with distinct nominals); the gate
failing (a live key taken, an id drawn twice) while this process's worker takes the rows (the
plain path then hands them); and, on PostgreSQL, a second transaction opening a live key a first
one holds uncommitted: its folded insert waits, the first commits, the gate fails and the plain
path goes on. Every column of alerts, deliveries, audit_log and audit_nominals and the rows
handed are the same both ways."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from casewatch.alerts.lifecycle import open_alerts
from casewatch.bell import Claimer, Handoff
from casewatch.store.engine import make_engine, make_sessionmaker
from tests.test_alerts12_folded_writes import REFS, _border, _spec, _tables, plain_and_folded, scripted
from tests.test_audit9_folds import backing, two_urls  # noqa: F401 (fixtures)
from tests.test_delivery_support import add_nominal, setup_directory


async def _run(url: str, *, folded: bool, patch: pytest.MonkeyPatch) -> dict[str, Any]:
    ids, settings, ctx = scripted(patch, folded=folded)
    engine = make_engine(url)
    handoff = Handoff(limit=100)
    out: dict[str, Any] = {"opened": {}}
    try:
        sessions = make_sessionmaker(engine, handoff=handoff)
        await setup_directory(sessions, settings)
        await add_nominal(sessions, REFS[0])
        await add_nominal(sessions, REFS[1], area="N9")
        handoff.attach(Claimer("w-review", 60))

        async def step(name: str, specs: list[Any]) -> None:
            async with sessions.begin() as session:
                opened = await open_alerts(session, specs, ctx)
            out["opened"][name] = [a.id if a is not None else None for a in opened]

        await step("first", _border(REFS[0], "c1"))
        await step("two_nominals", [_spec("travel.unnotified", REFS[1], "m1"),
                                    _spec("travel.record_fta", REFS[0], "m1"),
                                    _spec("travel.unnotified", REFS[0], "m2")])
        await step("taken", [_spec("travel.unnotified", REFS[0], "c1"), *_border(REFS[1], "c2")])
        ids.forced = ["A-T00001"]
        await step("collision", _border(REFS[0], "c3"))
        if url.startswith("postgresql"):
            out["opened"]["waited"] = await _waiting_open(sessions, ctx)
        out["handed"] = handoff.take(100)
        out["tables"] = await _tables(engine)
    finally:
        await engine.dispose()
    return out


async def _waiting_open(sessions: Any, ctx: Any) -> list[str | None]:
    """A first transaction opens a live key and holds it; a second opens it and another; the
    second's insert is seen waiting on the first's lock before the first commits."""
    held, release = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with sessions.begin() as session:
            await open_alerts(session, [_spec("travel.unnotified", REFS[1], "c9")], ctx)
            held.set()
            await release.wait()

    async def second() -> list[str | None]:
        await held.wait()
        async with sessions.begin() as session:
            opened = await open_alerts(
                session,
                [_spec("travel.unnotified", REFS[1], "c9"), _spec("travel.record_fta", REFS[1], "c9")],
                ctx,
            )
        return [a.id if a is not None else None for a in opened]

    async def watch() -> None:
        await held.wait()
        try:
            async with sessions() as session:
                for _ in range(500):
                    waiting = (await session.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    ))).scalar_one()
                    await session.rollback()
                    if waiting:
                        return
                    await asyncio.sleep(0.01)
            raise AssertionError("the second transaction's insert was never seen waiting")
        finally:
            release.set()

    _, got, _ = await asyncio.gather(first(), second(), watch())
    return got


async def test_the_fold_stores_and_hands_what_the_plain_path_does_where_its_gate_fails(
    two_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    plain, _ = await plain_and_folded(_run, two_urls, monkeypatch)

    opened, tables = plain["opened"], plain["tables"]
    assert opened["taken"][0] is None and None not in opened["taken"][1:]
    assert None not in opened["collision"] and "A-T00001" not in opened["collision"]
    if "waited" in opened:
        assert opened["waited"][0] is None and opened["waited"][1] is not None
    # Every delivery was written claimed and handed; each alert has its entry and index row.
    assert [r.id for r in plain["handed"]] == [d.id for d in tables["deliveries"]]
    assert {d.alert_id for d in tables["deliveries"]} == {a.id for a in tables["alerts"]}
    entries = {e.subject: e.id for e in tables["log"] if e.action == "alert.opened"}
    assert set(entries) == {a.id for a in tables["alerts"]}
    ref_of = {a.id: a.visor_ref for a in tables["alerts"]}
    assert sorted((i.visor_ref, i.audit_id) for i in tables["index"]) == sorted(
        (ref_of[subject], entry_id) for subject, entry_id in entries.items()
    )
    assert {a.visor_ref for a in tables["alerts"] if a.id in opened["two_nominals"]} == set(REFS)
