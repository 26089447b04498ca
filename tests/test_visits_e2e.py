"""Home visits end to end on SQLite and PostgreSQL (issue 15): signed events in through the real
HTTP app, the scan as of a chosen instant, the alerts API showing the visit alerts, a visit
recorded resolving its alert at once, and /flags showing the last and next visit.

The frequency is the RMP's `visit_every_days`, else the risk band (local choice: high 90 days);
detained nominals owe no visit (rules.custody); a nominal never visited has a clock only once
`visits_recorded_from` says when the visit feed became complete (first deployment: no flood of
visit.overdue for nominals released years ago). All references are fictional.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from bot.render import flags_message
from casewatch.clock import FixedClock
from casewatch.lookup import Found, Requester, look_up_flags
from casewatch.triggers.scan import run_scan
from tests.support import envelope, nominal_data, service_client, signed_get, signed_post
from tests.test_triggers_case_data import utc

OVERDUE = "VIS-TEST-0101"  # high band, visited 1 Aug: due 30 Oct, overdue on 20 Nov
DUE_SOON = "VIS-TEST-0102"  # high band, visited 25 Aug: due 23 Nov, within the 7-day reminder
HELD = "VIS-TEST-0103"  # overdue by the band, but remanded since 10 Nov: no visit owed
RMP = "VIS-TEST-0104"  # the RMP's 28 days, visited 1 Nov: due 29 Nov, nothing yet
NEVER = "VIS-TEST-0105"  # never visited, released 1 Aug 2026: no clock until visits_recorded_from
OLD = "VIS-TEST-0106"  # never visited, released 1 Mar 2019: years "overdue" if counted from then
OFFICER = Requester("PC1234", "PC Example", "north", frozenset({"officer"}))
NOW = "2026-11-20T09:00:00Z"


def _upsert(ref: str, **data: Any) -> dict[str, Any]:
    return envelope(
        "nominal.upsert", nominal_data(risk_level="high", **data), id=f"visit-upsert-{ref}",
        visor_ref=ref, occurred_at="2026-07-01T00:00:00Z",
    )


def _visit(ref: str, on: str) -> dict[str, Any]:
    return envelope("visit.recorded", {"visited_on": on}, id=f"visit-{ref}-{on}", visor_ref=ref,
                    occurred_at=f"{on}T08:00:00Z")  # before NOW on NOW's day: not in the future


def _case_data() -> list[dict[str, Any]]:
    return [
        _upsert(OVERDUE), _visit(OVERDUE, "2026-08-01"),
        _upsert(DUE_SOON), _visit(DUE_SOON, "2026-08-25"),
        _upsert(HELD), _visit(HELD, "2026-06-01"),
        envelope("detention.started", {"kind": "remand", "started_on": "2026-11-10"}, id="visit-held-1",
                 visor_ref=HELD, occurred_at="2026-11-10T15:00:00Z"),
        _upsert(RMP, visit_every_days=28), _visit(RMP, "2026-11-01"),
        _upsert(NEVER, release_date="2026-08-01"),
        _upsert(OLD, relevant_date="2018-05-01", release_date="2019-03-01"),
    ]


async def _visit_alerts(client: Any, state: str) -> list[tuple[str, str, str, str]]:
    body = await (await signed_get(client, "/api/v1/alerts", params={"state": state})).json()
    return sorted(
        (a["kind"], a["visor_ref"], a["subject"], a["severity"])
        for a in body["alerts"]
        if a["kind"].startswith("visit.")
    )


async def test_home_visits_end_to_end(db_url: str) -> None:
    clock = FixedClock(utc(NOW))
    async with service_client(db_url, clock=clock) as (service, client):
        resp = await signed_post(client, "/api/v1/events", _case_data())
        assert resp.status == 202, await resp.text()
        assert await _visit_alerts(client, "open") == []  # visits open on a scan only

        await run_scan(service.sessions, service.ctx, utc(NOW))
        assert await _visit_alerts(client, "open") == sorted([
            ("visit.overdue", OVERDUE, "visit:2026-10-30", "medium"),
            ("visit.due", DUE_SOON, "visit:2026-11-23", "low"),
        ])  # first deployment (visits_recorded_from unset): nothing for NEVER and OLD
        again = await run_scan(service.sessions, service.ctx, utc(NOW))
        assert not again.tally.opened and not again.tally.resolved

        # A visit recorded resolves the overdue alert at once (the event), opening nothing.
        resp = await signed_post(client, "/api/v1/events", [_visit(OVERDUE, "2026-11-20")])
        assert resp.status == 202, await resp.text()
        resolved = await _visit_alerts(client, "resolved")
        assert ("visit.overdue", OVERDUE, "visit:2026-10-30", "medium") in resolved
        assert [a for a in await _visit_alerts(client, "open") if a[1] == OVERDUE] == []
        # The next scan opens nothing for it: the next visit is due 18 Feb 2027.
        later = await run_scan(service.sessions, service.ctx, utc(NOW))
        assert not later.tally.opened

        # /flags: the last visit and the next one due, from the rule's own facts.
        zone = ZoneInfo(service.ctx.settings.service.timezone)
        shown = {}
        async with service.sessions() as session, session.begin():
            for ref in (OVERDUE, HELD, RMP):
                outcome = await look_up_flags(session, OFFICER, ref, service.ctx)
                assert isinstance(outcome, Found)
                shown[ref] = outcome.view
        assert (str(shown[OVERDUE].last_visit_on), str(shown[OVERDUE].next_visit_due)) == (
            "2026-11-20", "2027-02-18"
        )
        assert (str(shown[HELD].last_visit_on), shown[HELD].next_visit_due) == ("2026-06-01", None)
        assert str(shown[RMP].next_visit_due) == "2026-11-29"  # the RMP's 28 days, not the band's 90
        fields = [
            f["text"] for b in flags_message(shown[OVERDUE], zone)["blocks"] for f in b.get("fields", ())
        ]
        assert "*Home visits*\nLast 20/11/2026 \u00b7 next due 18/02/2027" in fields
        held_fields = [
            f["text"] for b in flags_message(shown[HELD], zone)["blocks"] for f in b.get("fields", ())
        ]
        assert "*Home visits*\nLast 01/06/2026 \u00b7 next due none owed" in held_fields


async def test_never_visited_counts_from_visits_recorded_from(db_url: str) -> None:
    """The feed complete from 25 Aug 2026 (local choice): a nominal never visited counts from the
    latest of the relevant date, the release date and that day, so OLD (released 2019) is due
    23 Nov (due soon) and NEVER (released 1 Aug) too; the scan's candidate filter reads both."""
    clock = FixedClock(utc(NOW))
    feed = {"visits_recorded_from": "2026-08-25"}
    async with service_client(db_url, clock=clock, triggers=feed) as (service, client):
        resp = await signed_post(client, "/api/v1/events", _case_data())
        assert resp.status == 202, await resp.text()
        await run_scan(service.sessions, service.ctx, utc(NOW))
        assert await _visit_alerts(client, "open") == sorted([
            ("visit.overdue", OVERDUE, "visit:2026-10-30", "medium"),
            ("visit.due", DUE_SOON, "visit:2026-11-23", "low"),
            ("visit.due", NEVER, "visit:2026-11-23", "low"),
            ("visit.due", OLD, "visit:2026-11-23", "low"),
        ])


async def test_a_feed_complete_later_keeps_never_visited_quiet(db_url: str) -> None:
    """The feed complete from 1 Sep 2026: never visited, due 30 Nov, beyond the 7-day reminder."""
    clock = FixedClock(utc(NOW))
    feed = {"visits_recorded_from": "2026-09-01"}
    async with service_client(db_url, clock=clock, triggers=feed) as (service, client):
        resp = await signed_post(client, "/api/v1/events", _case_data())
        assert resp.status == 202, await resp.text()
        await run_scan(service.sessions, service.ctx, utc(NOW))
        assert sorted(a[1] for a in await _visit_alerts(client, "open")) == [OVERDUE, DUE_SOON]
