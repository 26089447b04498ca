"""open_alerts' writes folded on PostgreSQL (twelfth session) against the plain path, on SQLite and
PostgreSQL: the alerts' insert, their deliveries (routing.outbox) and their audit entries with the
entries' nominal index (audit) as one statement (lifecycle.FOLD_OPEN_WRITES), the deliveries and
entries written only if every alert went in. The same steps run both ways into two fresh databases
of one kind (alert ids drawn from one script, a fixed clock): new alerts; a batch with a live key
taken and one within the batch; an alert id drawn twice (the redraw); more alerts than the one
statement takes; alerts written claimed for this process's worker (the handoff); a transaction
rolled back; alerts no receiver hears of (audited as unroutable). Every column of every row of
alerts, deliveries, audit_log (JSON as stored, the sealer's chain) and audit_nominals is the same,
the worker is handed the same rows, and on PostgreSQL the new alerts' steps run two statements
fewer; on SQLite the fold never runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, select, text

import casewatch.alerts.lifecycle as lifecycle
from casewatch.alerts.lifecycle import open_alerts
from casewatch.audit import hasher_for
from casewatch.audit.seal import seal_pending
from casewatch.audit.verify import verify
from casewatch.bell import Claimer, Handoff
from casewatch.context import Context
from casewatch.model.alerts import AlertSpec
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Alert, AuditEntry, AuditNominal, Delivery
from tests.test_audit9_folds import backing, two_urls  # noqa: F401 (fixtures)
from tests.test_delivery_support import add_nominal, make_ctx, make_settings, setup_directory

REFS = ("VS-0000001", "VS-0000002")


class _Ids:
    """Alert ids drawn in order from a counter; `forced` ones first (an id already in use)."""

    def __init__(self) -> None:
        self.n = 0
        self.forced: list[str] = []

    def __call__(self, count: int) -> list[str]:
        out: list[str] = []
        while len(out) < count:
            if self.forced:
                out.append(self.forced.pop(0))
            else:
                self.n += 1
                out.append(f"A-T{self.n:05d}")
        return out


def _spec(kind: str, ref: str, subject: str = "", **more: Any) -> AlertSpec:
    return AlertSpec(kind=kind, severity="high", visor_ref=ref, team="north", subject=subject,
                     summary=f"Fictional {kind} about {ref} \"quoted\" é", owner="PC1234",
                     details={"n": 1, "port": "Port <b>&", **more})


def _border(ref: str, check: str) -> list[AlertSpec]:
    """A border check's two alerts (as the rules open them)."""
    return [_spec("travel.unnotified", ref, check), _spec("travel.record_fta", ref, check)]


def scripted(patch: pytest.MonkeyPatch, *, folded: bool) -> tuple[_Ids, Any, Any]:
    """The alert ids' script (_Ids), and settings and context routing both border alerts
    everywhere; the fold switched on or off."""
    ids = _Ids()
    patch.setattr(lifecycle, "new_alert_ids", ids)
    patch.setattr(lifecycle, "FOLD_OPEN_WRITES", folded)
    settings = make_settings(routing={
        "control_room_channel": "C0CONTROL", "personal_data_targets": ["north.spoc@force.example"],
        "routes": {kind: ["team_channel", "spoc", "npt", "owner_email"]
                   for kind in ("travel.unnotified", "travel.record_fta")},
    })
    return ids, settings, make_ctx(settings)


