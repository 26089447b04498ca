"""The fictional demo data set: teams, officers, nominals and events that exercise every trigger.

Everything here is invented and meant to look it ("PC Testington", "Barnaby Fakenham"): no real
person, place or case. The data is deterministic for a seed and a date, and every event id is
fixed, so loading it twice changes nothing the second time (the ids are duplicates).

Dates are relative to `today` (the service's local date), so a fresh demo always shows due-soon,
missed and overdue states whatever day it runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

DEFAULT_SEED = 2026
UNKNOWN_REF = "VS-D999001"  # a border alert for a reference nobody has upserted

SURNAMES = (
    "Testington", "Fakenham", "Sampleton", "Mockridge", "Placeholder", "Dummyworth", "Notreal",
    "Fictionby", "Pretendo", "Examplesmith", "Stubbington", "Fixturely", "Lorem-Ipsum", "Nobodyson",
    "Madeupson", "Imaginary", "Whatsit", "Thingummy", "Doohickey", "Fauxley", "Shamworth",
    "Counterfeit", "Inventley", "Bogusby", "Phantomly", "Pseudonym", "Synthetica", "Sandboxer",
    "Mockingbird-Smith", "Knockoff", "Replicant", "Decoyson", "Fabricant", "Figment", "Hypothetical",
    "Wibblesworth", "Flibbertigibbet", "Snorkelby", "Bumbleton", "Puddingford",
)
FORENAMES = (
    "Barnaby", "Clementine", "Dorian", "Ermintrude", "Fenwick", "Gertrude", "Horatio", "Ignatius",
    "Jemima", "Kipling", "Lysander", "Marmaduke", "Nigella", "Ophelia", "Percival", "Quentin",
    "Rosalind", "Septimus", "Tabitha", "Ulysses", "Wilhelmina", "Xanthe", "Yorick", "Zebedee",
)
MARKERS = (
    ("VIOL", "Violence", False),
    ("WEAP", "Weapons", False),
    ("DRUG", "Drugs", False),
    ("CHLD", "Risk to children", False),
    ("MENT", "Mental health", True),
    ("SELF", "Self-harm", True),
)
AREAS = {"north": ("N01", "N02", "N03"), "south": ("S01", "S02"), "east": ("E01", "E02")}


@dataclass(frozen=True)
class Scenario:
    visor_ref: str
    shows: str  # what a person watching the demo should see for this nominal


@dataclass
class DemoData:
    teams: list[dict[str, Any]]
    officers: list[dict[str, Any]]
    events: list[dict[str, Any]]  # raw event envelopes, as a sender would post them
    # Sent after `events` (a later batch), so that what they resolve is seen open first.
    follow_ups: list[dict[str, Any]] = field(default_factory=list)
    scenarios: list[Scenario] = field(default_factory=list)

    @property
    def all_events(self) -> list[dict[str, Any]]:
        return self.events + self.follow_ups


def demo_teams() -> list[dict[str, Any]]:
    def team(tid: str, name: str) -> dict[str, Any]:
        return {
            "id": tid,
            "name": name,
            "channel": f"C0DEMO{tid.upper()}",
            "spoc_email": f"{tid}.spoc@force.example",
            "supervisor_emails": [f"sgt.{tid}@force.example"],
            "digest_time": "07:00",
            "npt_channels": {area: f"C0NPT{area}" for area in AREAS[tid]},
        }

    return [
        team("north", "North MOSOVO (demo)"),
        team("south", "South MOSOVO (demo)"),
        team("east", "East MOSOVO (demo)"),
    ]


def demo_officers() -> list[dict[str, Any]]:
    rows = [
        ("PC0001", "PC Testington", "north", ["officer"]),
        ("PC0002", "PC Sampleton", "north", ["officer"]),
        ("SGT0003", "Sgt Placeholder", "north", ["officer", "supervisor"]),
        ("PC0004", "PC Mockridge", "south", ["officer"]),
        ("DC0005", "DC Dummyworth", "south", ["officer"]),
        ("SGT0006", "Sgt Notreal", "south", ["officer", "supervisor"]),
        ("PC0007", "PC Fixturely", "east", ["officer"]),
        ("SGT0008", "Sgt Stubbington", "east", ["officer", "supervisor"]),
        ("SPOC0009", "SPOC Examplesmith", "north", ["spoc"]),
        ("CR0010", "Controller Nobodyson", "north", ["control_room"]),
        ("ADM0011", "Admin Madeupson", "north", ["admin", "supervisor"]),
    ]
    return [
        {
            "id": oid,
            "name": name,
            "email": f"{oid.lower()}@force.example",
            "slack_user_id": f"U0DEMO{oid}",
            "team": team,
            "roles": roles,
        }
        for oid, name, team, roles in rows
    ]


def _managers(officers: list[dict[str, Any]]) -> dict[str, list[str]]:
    by_team: dict[str, list[str]] = {}
    for o in officers:
        if "officer" in o["roles"] and "supervisor" not in o["roles"]:
            by_team.setdefault(o["team"], []).append(o["id"])
    return by_team


def ref(number: int) -> str:
    return f"VS-D{number:06d}"


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _at(day: date, hour: int = 9, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=UTC)


def _birthday(rng: random.Random) -> str:
    return date(rng.randint(1950, 2002), rng.randint(1, 12), rng.randint(1, 28)).isoformat()


def build_demo(today: date, nominals: int = 200, seed: int = DEFAULT_SEED) -> DemoData:
    """The whole demo data set for `today`: at least as many nominals as there are scenarios."""
    rng = random.Random(seed)
    teams = demo_teams()
    officers = demo_officers()
    managers = _managers(officers)
    team_ids = [t["id"] for t in teams]
    loaded = today - timedelta(days=30)  # when the baseline records were "exported"
    events: list[dict[str, Any]] = []
    scenarios: list[Scenario] = []
    profiles: dict[str, dict[str, Any]] = {}

    count = max(nominals, 26)  # the scenarios use VS-D000001 to VS-D000026
    for n in range(1, count + 1):
        team = team_ids[(n - 1) % len(team_ids)]
        category = rng.choices(("1", "2", "3", "4"), weights=(70, 20, 8, 2))[0]
        level = rng.choices((1, 2, 3, None), weights=(75, 18, 4, 3))[0]
        markers = [
            {"code": code, "label": label, "restricted": restricted}
            for code, label, restricted in rng.sample(MARKERS, rng.randint(0, 2))
        ]
        profiles[ref(n)] = {
            "surname": rng.choice(SURNAMES),
            "forenames": rng.choice(FORENAMES),
            "date_of_birth": _birthday(rng),
            "category": category,
            "mappa_level": level,
            "registered": category == "1",
            "risk_level": rng.choices(("low", "medium", "high", "very_high"), weights=(40, 35, 20, 5))[0],
            "lead_agency": rng.choices(("police", "probation"), weights=(60, 40))[0],
            "team": team,
            "offender_manager": rng.choice(managers[team]),
            "area": rng.choice(AREAS[team]),
            "on_licence": rng.random() < 0.2,
            "no_fixed_abode": False,
            # Compliant by default: notified within the last ten months.
            "last_notification_on": (today - timedelta(days=rng.randint(10, 300))).isoformat(),
            "markers": markers,
            "pnc_id": f"00/{100000 + n}X",
            # How probation's domain events name the person (docs/feeds/probation.md).
            "crn": f"X{n:06d}",
            "noms_number": f"A{n % 10000:04d}DM",
        }

    def scenario(n: int, shows: str, **changes: Any) -> str:
        visor_ref = ref(n)
        profiles[visor_ref].update(changes)
        scenarios.append(Scenario(visor_ref, shows))
        return visor_ref

    # Border travel: notified and matched; not notified; and a reference nobody knows.
    confirmed = scenario(1, "border check matching a travel notification (travel.confirmed)")
    unnotified = scenario(2, "border check with no travel notification (travel.unnotified)")
    scenarios.append(
        Scenario(UNKNOWN_REF, "border check for an unknown ViSOR reference (travel.unmatched_nominal)")
    )
    # Notifications: periodic missed, periodic due soon, weekly (no fixed abode), initial on release.
    year_ago = today - timedelta(days=365)
    missed = scenario(
        3, "periodic notification a year and three weeks ago (notification.missed)", registered=True,
        category="1", last_notification_on=(year_ago - timedelta(days=20)).isoformat(),
    )
    scenario(
        4, "periodic notification falls due within the reminder window (notification.due_soon)",
        registered=True, category="1", last_notification_on=(year_ago + timedelta(days=6)).isoformat(),
    )
    nfa = scenario(
        5, "no fixed abode, last weekly notification 12 days ago (notification.missed, weekly)",
        registered=True, category="1", no_fixed_abode=True,
        last_notification_on=(today - timedelta(days=12)).isoformat(),
    )
    scenario(
        6, "released 6 days ago with no initial notification (notification.missed, initial)",
        registered=True, category="1", on_licence=True, release_date=(today - timedelta(days=6)).isoformat(),
        licence_expiry=(today + timedelta(days=700)).isoformat(),
        last_notification_on=(today - timedelta(days=200)).isoformat(),
    )
    # Issue 14, the law's other clocks (SOA 2003 ss.83-86).
    scenario(
        14, "cautioned 5 days ago, no initial notification (notification.missed, initial, s.83(1))",
        registered=True, category="1", on_licence=False, last_notification_on=None,
        relevant_date=(today - timedelta(days=5)).isoformat(),
    )
    moved = scenario(
        15, "moved home 6 days ago, learned from another source, not notified "
        "(notification.missed, change, s.84(1))", registered=True, category="1",
    )
    renamed = scenario(
        16, "a new name notified 5 days after the 3 days ran out (notification.late, s.84(1))",
        registered=True, category="1",
    )
    held = scenario(
        17, "remanded 40 days ago; the annual date passed inside: no alert (s.85(3)-(4))",
        registered=True, category="1",
        last_notification_on=(year_ago - timedelta(days=20)).isoformat(),
    )
    weekly_ok = scenario(
        19, "no fixed abode, notified weekly on time, a trip notified too: no alert (s.85(5)(a))",
        registered=True, category="1", no_fixed_abode=True,
        last_notification_on=(year_ago - timedelta(days=30)).isoformat(),
    )
    # Issue 15: risk and supervision.
    riskier = scenario(
        20, "risk level raised from medium to high (risk.changed, high)", risk_level="medium",
    )
    mover = scenario(
        21, "moved from one neighbourhood to another (area.moved_out, area.moved_in)",
    )
    unvisited = scenario(
        22, "home visits every 30 days, last visit 45 days ago (visit.overdue)", visit_every_days=30,
    )
    unminuted = scenario(
        24, "level 3 MAPP meeting 16 days ago, minutes not on ViSOR (mappa.minutes_overdue)", mappa_level=3,
    )
    unreviewed = scenario(
        25, "risk management plan last reviewed 18 weeks ago (rmp.review_due)", registered=True,
        category="1", mappa_level=2,
    )
    ordered = scenario(
        26, "a sexual harm prevention order expiring in 30 days (order.expiring)",
        home_address="1 Nowhere Lane, Fictionville (fictional)",
        licence_conditions=["Not to enter the Testington retail park (fictional)"],
        exclusion_zones=["Sampleton town centre (fictional)"],
        description="Tall, grey beard (fictional)",
    )
    # Actions: overdue, and due in three days.
    overdue = scenario(7, "MAPP meeting action 9 days overdue (action.overdue)", mappa_level=2)
    due_soon = scenario(8, "risk management plan action due in 3 days (action.due_soon)")
    # MAPPA: up to level 3 with a rationale; down to 1 without one.
    up = scenario(9, "MAPPA level 2 -> 3 (mappa.level_changed, high)", mappa_level=2)
    down = scenario(10, "MAPPA level 2 -> 1 with no rationale (mappa.level_changed, flagged)", mappa_level=2)
    # Recall: emergency and still at large; standard and returned to custody.
    emergency = scenario(11, "emergency recall, still at large (recall.issued, critical)", on_licence=True)
    returned = scenario(12, "recall issued and the nominal returned to custody (resolved)", on_licence=True)

    def add(kind: str, event_id: str, visor_ref: str, occurred: datetime, data: dict[str, Any]) -> None:
        envelope = {"id": event_id, "type": kind, "occurred_at": _iso(occurred), "visor_ref": visor_ref}
        events.append({**envelope, "data": data})

    for visor_ref, profile in profiles.items():
        add("nominal.upsert", f"demo-upsert-{visor_ref}", visor_ref, _at(loaded), profile)
    # Routine, compliant activity: actions due well ahead, and visits.
    for n in range(13, count + 1, 5):
        visor_ref = ref(n)
        due = today + timedelta(days=rng.randint(20, 90))
        add("action.upsert", f"demo-action-{visor_ref}-1", visor_ref, _at(loaded, 10), {
            "action_id": f"DEMO-ACT-{n:06d}-1", "summary": "Review risk management plan",
            "owner": profiles[visor_ref]["offender_manager"], "due_on": due.isoformat(),
            "status": "open", "source": "rmp",
        })
        visited = loaded - timedelta(days=rng.randint(1, 40))
        add("visit.recorded", f"demo-visit-{visor_ref}", visor_ref, _at(loaded, 11), {
            "visited_on": visited.isoformat(),
        })

    # The scenarios' own events.
    yesterday = today - timedelta(days=1)
    depart = today - timedelta(days=10)
    add("travel.notified", "demo-travel-notified-1", confirmed, _at(depart - timedelta(days=14)), {
        "departure_on": depart.isoformat(), "return_on": yesterday.isoformat(), "destination": "ES",
    })
    for event_id, visor_ref, port, checked in (
        ("demo-border-1", confirmed, "Testport Ferry Terminal (fictional)", _at(yesterday, 14, 5)),
        ("demo-border-2", unnotified, "Mockford Airport (fictional)", _at(yesterday, 7, 40)),
        ("demo-border-3", UNKNOWN_REF, "Sampleton Harbour (fictional)", _at(yesterday, 8, 15)),
    ):
        add("travel.border_alert", event_id, visor_ref, checked, {
            "port": port, "direction": "inbound", "checked_at": _iso(checked),
        })
    weekly = today - timedelta(days=12)
    add("notification.received", "demo-notification-weekly-5", nfa, _at(weekly), {
        "kind": "weekly", "notified_on": weekly.isoformat(),
    })
    periodic = year_ago - timedelta(days=20)
    add("notification.received", "demo-notification-periodic-3", missed, _at(periodic), {
        "kind": "periodic", "notified_on": periodic.isoformat(),
    })
    moved_on = today - timedelta(days=6)
    add("change.detected", "demo-change-detected-15", moved, _at(moved_on + timedelta(days=1)), {
        "what": "home_address", "changed_on": moved_on.isoformat(),
        "source": "Council tax record (fictional)",
    })
    renamed_on, told = today - timedelta(days=14), today - timedelta(days=7)
    add("change.detected", "demo-change-detected-16", renamed, _at(renamed_on + timedelta(days=1)), {
        "what": "name", "changed_on": renamed_on.isoformat(), "source": "DVLA check (fictional)",
    })
    add("notification.received", "demo-notification-change-16", renamed, _at(told), {
        "kind": "change", "notified_on": told.isoformat(), "what": "name",
        "changed_on": renamed_on.isoformat(),
    })
    add("detention.started", "demo-detention-17", held, _at(today - timedelta(days=40)), {
        "kind": "remand", "started_on": (today - timedelta(days=40)).isoformat(),
    })
    for weeks_ago in (2, 1):
        notified = today - timedelta(days=7 * weeks_ago - 2)  # the last 5 days ago: due in 2
        add("notification.received", f"demo-notification-weekly-19-{weeks_ago}", weekly_ok, _at(notified), {
            "kind": "weekly", "notified_on": notified.isoformat(),
        })
    add("notification.received", "demo-notification-travel-19", weekly_ok, _at(today - timedelta(days=1)), {
        "kind": "travel", "notified_on": (today - timedelta(days=1)).isoformat(),
    })
    for visor_ref, number, days, source in ((overdue, 7, -9, "mapp_meeting"), (due_soon, 8, 3, "rmp")):
        add("action.upsert", f"demo-action-{visor_ref}-1", visor_ref, _at(loaded, 10), {
            "action_id": f"DEMO-ACT-{number:06d}-1", "summary": "Joint home visit with probation",
            "owner": profiles[visor_ref]["offender_manager"],
            "due_on": (today + timedelta(days=days)).isoformat(), "status": "open", "source": source,
        })
    add("mappa.level_changed", "demo-mappa-up-9", up, _at(yesterday, 15), {
        "from_level": 2, "to_level": 3,
        "rationale": "Escalating concerns raised at the MAPP meeting (fictional)",
    })
    add("mappa.level_changed", "demo-mappa-down-10", down, _at(yesterday, 16), {
        "from_level": 2, "to_level": 1, "rationale": "",
    })
    issued = _at(yesterday, 18, 30)
    add("recall.issued", "demo-recall-11", emergency, issued, {
        "recall_type": "emergency", "issued_at": _iso(issued),
    })
    issued, back_in = _at(today - timedelta(days=5), 10), _at(today - timedelta(days=2), 22, 10)
    add("recall.issued", "demo-recall-12", returned, issued, {
        "recall_type": "standard", "issued_at": _iso(issued),
    })
    add("recall.returned", "demo-recall-returned-12", returned, back_in, {"returned_at": _iso(back_in)})
    visited = today - timedelta(days=45)
    add("visit.recorded", f"demo-visit-{unvisited}", unvisited, _at(visited), {
        "visited_on": visited.isoformat(),
    })
    held_on = today - timedelta(days=16)
    add("meeting.held", "demo-meeting-24", unminuted, _at(held_on, 14), {
        "meeting_id": "DEMO-MAPP-000024", "held_on": held_on.isoformat(), "level": 3,
        "minutes_on_visor_on": None,
    })
    reviewed = today - timedelta(weeks=18)
    add("rmp.reviewed", "demo-rmp-25", unreviewed, _at(reviewed), {"reviewed_on": reviewed.isoformat()})
    add("order.upsert", "demo-order-26", ordered, _at(loaded, 12), {
        "order_id": "DEMO-SHPO-000026", "kind": "shpo",
        "made_on": (today - timedelta(days=5 * 365)).isoformat(),
        "expires_on": (today + timedelta(days=30)).isoformat(),
        "prohibitions": ["No contact with children under 16 (fictional)"], "status": "active",
    })
    # The return comes in a later batch than the recall, so the demo shows the alert resolving;
    # so do the second upserts that change a nominal's risk level and area.
    follow_ups = [e for e in events if e["id"] == "demo-recall-returned-12"]
    events = [e for e in events if e["id"] != "demo-recall-returned-12"]
    later = _at(yesterday, 12)
    follow_ups.append({
        "id": f"demo-upsert-2-{riskier}", "type": "nominal.upsert", "occurred_at": _iso(later),
        "visor_ref": riskier, "data": {**profiles[riskier], "risk_level": "high"},
    })
    team_areas = AREAS[profiles[mover]["team"]]
    moved_to = next(a for a in team_areas if a != profiles[mover]["area"])
    follow_ups.append({
        "id": f"demo-upsert-2-{mover}", "type": "nominal.upsert", "occurred_at": _iso(later),
        "visor_ref": mover, "data": {**profiles[mover], "area": moved_to},
    })
    return DemoData(teams, officers, events, follow_ups, scenarios)
