"""Issue 14: the custody and change events (contract v2), stored, loaded and dispatched, on
SQLite and PostgreSQL: signed events in through the real HTTP app.

- detention.started / detention.ended: time held is disregarded (SOA 2003 s.83(6),
  s.85(3)-(4)); a release owes a notification (s.84(1)(d));
- change.detected, and notification.received `what` / `changed_on` for kind "change" (s.84(1));
- load.history: the whole NotificationHistory the rules read (custody, a recall return as custody
  serving a sentence (s.85(4)(b)) on its local date, changes, return notifications (s.86), trips
  and border checks);
- the 0007 migration, both ways.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.clock import FixedClock
from casewatch.model.alerts import AlertSpec
from casewatch.model.facts import (
    BorderCheckFacts,
    ChangeDetected,
    ChangeNotified,
    DetentionFacts,
    NominalFacts,
    NotificationHistory,
    TravelFacts,
)
from casewatch.model.policy import TriggerPolicy
from casewatch.model.results import RuleResult
from casewatch.store.migrate import current_revision, head_revision, upgrade
from casewatch.store.models import Alert, ChangeDetection, Detention, NotificationReceived
from casewatch.triggers import load
from casewatch.triggers.rules import notifications
from tests.support import downgrade_to, envelope, service_client, signed_post
from tests.test_triggers_case_data import utc

EVENTS = "/api/v1/events"
REF = "VS-0000090"  # everything at once
PLAIN = "VS-0000091"  # a change notification without what / changed_on
NOBODY = "VS-0000092"  # a nominal with no history
CLOCK = FixedClock(utc("2026-12-14T00:00:00Z"))
SOURCE = "Fictional council records check"


def _event(type_: str, event_id: str, data: dict[str, Any], ref: str = REF) -> dict[str, Any]:
    return envelope(type_, data, id=event_id, visor_ref=ref, occurred_at="2026-11-01T00:00:00Z")


def _upsert(ref: str) -> dict[str, Any]:
    return envelope(
        "nominal.upsert", id=f"cu-{ref}", visor_ref=ref, occurred_at="2026-01-01T00:00:00Z",
        last_notification_on="2026-06-01",
    )


def _history_events() -> list[dict[str, Any]]:
    return [
        *(_upsert(ref) for ref in (REF, PLAIN, NOBODY)),
        # s.83(6), s.85(3)-(4): held on remand 2 to 20 March
        _event("detention.started", "cu-ds", {"kind": "remand", "started_on": "2026-03-02"}),
        _event("detention.ended", "cu-de", {"ended_on": "2026-03-20"}),
        # s.85(4)(b): recalled, back in custody at 00:30 BST on 1 June (23:30 UTC on 31 May)
        _event("recall.issued", "cu-ri", {"recall_type": "standard", "issued_at": "2026-05-01T10:00:00Z"}),
        _event("recall.returned", "cu-rr", {"returned_at": "2026-05-31T23:30:00Z"}),
        # s.84(1): a change of home address learned elsewhere, and notified the next day
        _event(
            "change.detected", "cu-cd", {"what": "home_address", "changed_on": "2026-07-01", "source": SOURCE}
        ),
        _event(
            "notification.received", "cu-nc",
            {"kind": "change", "notified_on": "2026-07-02", "what": "home_address",
             "changed_on": "2026-07-01"},
        ),
        _event("notification.received", "cu-np", {"kind": "periodic", "notified_on": "2026-08-01"}),
        # s.86: a trip notified, travelled and returned; a second one cancelled
        _event("notification.received", "cu-nt", {"kind": "travel", "notified_on": "2026-08-01"}),
        _event(
            "travel.notified", "cu-tn",
            {"departure_on": "2026-09-01", "return_on": "2026-09-08", "destination": "FR",
             "notified_at": "2026-08-01T09:00:00Z", "trip_id": "T-9"},
        ),
        _event(
            "travel.notified", "cu-tn2",
            {"departure_on": "2026-10-01", "destination": "IE", "notified_at": "2026-08-02T09:00:00Z",
             "trip_id": "T-10"},
        ),
        _event("travel.cancelled", "cu-tc", {"trip_id": "T-10"}),
        _event(
            "travel.border_alert", "cu-bo",
            {"port": "Dover", "direction": "outbound", "checked_at": "2026-09-01T06:00:00Z"},
        ),
        _event(
            "travel.border_alert", "cu-bi",
            {"port": "Dover", "direction": "inbound", "checked_at": "2026-09-08T18:00:00Z"},
        ),
        _event("notification.received", "cu-nr", {"kind": "return", "notified_on": "2026-09-09"}),
        _event("notification.received", "cu-pc", {"kind": "change", "notified_on": "2026-10-05"}, ref=PLAIN),
    ]


EXPECTED = NotificationHistory(
    last_full_on=date(2026, 8, 1),  # the periodic one; travel and return are not full (s.85(1))
    detentions=(
        DetentionFacts(date(2026, 3, 2), True, "remand", "cu-ds"),
        DetentionFacts(date(2026, 3, 20), False, "", "cu-de"),
        DetentionFacts(date(2026, 6, 1), True, "recall", "cu-rr"),  # the local (BST) date
    ),
    detected=(ChangeDetected("home_address", date(2026, 7, 1), "cu-cd", SOURCE),),
    changes=(ChangeNotified(date(2026, 7, 2), "home_address", date(2026, 7, 1), "cu-nc"),),
    returns_notified=(date(2026, 9, 9),),
    travels=(
        TravelFacts(
            "cu-tn", REF, date(2026, 9, 1), date(2026, 9, 8), "FR", utc("2026-08-01T09:00:00Z"),
            trip_id="T-9",
        ),
        TravelFacts(
            "cu-tn2", REF, date(2026, 10, 1), None, "IE", utc("2026-08-02T09:00:00Z"),
            trip_id="T-10", cancelled=True,
        ),
    ),
    border_checks=(
        BorderCheckFacts("cu-bo", REF, "Dover", "outbound", utc("2026-09-01T06:00:00Z")),
        BorderCheckFacts("cu-bi", REF, "Dover", "inbound", utc("2026-09-08T18:00:00Z")),
    ),
    at_liberty=(date(2026, 5, 1),),  # recalled 1 May: out on licence that day
)
PLAIN_EXPECTED = NotificationHistory(
    last_full_on=date(2026, 10, 5), changes=(ChangeNotified(date(2026, 10, 5), None, None, "cu-pc"),)
)


async def test_history_loads_custody_changes_returns_and_trips(db_url: str) -> None:
    async with service_client(db_url, clock=CLOCK) as (service, client):
        resp = await signed_post(client, EVENTS, _history_events())
        assert resp.status == 202, await resp.text()
        tz = ZoneInfo(service.settings.service.timezone)
        assert tz.key == "Europe/London"
        async with service.sessions() as session:
            assert await load.history(session, REF, tz) == EXPECTED
            assert await load.history(session, PLAIN, tz) == PLAIN_EXPECTED
            assert await load.history(session, NOBODY, tz) == NotificationHistory()
            # The scan's loaders say the same, and leave out a nominal with no history.
            assert await load.histories(session, [REF, PLAIN, NOBODY], tz) == {
                REF: EXPECTED, PLAIN: PLAIN_EXPECTED
            }


async def _counts(service: Any) -> tuple[int, int, int]:
    async with service.sessions() as session:
        return (
            int((await session.execute(select(func.count(Detention.id)))).scalar_one()),
            int((await session.execute(select(func.count(ChangeDetection.id)))).scalar_one()),
            int((await session.execute(select(func.count(NotificationReceived.id)))).scalar_one()),
        )


async def test_each_new_event_is_stored_and_a_replay_changes_nothing(db_url: str) -> None:
    batch = [
        _event("detention.started", "st-1", {"kind": "hospital", "started_on": "2026-04-01"}),
        _event("detention.ended", "st-2", {"ended_on": "2026-04-30"}),
        _event("change.detected", "st-3", {"what": "release", "changed_on": "2026-04-30", "source": SOURCE}),
        _event(
            "notification.received", "st-4",
            {"kind": "change", "notified_on": "2026-05-01", "what": "release", "changed_on": "2026-04-30"},
        ),
    ]
    async with service_client(db_url, clock=CLOCK) as (service, client):
        resp = await signed_post(client, EVENTS, batch)
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["accepted"] == 4
        async with service.sessions() as session:
            detentions = (await session.execute(select(Detention).order_by(Detention.event_id))).scalars()
            assert [(d.visor_ref, d.started, d.kind, d.on_date, d.event_id) for d in detentions] == [
                (REF, True, "hospital", date(2026, 4, 1), "st-1"),
                (REF, False, None, date(2026, 4, 30), "st-2"),
            ]
            [detected] = (await session.execute(select(ChangeDetection))).scalars()
            assert (detected.visor_ref, detected.what, detected.changed_on, detected.source) == (
                REF, "release", date(2026, 4, 30), SOURCE
            )
            [notified] = (await session.execute(select(NotificationReceived))).scalars()
            assert (notified.kind, notified.notified_on, notified.what, notified.changed_on) == (
                "change", date(2026, 5, 1), "release", date(2026, 4, 30)
            )
        before = await _counts(service)
        assert before == (2, 1, 1)
        again = await signed_post(client, EVENTS, batch)
        assert again.status == 202, await again.text()
        assert await again.json() == {"accepted": 0, "duplicates": 4, "alerts": []}
        assert await _counts(service) == before


def _notification(**data: Any) -> dict[str, Any]:
    return _event("notification.received", "bad", {"notified_on": "2026-05-01", **data})


def _detention(**data: Any) -> dict[str, Any]:
    return _event("detention.started", "bad", data)


def _release(**data: Any) -> dict[str, Any]:
    return _event("detention.ended", "bad", data)


def _detected(source: str) -> dict[str, Any]:
    return _event("change.detected", "bad", {"what": "name", "changed_on": "2026-04-30", "source": source})


@pytest.mark.parametrize(
    ("event", "field", "message"),
    [
        # s.84(1): what and changed_on describe a change notification, nothing else
        (_notification(kind="periodic", what="name"), "data.what", 'is only allowed with kind "change"'),
        (_notification(kind="return", changed_on="2026-04-30"), "data.changed_on", "kind \"change\""),
        (_notification(kind="change", what="job"), "data.what", "'home_address'"),
        (_detention(kind="prison", started_on="2026-04-01"), "data.kind", "'remand'"),
        (_detention(kind="remand"), "data.started_on", "is required"),
        (_release(ended_on="2026-02-30"), "data.ended_on", "not a real calendar date"),
        (_release(ended_on="2026-04-30", kind="remand"), "data.kind", "not a known field"),
        (_detected(""), "data.source", "at least 1 character"),
        (_detected("  "), "data.source", "must not be blank"),
        (_detected("Council\u202echeck"), "data.source", "(U+202E)"),
        (_detected("x" * 101), "data.source", "at most 100 characters"),
    ],
    ids=[
        "what-with-periodic", "changed_on-with-return", "unknown-what", "bad-kind", "no-start",
        "bad-date", "unknown-key", "empty-source", "blank-source", "invisible-source", "long-source",
    ],
)
async def test_bad_values_are_refused_with_a_clear_error(
    db_url: str, event: dict[str, Any], field: str, message: str
) -> None:
    async with service_client(db_url, clock=CLOCK) as (service, client):
        resp = await signed_post(client, EVENTS, [event])
        assert resp.status == 400
        [error] = (await resp.json())["errors"]
        assert (error["index"], error["field"]) == (0, field)
        assert message in error["message"]
        assert await _counts(service) == (0, 0, 0)


async def test_a_change_event_runs_the_late_rule_and_opens_what_it_asks(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event-driven late rule (rules.notifications.late, s.84(1)) gets the nominal, its whole
    history and the event, for a change notification and a change detected (not for other kinds),
    and what it asks for is opened."""
    calls: list[tuple[str, NotificationHistory, str]] = []

    def late(
        nominal: NominalFacts, history: NotificationHistory, _: TriggerPolicy, tz: ZoneInfo, event_id: str
    ) -> RuleResult:
        calls.append((nominal.visor_ref, history, event_id))
        spec = AlertSpec(
            kind=notifications.MISSED, severity="high", visor_ref=nominal.visor_ref, team=nominal.team,
            subject=f"change:{event_id}", summary=f"Late change notification: {nominal.visor_ref}",
        )
        return RuleResult(opens=(spec,))

    monkeypatch.setattr(notifications, "late", late, raising=False)
    async with service_client(db_url, clock=CLOCK) as (service, client):
        batch = [
            _upsert(REF),
            _event("change.detected", "lt-1", {"what": "name", "changed_on": "2026-11-01", "source": SOURCE}),
            _event("notification.received", "lt-2", {"kind": "change", "notified_on": "2026-11-06"}),
            _event("notification.received", "lt-3", {"kind": "periodic", "notified_on": "2026-11-06"}),
            _event("detention.ended", "lt-4", {"ended_on": "2026-11-02"}),
        ]
        resp = await signed_post(client, EVENTS, batch)
        assert resp.status == 202, await resp.text()
        assert len((await resp.json())["alerts"]) == 2
        async with service.sessions() as session:
            subjects = (await session.execute(select(Alert.subject).where(Alert.visor_ref == REF))).scalars()
            assert sorted(subjects) == ["change:lt-1", "change:lt-2"]
    assert [(ref, event_id) for ref, _, event_id in calls] == [(REF, "lt-1"), (REF, "lt-2")]
    history = calls[0][1]  # read once, after the whole batch was applied
    assert history.detected == (ChangeDetected("name", date(2026, 11, 1), "lt-1", SOURCE),)
    assert history.changes == (ChangeNotified(date(2026, 11, 6), None, None, "lt-2"),)
    assert history.detentions == (DetentionFacts(date(2026, 11, 2), False, "", "lt-4"),)


