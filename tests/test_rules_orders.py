"""Court orders: `order.expiring` (rules.orders) as a table of worked examples, each row citing what
it encodes. Local days in Europe/London; the notice period is `order_expiry_notice_days` [56].

Sources: SOA 2003 s.103C(2) (a SHPO's prohibitions have effect for a fixed period of at least 5
years, or until further order) and s.103E (variation, renewal, discharge); s.122B(2) and s.122D
for an SRO; the 2005 joint inspection of the management of sex offenders in the community
(/work/shared/seeds/004, para 4.23: an order applied for as a licence was coming to an end); the
8 weeks and the end of the expiry day are local choices (docs/alerts.md).

All references and order ids are fictional.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from casewatch.config.triggers import TriggerSection
from casewatch.model.facts import NominalFacts, OrderFacts
from casewatch.model.results import LiveAlert
from casewatch.triggers.rules import orders

TZ = ZoneInfo("Europe/London")
POLICY = TriggerSection()
REF = "VIS-TEST-0001"
NOMINAL = NominalFacts(visor_ref=REF, team="north", offender_manager="PC1234", area="N1")
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # Friday 20 November 2026, GMT
PROHIBITION = "Not to enter Testpark Recreation Ground (fictional)"


def order(expires_on: date | None, status: str = "active", **changes: object) -> OrderFacts:
    base = OrderFacts(
        order_id="ORD-TEST-1", visor_ref=REF, kind="shpo", made_on=date(2021, 11, 1),
        expires_on=expires_on, status=status, prohibitions=(PROHIBITION,),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def live(expires_on: str, order_id: str = "ORD-TEST-1", kind: str = orders.EXPIRING) -> LiveAlert:
    return LiveAlert(kind, REF, f"{order_id}:{expires_on}", "medium")


# (why, source, the order, now, policy) -> the subject opened, or None
OPENS = [
    ("56 days ahead: the first day of the notice period", "local choice: 8 weeks",
     order(date(2027, 1, 15)), NOW, POLICY, "ORD-TEST-1:2027-01-15"),
    ("57 days ahead: not yet", "local choice: 8 weeks",
     order(date(2027, 1, 16)), NOW, POLICY, None),
    ("the expiry day itself is still ahead of expiry", "SOA 2003 s.103C(2)(a): in force for the period",
     order(date(2026, 11, 20)), NOW, POLICY, "ORD-TEST-1:2026-11-20"),
    ("the expiry day is over: nothing left to warn of", "local choice (docs/alerts.md)",
     order(date(2026, 11, 19)), NOW, POLICY, None),
    ("until further order: never expires", "SOA 2003 s.103C(2)(b), s.122B(2)(b)",
     order(None), NOW, POLICY, None),
    ("discharged: no longer in force", "SOA 2003 s.103E (discharge)",
     order(date(2026, 12, 1), "discharged"), NOW, POLICY, None),
    ("recorded as expired", "order.upsert status",
     order(date(2026, 12, 1), "expired"), NOW, POLICY, None),
    ("an SRO too", "SOA 2003 s.122B(2)(a), s.122D (renewal)",
     order(date(2026, 12, 1), kind="sro"), NOW, POLICY, "ORD-TEST-1:2026-12-01"),
    ("a notice period set to 4 weeks", "local choice: triggers.order_expiry_notice_days",
     order(date(2027, 1, 15)), NOW, TriggerSection(order_expiry_notice_days=28), None),
    # British Summer Time began 28 March 2027: 23:30 UTC on the 29th is 00:30 on the 30th, local.
    ("local midnight (BST) starts the notice day, not UTC midnight", "local days (model.clocks)",
     order(date(2027, 5, 25)), datetime(2027, 3, 29, 23, 30, tzinfo=UTC), POLICY, "ORD-TEST-1:2027-05-25"),
    ("a minute before local midnight (BST): 57 days ahead", "local days (model.clocks)",
     order(date(2027, 5, 25)), datetime(2027, 3, 29, 22, 59, tzinfo=UTC), POLICY, None),
    ("the expiry day ends at local midnight (BST)", "local days (model.clocks)",
     order(date(2027, 5, 25)), datetime(2027, 5, 25, 23, 0, tzinfo=UTC), POLICY, None),
]


@pytest.mark.parametrize(
    ("why", "source", "facts", "now", "policy", "subject"), OPENS, ids=[row[0] for row in OPENS]
)
def test_when_an_order_is_expiring(
    why: str, source: str, facts: OrderFacts, now: datetime, policy: TriggerSection, subject: str | None
) -> None:
    result = orders.evaluate(facts, NOMINAL, [], now, policy, TZ)
    assert result.resolves == ()
    assert [spec.subject for spec in result.opens] == ([subject] if subject else []), (why, source)


def test_the_alert_goes_to_the_offender_manager_and_says_nothing_personal() -> None:
    (spec,) = orders.evaluate(order(date(2027, 1, 15)), NOMINAL, [], NOW, POLICY, TZ).opens
    assert (spec.kind, spec.severity, spec.visor_ref, spec.team, spec.owner) == (
        "order.expiring", "medium", REF, "north", "PC1234"
    )
    # Due by the end of the expiry day, local time (GMT in January).
    assert spec.due_at == datetime(2027, 1, 16, 0, 0, tzinfo=UTC)
    assert spec.summary == "Court order ORD-TEST-1 (SHPO) expires 2027-01-15: VIS-TEST-0001: consider renewal"
    assert dict(spec.details) == {
        "order_id": "ORD-TEST-1", "order_kind": "shpo", "made_on": "2021-11-01", "expires_on": "2027-01-15",
    }
    # The prohibitions are personal data: /flags only, never an alert.
    assert "Testpark" not in repr(spec)


def test_an_order_of_a_nominal_not_known_yet_goes_to_the_unmatched_team() -> None:
    policy = TriggerSection(unmatched_team="south")
    (spec,) = orders.evaluate(order(date(2026, 12, 1)), None, [], NOW, policy, TZ).opens
    assert (spec.team, spec.owner) == ("south", None)


# (why, source, the order now (None: not on record), policy, the live subject's date) -> the
# reason it resolves (None: it stays), and the subject wanted open; as of NOW
RESOLVES = [
    ("discharged by the court", "SOA 2003 s.103E (discharge)",
     order(date(2027, 1, 15), "discharged"), POLICY, "2027-01-15", "order discharged", None),
    ("recorded as expired", "order.upsert status",
     order(date(2027, 1, 15), "expired"), POLICY, "2027-01-15", "order expired", None),
    ("renewed for five years", "SOA 2003 s.103E (renewal)",
     order(date(2032, 1, 15)), POLICY, "2027-01-15", "order renewed or varied: now expires 2032-01-15", None),
    ("varied to an earlier date, still inside the notice period: a new alert for the new date",
     "SOA 2003 s.103E (variation)",
     order(date(2027, 1, 10)), POLICY, "2027-01-15", "order renewed or varied: now expires 2027-01-10",
     "ORD-TEST-1:2027-01-10"),
    ("varied to until further order", "SOA 2003 s.103C(2)(b)",
     order(None), POLICY, "2027-01-15", "order renewed or varied: no expiry date now", None),
    ("the expiry day is over (local time)", "local choice (docs/alerts.md)",
     order(date(2026, 11, 19)), POLICY, "2026-11-19", "expiry day passed", None),
    ("no longer on record", "order.upsert (the source removed it)",
     None, POLICY, "2027-01-15", "order no longer on record", None),
    ("a shorter notice period configured since", "local choice: triggers.order_expiry_notice_days",
     order(date(2027, 1, 15)), TriggerSection(order_expiry_notice_days=28), "2027-01-15",
     "no longer within the notice period", None),
    ("still expiring: stays", "local choice: 8 weeks",
     order(date(2027, 1, 15)), POLICY, "2027-01-15", None, "ORD-TEST-1:2027-01-15"),
]


@pytest.mark.parametrize(
    ("why", "source", "facts", "policy", "subject_date", "reason", "wanted"), RESOLVES,
    ids=[row[0] for row in RESOLVES],
)
def test_when_an_expiring_alert_resolves(
    why: str, source: str, facts: OrderFacts | None, policy: TriggerSection, subject_date: str,
    reason: str | None, wanted: str | None,
) -> None:
    alert = live(subject_date)
    result = orders.evaluate(facts, NOMINAL, [alert], NOW, policy, TZ)
    assert [(r.alert, r.reason) for r in result.resolves] == ([(alert, reason)] if reason else []), source
    assert [spec.subject for spec in result.opens] == ([wanted] if wanted else []), source


def test_other_kinds_are_left_alone() -> None:
    other = live("2027-01-15", kind="action.overdue")
    assert orders.evaluate(None, NOMINAL, [other], NOW, POLICY, TZ).resolves == ()


@pytest.mark.parametrize(
    ("subject", "order_id"),
    [("ORD-1:2027-01-15", "ORD-1"), ("COURT:2026/123:2027-01-15", "COURT:2026/123"), ("odd", "odd")],
)
def test_the_order_id_in_a_subject_may_hold_colons(subject: str, order_id: str) -> None:
    assert orders.order_id_of(subject) == order_id


def test_the_notice_period_is_a_setting_of_1_to_730_days() -> None:
    assert TriggerSection().order_expiry_notice_days == 56
    for bad in (0, 731):
        with pytest.raises(ValidationError):
            TriggerSection(order_expiry_notice_days=bad)
