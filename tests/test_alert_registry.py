"""The alert-kind registry (casewatch.model.alerts.ALERT_KINDS) is the one place a kind is defined:
every kind the code opens is in it, whole (severities, receivers, docs), the routing defaults and
docs/alerts.md come from it, and the rules that use it load nothing but the model."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from itertools import product
from zoneinfo import ZoneInfo

import pytest

from casewatch.config.triggers import TriggerSection
from casewatch.model import alert_docs
from casewatch.model.alerts import ALERT_KINDS, RECEIVERS, SEVERITIES, AlertKind, AlertSpec
from casewatch.model.facts import (
    ActionFacts,
    BorderCheckFacts,
    ChangeDetected,
    ChangeNotified,
    LevelChangeFacts,
    MeetingFacts,
    NominalFacts,
    NotificationHistory,
    OrderFacts,
    RecallFacts,
    RiskChangeFacts,
    TravelFacts,
)
from casewatch.triggers.rules import (
    actions,
    border_travel,
    mappa_level,
    minutes,
    notifications,
    orders,
    recall,
    risk,
    rmp_review,
    travel_notice,
    visits,
)
from tests.test_delivery_support import make_settings

TZ = ZoneInfo("Europe/London")
POLICY = TriggerSection()
RULES = (
    "actions", "border_travel", "mappa_level", "minutes", "notifications", "orders", "recall", "risk",
    "rmp_review", "travel_notice", "visits",
)


def opened_kinds() -> set[str]:
    """Every kind the code opens, by the constants the openers use."""
    from casewatch.delivery.worker import DELIVERY_FAILED
    from casewatch.ingest.inbound import NOMINAL_MISSING, UNREADABLE
    from schedules.jobs import STALE_KIND

    rules = {*actions.KINDS, *border_travel.KINDS, *mappa_level.KINDS, *notifications.KINDS, *recall.KINDS}
    rules.add(recall.RISK_REVIEW)
    rules.update(risk.KINDS)
    rules.update(orders.KINDS)
    rules.update(visits.KINDS)
    rules.update(minutes.KINDS, rmp_review.KINDS)
    feeds = {UNREADABLE, NOMINAL_MISSING}  # NOMINAL_MISSING: integrations/snapshot opens it
    return rules | feeds | {travel_notice.LATE_NOTICE, notifications.LATE, DELIVERY_FAILED, STALE_KIND}


def test_every_kind_the_code_opens_is_registered_and_nothing_else() -> None:
    assert opened_kinds() == set(ALERT_KINDS)


@pytest.mark.parametrize("kind", ALERT_KINDS.values(), ids=list(ALERT_KINDS))
def test_each_entry_is_whole(kind: AlertKind) -> None:
    assert kind.severities and set(kind.severities) <= set(SEVERITIES)
    assert kind.receivers and set(kind.receivers) <= set(RECEIVERS)
    assert all(text.strip() for text in (kind.opened_when, kind.subject, kind.resolved_when))
    if len(kind.severities) > 1:
        assert kind.severity_rule, "a severity the rule chooses says how"


@pytest.mark.parametrize("kind", ALERT_KINDS.values(), ids=list(ALERT_KINDS))
def test_routing_defaults_come_from_the_registry(kind: AlertKind) -> None:
    routing = make_settings().routing
    assert routing.receivers_for(kind.kind) == list(kind.receivers)
    for severity in kind.severities:
        assert (routing.chain_for(kind.kind, severity) != []) == (kind.escalates and severity != "low")


def test_a_configured_route_still_overrides_the_registry() -> None:
    routing = make_settings(routing={"routes": {"travel.late_notice": ["owner"]}}).routing
    assert routing.receivers_for("travel.late_notice") == ["owner"]
    assert routing.receivers_for("travel.confirmed") == ["spoc"]


def test_docs_alerts_md_is_generated_from_the_registry() -> None:
    text = alert_docs.DOCS.read_text(encoding="utf-8")
    assert alert_docs.with_table(text) == text, "run: python -m casewatch.model.alert_docs"
    for kind in ALERT_KINDS:
        assert f"| `{kind}` |" in text
    assert alert_docs.main(["--check"]) == 0


def test_the_docs_check_fails_on_a_stale_table() -> None:
    text = alert_docs.DOCS.read_text(encoding="utf-8")
    stale = text.replace("| `recall.issued` | critical", "| `recall.issued` | low")
    assert stale != text and alert_docs.with_table(stale) == text
    with pytest.raises(ValueError, match="markers"):
        alert_docs.with_table(text.replace(alert_docs.END, ""))


def test_rules_load_only_the_model() -> None:
    """`import casewatch.triggers.rules.<any>` loads no I/O library, no pydantic and nothing of
    casewatch outside the model and the rules."""
    probe = (
        "import importlib, sys\n"
        f"for name in {RULES!r}: importlib.import_module('casewatch.triggers.rules.' + name)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    packages = {"casewatch", "casewatch.triggers", "casewatch.model"}  # their __init__ is a docstring
    ours = {m for m in loaded if m.split(".")[0] == "casewatch"} - packages
    assert {m for m in ours if not m.startswith(("casewatch.model.", "casewatch.triggers.rules"))} == set()
    libraries = {m.split(".")[0] for m in loaded}
    assert libraries.isdisjoint({"sqlalchemy", "aiohttp", "slack_sdk", "slack_bolt", "pydantic"})


def _rule_opens() -> list[AlertSpec]:
    """What the rules open over a grid of case states: every branch that opens something."""
    now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    today = now.date()
    nominal = NominalFacts("VS-1", "north", "PC1", release_date=today - timedelta(days=2), area="N1")
    opens: list[AlertSpec] = []
    for late in (-10, -3, 0, 1, 40):
        action = ActionFacts("a1", "VS-1", "PC1", today - timedelta(days=late), "open", "north")
        opens += actions.evaluate(action, [], now, POLICY, TZ).opens
    for last, nfa in product((None, today - timedelta(days=360), today - timedelta(days=400)), (False, True)):
        facts = NominalFacts("VS-1", "north", "PC1", no_fixed_abode=nfa, release_date=date(2020, 1, 1))
        for at in (now, now + timedelta(days=10)):
            opens += notifications.evaluate(facts, NotificationHistory(last), [], at, POLICY, TZ).opens
    opens += notifications.evaluate(nominal, NotificationHistory(), [], now, POLICY, TZ).opens
    # A missed notification's severity by days overdue (every step a policy may set), and a
    # change notified late (SOA 2003 s.84(1)).
    ladder = TriggerSection(missed_notification_severity={1: "low", 2: "medium", 3: "high", 28: "critical"})
    changed = ChangeDetected("home_address", today - timedelta(days=40), "cd1")
    for days in (3, 4, 5, 30):
        history = NotificationHistory(detected=(ChangeDetected("name", today - timedelta(days=days), "cd0"),))
        opens += notifications.evaluate(nominal, history, [], now, ladder, TZ).opens
    notified = ChangeNotified(today, None, None, "cn1")
    answered_late = NotificationHistory(detected=(changed,), changes=(notified,))
    opens += notifications.late(nominal, answered_late, POLICY, TZ, "cn1").opens
    for before, after in product((None, 1, 2, 3), repeat=2):
        change = LevelChangeFacts("c1", "VS-1", before, after, "", now)
        opens += mappa_level.evaluate(change, nominal, POLICY, TZ).opens
    opens += recall.on_issued(RecallFacts("r1", "VS-1", "emergency", now), nominal, POLICY).opens
    opens += recall.at_large(RecallFacts("r1", "VS-1", "standard", now), nominal, [], now, POLICY, TZ).opens
    back = RecallFacts("r1", "VS-1", "standard", now - timedelta(days=1), returned_at=now)
    opens += recall.risk_review(back, nominal, POLICY).opens
    order = OrderFacts("o1", "VS-1", "shpo", date(2021, 1, 1), today + timedelta(days=30), "active")
    opens += orders.evaluate(order, nominal, [], now, POLICY, TZ).opens
    for level in (2, 3):  # MAPP minutes not on ViSOR 10 (level 2) and 5 (level 3) working days on
        meeting = MeetingFacts(f"m{level}", "VS-1", today - timedelta(days=30), level, None)
        opens += minutes.evaluate(meeting, nominal, [], now, TZ).opens
    for reviewed in (today - timedelta(weeks=15), today - timedelta(weeks=17)):  # due soon, overdue
        opens += rmp_review.evaluate(nominal, reviewed, None, [], now, POLICY, TZ).opens
    for visited in (today - timedelta(days=85), today - timedelta(days=95)):  # high band: due soon, overdue
        at_risk = NominalFacts("VS-1", "north", "PC1", risk_level="high")
        opens += visits.evaluate(at_risk, visited, NotificationHistory(), [], now, POLICY, TZ).opens
    # A risk level up or down, a category changed alone; a move of a low and a high risk nominal.
    for old, new, area in (("low", "high", "N2"), ("high", "low", "N1"), (None, None, "N2")):
        moved = RiskChangeFacts("rc1", "VS-1", old, new, "1", "2", "N1", area, now)
        opens += risk.evaluate(moved, nominal, POLICY).opens
    # An overdue action's severity by days overdue (every step a policy may set).
    steps = TriggerSection(action_overdue_severity={1: "low", 2: "medium", 3: "high", 28: "critical"})
    for late in (1, 2, 3, 28):
        action = ActionFacts("a2", "VS-1", "PC1", today - timedelta(days=late), "open", "north")
        opens += actions.evaluate(action, [], now, steps, TZ).opens
    travel = TravelFacts("t1", "VS-1", today + timedelta(days=1), None, "FR", now - timedelta(days=1))
    opens += travel_notice.evaluate(travel, nominal, POLICY, TZ).opens  # 2 days' notice: medium
    on_the_day = TravelFacts("t2", "VS-1", today, None, "FR", now)  # after departure: high
    opens += travel_notice.evaluate(on_the_day, nominal, POLICY, TZ).opens
    for day in (1, 30):
        check = BorderCheckFacts("b1", "VS-1", "DOVER", "outbound", now + timedelta(days=day))
        for who in (nominal, None):
            opens += border_travel.evaluate(check, who, [travel], [], POLICY, TZ).opens
    return opens


def test_rules_open_registered_kinds_at_registered_severities() -> None:
    opens = _rule_opens()
    seen = {(spec.kind, spec.severity) for spec in opens}
    for kind, severity in seen:
        assert severity in ALERT_KINDS[kind].severities, (kind, severity)
    not_rules = {"system.job_stale", "system.delivery_failed", "feed.unreadable", "feed.nominal_missing"}
    rule_kinds = opened_kinds() - not_rules
    assert {kind for kind, _ in seen} == rule_kinds, "the grid reaches every kind a rule opens"
    assert seen >= {(k.kind, s) for k in ALERT_KINDS.values() if k.kind in rule_kinds for s in k.severities}