async def test_migration_0007_adds_custody_and_changes_and_is_reversible(engine: AsyncEngine) -> None:
    def columns(conn: Connection) -> set[str]:
        return {c["name"] for c in inspect(conn).get_columns("notifications")}

    def tables(conn: Connection) -> set[str]:
        return set(inspect(conn).get_table_names())

    added, new_tables = {"what", "changed_on"}, {"detentions", "change_detections"}
    assert await current_revision(engine) == head_revision()
    async with engine.begin() as conn:
        assert added <= await conn.run_sync(columns)
        assert new_tables <= await conn.run_sync(tables)
        await conn.run_sync(downgrade_to, str(engine.url), "0006")
    assert await current_revision(engine) == "0006"
    async with engine.connect() as conn:
        assert not added & await conn.run_sync(columns)
        assert not new_tables & await conn.run_sync(tables)
        # The expression index /flags uses survives (no batch rebuild of a table).
        catalog = (
            "SELECT indexname FROM pg_indexes"
            if engine.dialect.name == "postgresql"
            else "SELECT name FROM sqlite_master WHERE type = 'index'"
        )
        assert "ix_nominals_visor_ref_compact" in set((await conn.execute(text(catalog))).scalars())
    await upgrade(engine, "0007")
    async with engine.connect() as conn:
        assert added <= await conn.run_sync(columns)
        assert new_tables <= await conn.run_sync(tables)
