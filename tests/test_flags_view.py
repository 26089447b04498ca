"""/flags reads everything it shows about a nominal in one statement (nominal, offender manager,
notification history, latest recall, markers and live alerts, the lists as JSON built in SQL):
the view it builds, on SQLite and PostgreSQL, field by field, and the number of statements.

All names, dates and references are fictional.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import acknowledge, open_alert, resolve
from casewatch.clock import FixedClock
from casewatch.context import Context
from casewatch.directory import sync_directory
from casewatch.lookup import Found, MarkerView, NotFound, OfficerContact, Requester, Several, look_up_flags
from casewatch.lookup.due import NotificationDue
from casewatch.lookup.json_sql import utc_from_json
from casewatch.model.alerts import AlertSpec
from casewatch.model.names import name_key
from casewatch.store.models import AuditEntry, Detention, Marker, Nominal, NotificationReceived, Recall
from tests.support import T0, make_settings

OFFICER = Requester("PC1234", "PC Example", "north", frozenset({"officer"}))
SPOC = Requester("SPOC01", "SPOC Example", "north", frozenset({"spoc"}))
# Microseconds and a non-UTC offset on the way in: the view must give back the same instants, in UTC.
ISSUED = datetime(2026, 11, 18, 7, 15, 30, 123456, tzinfo=UTC)


def _nominal(ref: str, surname: str, **kw: Any) -> Nominal:
    values: dict[str, Any] = dict(
        visor_ref=ref, surname=surname, surname_key=name_key(surname), forenames="Test Sample",
        date_of_birth=date(1979, 4, 2), pnc_id=None, category="2", mappa_level=2, registered=True,
        risk_level="high", lead_agency="probation", team="north", offender_manager="PC1234", area="N02",
        on_licence=True, no_fixed_abode=False, last_notification_on=date(2026, 1, 10),
        release_date=None, licence_expiry=date(2027, 5, 1), aliases=[], state_as_of=T0,
        level_as_of=None, updated_at=T0,
    )
    values.update(kw)
    return Nominal(**values)


@pytest.fixture
async def store(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[tuple[Context, Any]]:
    ctx = Context(make_settings("sqlite+aiosqlite:///unused.db"), FixedClock(T0))
    async with sessions() as session, session.begin():
        await sync_directory(session, ctx.settings)
        session.add_all([
            _nominal("VS-F0001", "Viewson", pnc_id="2001/0004321K"),
            _nominal("VS-F0002", "Unmanaged", offender_manager="", on_licence=False, licence_expiry=None),
            _nominal("VS-F0003", "Elsewhere", offender_manager="PROB0099", registered=False),
            Marker(visor_ref="VS-F0001", code="WEA", label="Weapons <fictional> & more", restricted=False),
            Marker(visor_ref="VS-F0001", code="XRS", label="Covert (fictional)", restricted=True),
            Marker(visor_ref="VS-F0001", code="ABC", label="Restricted too (fictional)", restricted=True),
            Marker(visor_ref="VS-F0001", code="DRG", label="Drugs (fictional)", restricted=False),
            NotificationReceived(visor_ref="VS-F0001", kind="periodic", notified_on=date(2026, 3, 4),
                                 event_id="e-f1"),
            NotificationReceived(visor_ref="VS-F0001", kind="travel", notified_on=date(2026, 8, 9),
                                 event_id="e-f2"),
            # An older, ended recall and a newer open one: the open one is shown.
            Recall(visor_ref="VS-F0001", recall_type="standard", issued_at=ISSUED - timedelta(days=200),
                   returned_at=ISSUED - timedelta(days=150), event_id="e-r1", return_event_id="e-r2"),
            Recall(visor_ref="VS-F0001", recall_type="emergency",
                   issued_at=ISSUED.astimezone(timezone(timedelta(hours=1))), returned_at=None,
                   event_id="e-r3"),
            # Only ended recalls: the latest issued is shown, not at large.
            Recall(visor_ref="VS-F0002", recall_type="fixed_term", issued_at=ISSUED - timedelta(days=90),
                   returned_at=ISSUED - timedelta(days=80), event_id="e-r4", return_event_id="e-r5"),
            Recall(visor_ref="VS-F0002", recall_type="standard", issued_at=ISSUED - timedelta(days=30),
                   returned_at=ISSUED - timedelta(days=20, microseconds=7), event_id="e-r6",
                   return_event_id="e-r7"),
        ])
    async with sessions() as session, session.begin():
        low = await open_alert(session, AlertSpec(
            "mappa.level_changed", "low", "VS-F0001", "north", subject="a", summary="Level changed",
            owner="PC1234",
        ), ctx)
        high = await open_alert(session, AlertSpec(
            "notification.missed", "high", "VS-F0001", "north", subject="b", summary="Missed <periodic>",
            due_at=ISSUED + timedelta(days=1),
        ), ctx)
        acked = await open_alert(session, AlertSpec(
            "recall.issued", "critical", "VS-F0001", "north", subject="c", summary="Recalled",
        ), ctx)
        gone = await open_alert(session, AlertSpec(
            "action.overdue", "medium", "VS-F0001", "north", subject="d", summary="Resolved one",
        ), ctx)
        assert low and high and acked and gone
        await acknowledge(session, acked.id, "SGT0001", "api", ctx)
        await resolve(session, gone, "done", ctx)
    yield ctx, {"sessions": sessions, "alerts": {"low": low.id, "high": high.id, "acked": acked.id}}


async def _flags(store: tuple[Context, Any], text: str, requester: Requester = OFFICER) -> Any:
    ctx, held = store
    async with held["sessions"]() as session, session.begin():
        return await look_up_flags(session, requester, text, ctx)


async def test_the_whole_view_comes_back_as_stored(store: tuple[Context, Any]) -> None:
    outcome = await _flags(store, "vs f0001", SPOC)
    assert isinstance(outcome, Found)
    view = outcome.view
    assert (view.visor_ref, view.surname, view.forenames, view.date_of_birth, view.pnc_id) == (
        "VS-F0001", "Viewson", "Test Sample", date(1979, 4, 2), "2001/0004321K"
    )
    assert (view.category, view.mappa_level, view.risk_level, view.lead_agency, view.team) == (
        "2", 2, "high", "probation", "north"
    )
    assert view.registered is True and view.no_fixed_abode is False and view.restricted_included
    # Ordered as before: unrestricted first, then by code.
    assert view.markers == (
        MarkerView("DRG", "Drugs (fictional)", False),
        MarkerView("WEA", "Weapons <fictional> & more", False),
        MarkerView("ABC", "Restricted too (fictional)", True),
        MarkerView("XRS", "Covert (fictional)", True),
    )
    # The travel notification does not restart the year; the periodic one does.
    assert view.next_notification == NotificationDue("periodic", date(2027, 3, 4))
    lic = view.licence
    assert lic.recalled and lic.unlawfully_at_large and lic.recall_type == "emergency"
    assert lic.recall_issued_at == ISSUED and lic.recall_issued_at.tzinfo == UTC
    assert lic.returned_at is None and lic.on_licence and lic.licence_expiry == date(2027, 5, 1)
    assert view.offender_manager == OfficerContact(
        "PC1234", "PC Example", "pc1234@force.example", "U0PC1234", "north"
    )


async def test_live_alerts_most_urgent_first_with_their_times(store: tuple[Context, Any]) -> None:
    _, held = store
    ids = held["alerts"]
    outcome = await _flags(store, "VS-F0001")
    assert isinstance(outcome, Found)
    alerts = outcome.view.open_alerts
    # Open ones by severity, then the acknowledged one; the resolved one is left out.
    assert [a.alert_id for a in alerts] == [ids["high"], ids["low"], ids["acked"]]
    high, low, acked = alerts
    assert (high.kind, high.severity, high.state, high.summary, high.owner) == (
        "notification.missed", "high", "open", "Missed <periodic>", None
    )
    assert high.due_at == ISSUED + timedelta(days=1) and high.opened_at == T0
    assert low.owner == "PC1234" and low.due_at is None and low.team == "north"
    assert acked.state == "acknowledged" and acked.acknowledged_by == "SGT0001"
    assert acked.acknowledged_at == T0 and all(a.opened_at.tzinfo == UTC for a in alerts)


async def test_restricted_markers_are_not_read_for_an_uncleared_role(store: tuple[Context, Any]) -> None:
    outcome = await _flags(store, "VS-F0001", OFFICER)
    assert isinstance(outcome, Found)
    assert [m.code for m in outcome.view.markers] == ["DRG", "WEA"]
    assert not outcome.view.restricted_included


async def test_ended_recalls_and_no_offender_manager(store: tuple[Context, Any]) -> None:
    outcome = await _flags(store, "unmanaged")
    assert isinstance(outcome, Found)
    view = outcome.view
    assert view.offender_manager == OfficerContact("", "", "", "", "")
    assert view.markers == () and view.open_alerts == ()
    lic = view.licence
    assert not lic.recalled and lic.recall_type == "standard" and not lic.on_licence
    assert lic.recall_issued_at == ISSUED - timedelta(days=30)
    assert lic.returned_at == ISSUED - timedelta(days=20, microseconds=7)


async def test_a_manager_outside_the_directory_and_no_recall(store: tuple[Context, Any]) -> None:
    outcome = await _flags(store, "elsewhere")
    assert isinstance(outcome, Found)
    view = outcome.view
    assert view.offender_manager == OfficerContact("PROB0099", "", "", "", "")
    assert view.next_notification is None and not view.registered
    lic = view.licence
    assert (lic.recalled, lic.recall_type, lic.recall_issued_at, lic.returned_at) == (False, None, None, None)


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb != "BEGIN":  # SQLite's BEGIN IMMEDIATE (store.engine); PostgreSQL's is not a statement
            seen.append(verb)

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def test_one_statement_to_read_and_one_to_audit(
    store: tuple[Context, Any], engine: AsyncEngine
) -> None:
    async with store[1]["sessions"]() as session, session.begin():
        session.add(_nominal("VS-F0009", "Plainview"))  # registered, no custody on record
    with statements(engine) as by_reference:
        assert isinstance(await _flags(store, "VS-F0009", SPOC), Found)
    # Then the audit entry and its nominal index (casewatch.audit.record): one statement on
    # PostgreSQL (a data-modifying WITH), two on SQLite.
    audit = ["WITH"] if engine.dialect.name == "postgresql" else ["INSERT", "INSERT"]
    assert by_reference == ["SELECT", *audit]
    # Recall returns on record: the rest of the notification facts (custody, SOA 2003
    # s.85(4)(b)) are read too, so that /flags and the alerts agree; still only SELECTs.
    with statements(engine) as with_custody:
        assert isinstance(await _flags(store, "VS-F0001", SPOC), Found)
    history = with_custody[1 : -len(audit)]
    assert len(history) > 1 and set(history) == {"SELECT"} and with_custody[-len(audit) :] == audit
    with statements(engine) as by_pnc:
        assert isinstance(await _flags(store, "01/4321k"), Found)
    assert by_pnc == ["SELECT", "SELECT", *history, *audit]  # the reference, then the PNC ID
    with statements(engine) as by_surname:
        assert isinstance(await _flags(store, "viewson 02/04/1979"), Found)
    assert by_surname == ["SELECT", "SELECT", *history, *audit]  # candidates, then the one found
    with statements(engine) as missing:
        assert isinstance(await _flags(store, "nobody"), NotFound)
    assert missing == ["SELECT", "INSERT"]  # no nominal to index


async def test_several_and_the_audit_rows(store: tuple[Context, Any]) -> None:
    ctx, held = store
    async with held["sessions"]() as session, session.begin():
        session.add_all([_nominal(f"VS-F01{i:02d}", "Twinning", date_of_birth=date(1990, 1, i + 1))
                         for i in range(12)])
    outcome = await _flags(store, "twinning")
    assert isinstance(outcome, Several) and outcome.total == 12 and len(outcome.candidates) == 10
    assert [c.date_of_birth.day for c in outcome.candidates] == list(range(1, 11))
    assert isinstance(await _flags(store, "VS-F0001", SPOC), Found)
    async with held["sessions"]() as session:
        stmt = select(AuditEntry).where(AuditEntry.action == "flags.lookup").order_by(AuditEntry.id)
        several, found = (await session.execute(stmt)).scalars()
    assert several.details == {
        "roles": ["officer"], "via": "slack", "query_kind": "surname", "outcome": "several", "total": 12,
        "visor_refs_shown": [f"VS-F01{i:02d}" for i in range(10)],
    }
    assert several.nominals == [f"VS-F01{i:02d}" for i in range(10)]
    assert found.actor == "SPOC01" and found.subject == "VS-F0001" and found.nominals == ["VS-F0001"]
    assert found.purpose == "lookup of a nominal the requester's own team manages"
    assert found.at == T0
    assert found.details == {
        "roles": ["spoc"], "via": "slack", "query_kind": "identifier", "outcome": "found",
        "need_to_know": "own_case", "visor_refs_shown": ["VS-F0001"],
        "restricted_markers_shown": True, "restricted_markers_shown_count": 2, "markers_shown": 4,
        "alerts_shown": [held["alerts"]["high"], held["alerts"]["low"], held["alerts"]["acked"]],
        "unlawfully_at_large": True, "personal_data_shown": True,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-18T07:15:30.123456+00:00", ISSUED),  # PostgreSQL's JSON
        ("2026-11-18T08:15:30.123456+01:00", ISSUED),
        ("2026-11-18 07:15:30.123456", ISSUED),  # SQLite's stored text
        (None, None),
    ],
)
def test_timestamps_read_back_from_json(text: str | None, expected: datetime | None) -> None:
    got = utc_from_json(text)
    assert got == expected and (got is None or got.tzinfo == UTC)


async def test_not_at_large_once_custody_after_the_recall_is_on_record(store: tuple[Context, Any]) -> None:
    """The banner follows the recall.unlawfully_at_large rule (rules.recall.no_longer_at_large):
    a detention started after the recall was issued, with no recall.returned received, is custody
    (Criminal Justice Act 2003 s.254(6): a recalled person is liable to be detained)."""
    outcome = await _flags(store, "VS-F0001", SPOC)
    assert isinstance(outcome, Found) and outcome.view.licence.unlawfully_at_large
    async with store[1]["sessions"]() as session, session.begin():
        session.add(Detention(visor_ref="VS-F0001", started=True, kind="sentence",
                              on_date=ISSUED.date(), event_id="e-det-1"))
    outcome = await _flags(store, "VS-F0001", SPOC)
    assert isinstance(outcome, Found)
    assert not outcome.view.licence.unlawfully_at_large and outcome.view.licence.recall_type == "emergency"