async def _run(url: str, *, folded: bool, patch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The steps, one transaction each; what the tables hold afterwards, what the worker was
    handed and the statements each step ran."""
    ids, settings, ctx = scripted(patch, folded=folded)
    engine = make_engine(url)
    handoff = Handoff(limit=50)
    counted = [0]

    def count(*_: Any) -> None:
        counted[0] += 1

    out: dict[str, Any] = {"statements": {}, "opened": {}, "handed": []}
    try:
        sessions = make_sessionmaker(engine, handoff=handoff)
        await setup_directory(sessions, settings)
        await add_nominal(sessions, REFS[0])
        await add_nominal(sessions, REFS[1], area="N9")

        async def step(name: str, specs: list[AlertSpec], fail: bool = False) -> None:
            event.listen(engine.sync_engine, "before_cursor_execute", count)
            try:
                async with sessions.begin() as session:
                    await session.connection()  # BEGIN, counted apart from the step
                    counted[0] = 0
                    events = [f"ev-{name}-{i}" for i in range(len(specs))]
                    opened = await open_alerts(session, specs, ctx, events)
                    out["statements"][name] = counted[0]
                    out["opened"][name] = [a.id if a is not None else None for a in opened]
                    if fail:
                        raise _Rollback
            except _Rollback:
                pass
            finally:
                event.remove(engine.sync_engine, "before_cursor_execute", count)

        await step("new", _border(REFS[0], "check-1"))
        # One live key taken (the first step's), one repeated within the batch, one new.
        await step("taken", [_spec("travel.unnotified", REFS[0], "check-1"), *_border(REFS[1], "check-2"),
                             _spec("travel.record_fta", REFS[1], "check-2", again=True)])
        # The first id drawn is one in use: that alert is drawn again.
        ids.forced = ["A-T00001"]
        await step("collision", _border(REFS[0], "check-3"))
        # More alerts than one statement takes: the plain statements.
        await step("many", [_spec("recall.issued", REFS[n % 2], f"r-{n}") for n in range(17)])
        # Written claimed for this process's worker, then handed to it after the commit.
        handoff.attach(Claimer("w-fold", 60))
        await step("claimed", _border(REFS[1], "check-4"))
        out["handed"] = handoff.take(50)
        # Rolled back: nothing stays, nothing is handed.
        await step("rolled_back", _border(REFS[0], "check-5"), fail=True)
        out["handed_after_rollback"] = handoff.take(50)
        await step("after_rollback", _border(REFS[0], "check-6"))
        out["handed"] += handoff.take(50)
        assert await seal_pending(sessions, ctx) > 0
        assert (await verify(sessions, hasher_for(ctx))).intact
        out["tables"] = await _tables(engine)
    finally:
        await engine.dispose()
    return out


class _Rollback(Exception):
    pass


async def _tables(engine: Any) -> dict[str, Any]:
    async with engine.connect() as conn:
        return {
            "alerts": list(await conn.execute(select(Alert.__table__).order_by(Alert.id))),
            "deliveries": list(await conn.execute(select(Delivery.__table__).order_by(Delivery.id))),
            "log": list(await conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.id))),
            "index": list(await conn.execute(
                select(AuditNominal.__table__).order_by(AuditNominal.audit_id, AuditNominal.visor_ref)
            )),
            # As stored (PostgreSQL's json keeps its text as sent).
            "raw": [
                list(await conn.execute(text(
                    "SELECT id, CAST(details AS text), CAST(escalation_chain AS text) FROM alerts ORDER BY id"
                ))),
                list(await conn.execute(text(
                    "SELECT id, CAST(payload AS text) FROM deliveries ORDER BY id"
                ))),
                list(await conn.execute(text(
                    "SELECT id, CAST(details AS text), CAST(nominals AS text) FROM audit_log ORDER BY id"
                ))),
            ],
        }


Run = Callable[..., Awaitable[dict[str, Any]]]


async def plain_and_folded(
    run: Run, urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`run` plain in one fresh database and folded in the other: what each opened, stored and
    handed to the worker is the same."""
    plain_url, folded_url = urls
    with monkeypatch.context() as patch:
        plain = await run(plain_url, folded=False, patch=patch)
    with monkeypatch.context() as patch:
        folded = await run(folded_url, folded=True, patch=patch)
    for part in ("opened", "tables", "handed"):
        assert folded[part] == plain[part], part
    return plain, folded


async def test_the_folded_writes_store_what_the_plain_path_stores(
    two_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    plain, folded = await plain_and_folded(_run, two_urls, monkeypatch)
    assert folded["handed_after_rollback"] == plain["handed_after_rollback"] == []

    # The steps did what they are for.
    tables, opened = plain["tables"], plain["opened"]
    assert opened["taken"][0] is None and opened["taken"][3] is None and None not in opened["taken"][1:3]
    assert "A-T00001" not in opened["collision"] and None not in opened["collision"]
    assert len(tables["alerts"]) == 2 + 2 + 2 + 17 + 2 + 2
    assert {a.id for a in tables["alerts"]}.isdisjoint(opened["rolled_back"])
    by_alert: dict[str, int] = {}
    for d in tables["deliveries"]:
        by_alert[d.alert_id] = by_alert.get(d.alert_id, 0) + 1
    assert set(by_alert) == {a.id for a in tables["alerts"]}
    claimed = [d for d in tables["deliveries"] if d.alert_id in opened["claimed"]]
    assert claimed and all(d.state == "sending" and d.claimed_by == "w-fold" for d in claimed)
    assert [r.id for r in plain["handed"]] == [d.id for d in claimed] + [
        d.id for d in tables["deliveries"] if d.alert_id in opened["after_rollback"]
    ]
    opened_entries = [e for e in tables["log"] if e.action == "alert.opened"]
    kept = [a for name, step in opened.items() if name != "rolled_back" for a in step if a]
    assert [e.subject for e in opened_entries] == kept
    assert len(tables["index"]) == len(opened_entries)

    fewer = {name: plain["statements"][name] - folded["statements"][name] for name in plain["statements"]}
    if two_urls[0].startswith("sqlite"):
        assert set(fewer.values()) == {0}
    else:
        # The alerts, the deliveries and the entries with their index: one statement, not three.
        assert fewer["new"] == fewer["claimed"] == fewer["after_rollback"] == 2
        assert fewer["many"] == 0


async def test_alerts_no_one_hears_of_are_audited_as_unroutable_either_way(
    two_urls: tuple[str, str], monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """No team configured, so no fallback inbox: the plain path (the fold declines) audits each
    alert as unroutable, both ways alike."""
    results = []
    for url, folded in zip(two_urls, (False, True), strict=True):
        with monkeypatch.context() as patch:
            patch.setattr(lifecycle, "new_alert_ids", _Ids())
            patch.setattr(lifecycle, "FOLD_OPEN_WRITES", folded)
            ctx: Context = make_ctx(make_settings(teams=[], officers=[]))  # type: ignore[arg-type]
            engine = make_engine(url)
            try:
                sessions = make_sessionmaker(engine)
                async with sessions.begin() as session:
                    await open_alerts(session, _border("VS-0000003", "check-9"), ctx)
                results.append(await _tables(engine))
            finally:
                await engine.dispose()
    assert results[0] == results[1]
    actions = [e.action for e in results[0]["log"]]
    assert actions == ["delivery.unroutable", "delivery.unroutable", "alert.opened", "alert.opened"]
    assert results[0]["deliveries"] == []


@pytest.fixture(autouse=True)
def _fold_on() -> Iterator[None]:
    assert lifecycle.FOLD_OPEN_WRITES  # the default these tests compare against the plain path
    yield
