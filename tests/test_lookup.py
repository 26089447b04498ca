"""The queries behind /flags and /tasks, without Slack: reading what was typed (table tests),
the next notification due (a pure function), and the store queries on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import open_alert
from casewatch.clock import FixedClock
from casewatch.config.triggers import TriggerSection
from casewatch.context import Context
from casewatch.directory import sync_directory
from casewatch.lookup import (
    Found,
    NotFound,
    Requester,
    Several,
    Unreadable,
    Usage,
    list_tasks,
    look_up_flags,
    parse_query,
    pnc_key,
)
from casewatch.lookup.due import NotificationDue, next_notification_due
from casewatch.lookup.flags import CANDIDATE_LIMIT, _by_surname_statement
from casewatch.lookup.query import QueryError
from casewatch.model.alerts import AlertSpec
from casewatch.model.facts import DetentionFacts, NominalFacts, NotificationHistory
from casewatch.model.names import name_key
from casewatch.store.models import Action, AuditEntry, Marker, Nominal, NotificationReceived, Recall
from tests.support import T0, make_settings

OFFICER = Requester("PC1234", "PC Example", "north", frozenset({"officer"}))
SUPERVISOR = Requester("SGT0001", "Sgt Example", "north", frozenset({"officer", "supervisor"}))
SPOC = Requester("SPOC01", "SPOC Example", "north", frozenset({"spoc"}))

# --- reading the query --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "kind", "key", "dob"),
    [
        ("VS-0001234", "identifier", "VS-0001234", None),
        ("  vs 0001234 ", "identifier", "VS0001234", None),
        ("98/123456x", "identifier", "98/123456X", None),
        ("smith", "surname", "smith", None),
        ("  SMITH  ", "surname", "smith", None),
        ("Van  der Berg", "surname", "vanderberg", None),
        ("o'brien", "surname", "obrien", None),
        ("O\u2019Brien", "surname", "obrien", None),
        ("smith-jones", "surname", "smithjones", None),
        ("smith 14/03/1980", "surname", "smith", date(1980, 3, 14)),
        ("smith 14-03-1980", "surname", "smith", date(1980, 3, 14)),
        ("smith 14.3.1980", "surname", "smith", date(1980, 3, 14)),
        ("smith 1980-03-14", "surname", "smith", date(1980, 3, 14)),
        ("smith 14 Mar 1980", "surname", "smith", date(1980, 3, 14)),
        ("de la cruz 1 september 1990", "surname", "delacruz", date(1990, 9, 1)),
    ],
)
def test_parse_query(typed: str, kind: str, key: str, dob: date | None) -> None:
    query = parse_query(typed)
    assert query is not None
    assert query.kind == kind
    assert (query.identifier if kind == "identifier" else query.name_key) == key
    assert query.date_of_birth == dob
    assert query.text == " ".join(typed.split())


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("smith 30/02/1980", "not a real date"),
        ("smith 14/03/80", "four digits"),
        ("14/03/1980", "surname as well"),
        ("sm1th 14/03/1980", "no digits"),
        ("''' 14/03/1980", "surname"),
    ],
)
def test_parse_query_errors_say_how_to_write_it(typed: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_query(typed)


def test_control_and_format_characters_are_dropped() -> None:
    query = parse_query("\u202e sm\u0000ith\u200b  14/03/1980 ")
    assert query is not None and query.text == "smith 14/03/1980" and query.name_key == "smith"
    assert parse_query("\u0000 \u202e") is None


def test_empty_query_is_a_request_for_help() -> None:
    assert parse_query("") is None and parse_query("  \t ") is None


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("98/123456X", "98/123456X"),
        ("1998/0123456x", "98/123456X"),
        ("98/0123456X", "98/123456X"),
        ("98 123456 X", "98/123456X"),
        ("2003/12A", "03/12A"),
        ("VS-0001", None),
        ("smith", None),
    ],
)
def test_pnc_key(typed: str, key: str | None) -> None:
    assert pnc_key(typed) == key


def test_name_key_matches_the_stored_surname_key_however_typed() -> None:
    stored = name_key("Van  Der Berg")  # what ingest writes
    assert stored == name_key("vanderberg") == name_key(" VAN der-berg ") == "vanderberg"


# --- the next notification ----------------------------------------------------------------------

CLOCKS = TriggerSection()
TZ = ZoneInfo("Europe/London")


@pytest.mark.parametrize(
    ("registered", "nfa", "last", "release", "expected"),
    [
        (False, False, date(2026, 1, 1), None, None),
        (True, False, None, None, None),
        (True, False, date(2026, 3, 1), None, NotificationDue("periodic", date(2027, 3, 1))),
        # s.85(5)(a), SI 2012/1876: no fixed abode: a week after the last notification
        (True, True, date(2026, 3, 1), None, NotificationDue("weekly", date(2026, 3, 8))),
        (True, False, date(2024, 2, 29), None, NotificationDue("periodic", date(2025, 2, 28))),
        # Released after the last notification: the initial notification is due within the 3
        # days beginning with the release (s.83(1), s.84(1)(d)): 18, 19 and 20 Nov.
        (True, False, date(2025, 1, 1), date(2026, 11, 18), NotificationDue("initial", date(2026, 11, 20))),
        (True, False, None, date(2026, 11, 18), NotificationDue("initial", date(2026, 11, 20))),
        # Notified since release: back to the yearly clock (s.85(1), (5)(b)).
        (True, False, date(2026, 11, 19), date(2026, 11, 18),
         NotificationDue("periodic", date(2027, 11, 19))),
    ],
)
def test_next_notification_due(
    registered: bool, nfa: bool, last: date | None, release: date | None, expected: NotificationDue | None
) -> None:
    facts = NominalFacts(
        "VS-0000001", "north", "PC1234", registered=registered, no_fixed_abode=nfa,
        release_date=release, last_notification_on=last,
    )
    due = next_notification_due(facts, NotificationHistory(), CLOCKS, TZ)
    assert due == expected


INITIAL_18_NOV = NotificationDue("initial", date(2026, 11, 18))


@pytest.mark.parametrize(
    ("relevant", "ends", "today", "expected"),
    [
        # s.83(1): cautioned 16 Nov, no release: due within the 3 days beginning with it
        (date(2026, 11, 16), None, date(2026, 11, 17), INITIAL_18_NOV),
        # s.82(1): on the last day of the period it is still shown
        (date(2026, 11, 16), date(2026, 11, 20), date(2026, 11, 20), INITIAL_18_NOV),
        # s.82(1): after the period nothing is owed any more
        (date(2026, 11, 16), date(2026, 11, 20), date(2026, 11, 21), None),
    ],
)
def test_next_notification_due_from_the_relevant_date_until_the_end(
    relevant: date, ends: date | None, today: date, expected: NotificationDue | None
) -> None:
    facts = NominalFacts("VS-0000001", "north", "PC1234", relevant_date=relevant, notification_ends_on=ends)
    assert next_notification_due(facts, NotificationHistory(), CLOCKS, TZ, today) == expected


# --- the store queries --------------------------------------------------------------------------


def _nominal(ref: str, surname: str, **kw: Any) -> Nominal:
    values: dict[str, Any] = dict(
        visor_ref=ref, surname=surname, surname_key=name_key(surname), forenames="Test",
        date_of_birth=date(1980, 1, 1), pnc_id=None, category="1", mappa_level=1, registered=True,
        risk_level="medium", lead_agency="police", team="north", offender_manager="PC1234", area="N01",
        on_licence=False, no_fixed_abode=False, last_notification_on=date(2026, 3, 1),
        release_date=None, licence_expiry=None, aliases=[], state_as_of=T0, level_as_of=None,
        updated_at=T0,
    )
    values.update(kw)
    return Nominal(**values)


@pytest.fixture
async def store(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[tuple[Context, Any]]:
    ctx = Context(make_settings("sqlite+aiosqlite:///unused.db"), FixedClock(T0))
    async with sessions() as session, session.begin():
        await sync_directory(session, ctx.settings)
        session.add_all([
            _nominal("VS-L0001", "Lookupson", pnc_id="2003/0012345A"),
            _nominal("VS-L0002", "Nfa-Person", no_fixed_abode=True, last_notification_on=date(2026, 11, 1)),
            _nominal("VS-L0003", "Returned", on_licence=True),
            *[_nominal(f"VS-M{i:04d}", "Many", date_of_birth=date(1970, 1, 1) + timedelta(days=i))
              for i in range(CANDIDATE_LIMIT + 3)],
            Marker(visor_ref="VS-L0001", code="R1", label="Restricted (fictional)", restricted=True),
            NotificationReceived(visor_ref="VS-L0001", kind="change", notified_on=date(2026, 6, 15),
                                 event_id="e-n1"),
            NotificationReceived(visor_ref="VS-L0001", kind="travel", notified_on=date(2026, 9, 1),
                                 event_id="e-n2"),
            Recall(visor_ref="VS-L0003", recall_type="standard", issued_at=T0 - timedelta(days=9),
                   returned_at=T0 - timedelta(days=2), event_id="e-r1", return_event_id="e-r2"),
            Action(action_id="A1", visor_ref="VS-L0001", summary="Fictional", owner="PC1234",
                   due_on=date(2026, 11, 19), status="open", source="rmp", state_as_of=T0, done_at=None),
            Action(action_id="A2", visor_ref="VS-L0001", summary="Fictional", owner="PC1234",
                   due_on=date(2026, 11, 1), status="done", source="rmp", state_as_of=T0, done_at=T0),
        ])
    async with sessions() as session, session.begin():
        # Unowned: falls to the nominal's offender manager (PC1234).
        await open_alert(session, AlertSpec("recall.issued", "critical", "VS-L0001", "north"), ctx)
    yield ctx, sessions


async def _flags(store: tuple[Context, Any], text: str, requester: Requester = OFFICER) -> Any:
    ctx, sessions = store
    async with sessions() as session, session.begin():
        return await look_up_flags(session, requester, text, ctx)


async def test_pnc_written_short_finds_the_long_form(store: tuple[Context, Any]) -> None:
    outcome = await _flags(store, "03/12345a")
    assert isinstance(outcome, Found) and outcome.view.visor_ref == "VS-L0001"


async def test_change_notification_restarts_the_year_but_travel_does_not(store: tuple[Context, Any]) -> None:
    outcome = await _flags(store, "VS-L0001")
    assert isinstance(outcome, Found)
    assert outcome.view.next_notification == NotificationDue("periodic", date(2027, 6, 15))
    nfa = await _flags(store, "nfa person")
    assert isinstance(nfa, Found)
    assert nfa.view.next_notification == NotificationDue("weekly", date(2026, 11, 8))


async def test_returned_recall_is_not_at_large(store: tuple[Context, Any]) -> None:
    outcome = await _flags(store, "returned")
    assert isinstance(outcome, Found)
    assert not outcome.view.licence.unlawfully_at_large
    assert outcome.view.licence.returned_at == T0 - timedelta(days=2)


async def test_restricted_markers_follow_the_role(store: tuple[Context, Any]) -> None:
    hidden = await _flags(store, "VS-L0001", OFFICER)
    shown = await _flags(store, "VS-L0001", SPOC)
    assert isinstance(hidden, Found) and isinstance(shown, Found)
    assert [m.code for m in hidden.view.markers] == [] and not hidden.view.restricted_included
    assert [m.code for m in shown.view.markers] == ["R1"] and shown.view.restricted_included


async def test_many_matches_are_capped_and_counted(store: tuple[Context, Any]) -> None:
    outcome = await _flags(store, "MANY")
    assert isinstance(outcome, Several)
    assert len(outcome.candidates) == CANDIDATE_LIMIT and outcome.total == CANDIDATE_LIMIT + 3
    born = [c.date_of_birth for c in outcome.candidates]
    assert born == sorted(born)


async def test_outcomes_and_their_audit(store: tuple[Context, Any]) -> None:
    assert isinstance(await _flags(store, ""), Usage)
    assert isinstance(await _flags(store, "nobody"), NotFound)
    assert isinstance(await _flags(store, "x 31/02/1990"), Unreadable)
    _, sessions = store
    async with sessions() as session:
        stmt = select(AuditEntry).where(AuditEntry.action == "flags.lookup").order_by(AuditEntry.id)
        entries = (await session.execute(stmt)).scalars()
        assert [(e.actor, e.subject, e.details["outcome"]) for e in entries] == [
            ("PC1234", "nobody", "not_found"), ("PC1234", "x 31/02/1990", "unreadable"),
        ]


async def test_tasks_own_and_team(store: tuple[Context, Any]) -> None:
    ctx, sessions = store
    async with sessions() as session, session.begin():
        own = await list_tasks(session, OFFICER, ctx)
        team = await list_tasks(session, SUPERVISOR, ctx)
        spoc = await list_tasks(session, SPOC, ctx)
    assert [a.kind for a in own.alerts] == ["recall.issued"]  # unowned, falls to the manager
    assert [(a.action_id, a.overdue) for a in own.actions] == [("A1", True)]  # done ones left out
    assert team.scope == "team" and [a.kind for a in team.alerts] == ["recall.issued"]
    assert spoc.alerts == () and spoc.actions == ()



@pytest.mark.parametrize("with_date_of_birth", [False, True])
async def test_a_surname_lookup_searches_the_key_indexes(
    engine: AsyncEngine, with_date_of_birth: bool
) -> None:
    """The stored keys are compared by equality, so each side of the union is an index search
    (ix_nominals_surname_key, ix_nominal_aliases_alias_key), never a scan of nominals."""
    values: dict[str, Any] = {"name_key": "smithjones", "date_of_birth": date(1980, 1, 1)}
    stmt = _by_surname_statement(with_date_of_birth).params(values)
    async with engine.connect() as conn:
        sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "postgresql":
            # A few rows only: judge by what the plan can use, not by what is cheapest here.
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join((await conn.execute(text("EXPLAIN " + sql))).scalars())
        else:
            plan = "\n".join(str(r[-1]) for r in await conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
    assert "ix_nominals_surname_key" in plan and "ix_nominal_aliases_alias_key" in plan, plan
    assert "SCAN nominals" not in plan and "Seq Scan on nominals" not in plan, plan


def test_next_notification_due_is_the_rules_own_while_held() -> None:
    """/flags shows what the alerts work from: s.85(3)-(4), an annual date that falls while
    remanded moves to the end of the 3 days beginning with the release; still held, none."""
    facts = NominalFacts("VS-0000090", "north", "PC1234", last_notification_on=date(2025, 11, 20))
    remanded = DetentionFacts(on=date(2026, 11, 1), started=True, kind="remand", event_id="d1")
    released = DetentionFacts(on=date(2026, 12, 1), started=False, event_id="d2")
    held = NotificationHistory(detentions=(remanded,))
    assert next_notification_due(facts, held, CLOCKS, TZ, date(2026, 11, 25)) is None
    out = NotificationHistory(detentions=(remanded, released))
    due = next_notification_due(facts, out, CLOCKS, TZ, date(2026, 12, 1))
    assert due is not None and due.due_on == date(2026, 12, 3)
