"""The scan reads only the nominals who may owe a notification (any of load.notification_clocks
with rules.notifications.quiet_after). Leaving out a nominal the rule would alert on is a missed
alert, so the filter is checked against the rule itself: over random case data, on both
databases, across leap days, year ends and every reminder lead, with relevant dates (SOA 2003
s.83(1)) and ended notification periods (s.82(1)), every nominal the rule wants an alert for is a
candidate, and a scan opens exactly what the rule asks for everyone. The data also holds what
load.notification_clocks reads beside the nominal: detentions started and ended (s.83(6),
s.85(3)-(4); a release owes a notification, s.84(1)(d)), recall returns, changes detected
(s.84(1)), and trips with border checks (abroad, s.85(4)(d); a return, s.86)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.config.triggers import TriggerSection
from casewatch.model.facts import CHANGE_WHATS, NominalFacts, NotificationHistory
from casewatch.store.models import (
    BorderCheck,
    ChangeDetection,
    Detention,
    Nominal,
    Recall,
    TravelNotification,
)
from casewatch.triggers import load
from casewatch.triggers.rules import notifications
from casewatch.triggers.scan import run_scan
from tests.test_triggers_case_data import context, live, nominal, notification

Sessions = async_sessionmaker[AsyncSession]
TZ = ZoneInfo("Europe/London")
KINDS = ("initial", "periodic", "change", "weekly", "travel", "return")


def _maybe(rng: random.Random, today: date, chance: float, back: int) -> date | None:
    return today - timedelta(days=rng.randint(-3, back)) if rng.random() < chance else None


async def _seed(sessions: Sessions, rng: random.Random, today: date, n: int) -> None:
    async with sessions.begin() as s:
        for i in range(n):
            ref = f"VS-{i:07d}"
            s.add(nominal(
                ref,
                registered=rng.random() < 0.9,
                no_fixed_abode=rng.random() < 0.1,
                release_date=_maybe(rng, today, 0.15, 30),
                # SOA 2003 s.83(1): a conviction, finding or caution; recent ones (a caution or
                # community sentence has no release date) and old ones (the periodic clock).
                relevant_date=_maybe(rng, today, 0.2, rng.choice((10, 3 * 366))),
                # s.82(1): some periods have ended, some end soon, most are indefinite.
                notification_ends_on=(
                    today + timedelta(days=rng.randint(-30, 30)) if rng.random() < 0.1 else None
                ),
                # Mostly within the last few years, many near a periodic anniversary.
                last_notification_on=_maybe(rng, today, 0.7, 3 * 366),
            ))
            for j in range(rng.choice((0, 0, 1, 2, 3))):
                back = rng.choice((rng.randint(-3, 3 * 366), 365 + rng.randint(-20, 20)))
                day = today - timedelta(days=back)
                s.add(notification(ref, rng.choice(KINDS), day, f"e-{i}-{j}"))
            _custody_and_travel(s, rng, today, ref, i)


def _custody_and_travel(s: AsyncSession, rng: random.Random, today: date, ref: str, i: int) -> None:
    """Some of the rows beside the nominal that move or make a notification clock."""

    def day(back: int) -> date:
        return today - timedelta(days=rng.randint(-3, back))

    def at(on: date) -> datetime:
        return datetime(on.year, on.month, on.day, rng.randint(0, 23), tzinfo=UTC)

    if rng.random() < 0.08:  # s.83(6), s.85(3)-(4): held; some released (s.84(1)(d))
        held = day(400)
        s.add(Detention(visor_ref=ref, started=True, kind="remand", on_date=held, event_id=f"d-{i}"))
        if rng.random() < 0.6:
            released = held + timedelta(days=rng.randint(0, 60))
            s.add(Detention(visor_ref=ref, started=False, kind=None, on_date=released, event_id=f"r-{i}"))
    if rng.random() < 0.04:  # s.85(4)(b): a recall return is custody serving a sentence
        back = at(day(400))
        s.add(Recall(
            visor_ref=ref, recall_type="standard", issued_at=back - timedelta(days=2), returned_at=back,
            event_id=f"rc-{i}", return_event_id=f"rr-{i}",
        ))
    if rng.random() < 0.05:  # s.84(1): a change learned from another source
        s.add(ChangeDetection(
            visor_ref=ref, what=rng.choice(CHANGE_WHATS), changed_on=day(30), source="Fictional check",
            event_id=f"cd-{i}",
        ))
    if rng.random() < 0.08:  # s.86: a trip, and border checks out and (some) back
        out = day(60)
        s.add(TravelNotification(
            visor_ref=ref, departure_on=out, return_on=out + timedelta(days=7), destination="FR",
            notified_at=at(out - timedelta(days=10)), event_id=f"t-{i}",
        ))
        s.add(BorderCheck(
            visor_ref=ref, port="Dover", direction="outbound", checked_at=at(out), event_id=f"bo-{i}"
        ))
        if rng.random() < 0.7:
            s.add(BorderCheck(
                visor_ref=ref, port="Dover", direction="inbound",
                checked_at=at(out + timedelta(days=rng.randint(1, 10))), event_id=f"bi-{i}",
            ))


async def _wanted(
    sessions: Sessions, now: datetime, settings: TriggerSection
) -> set[tuple[str, str, str]]:
    """What the rule asks for, over every registered nominal (no filter)."""
    async with sessions() as s:
        rows = (await s.execute(select(*load.NOMINAL_COLUMNS).where(Nominal.registered.is_(True)))).all()
        facts = [NominalFacts(*r) for r in rows]
        found = await load.histories(s, [f.visor_ref for f in facts], TZ)
    wanted: set[tuple[str, str, str]] = set()
    from_relevant_date = False
    for f in facts:
        history = found.get(f.visor_ref, NotificationHistory())
        result = notifications.evaluate(f, history, [], now, settings, TZ)
        wanted.update((spec.kind, spec.visor_ref, spec.subject) for spec in result.opens)
        if f.relevant_date is not None and f.release_date is None and any(
            spec.subject.startswith("initial:") for spec in result.opens
        ):
            from_relevant_date = True
    # The proof must cover the s.83(1) candidates: a relevant date and no release date.
    assert from_relevant_date, "the data must include an initial notification from a relevant date"
    return wanted


@pytest.mark.parametrize(
    ("today", "years", "lead"),
    [
        (date(2026, 11, 23), 1, 14),
        (date(2028, 2, 29), 1, 14),  # a leap day: anniversaries of 29 February fall on 28th
        (date(2029, 2, 27), 1, 0),
        (date(2027, 2, 14), 1, 14),  # 29 February 2028 is inside a one-year lead's horizon
        (date(2026, 12, 31), 2, 120),
        (date(2027, 1, 2), 5, 30),
    ],
)
async def test_every_nominal_the_rule_alerts_on_is_read(
    sessions: Sessions, today: date, years: int, lead: int
) -> None:
    rng = random.Random(f"{today}-{years}-{lead}")
    await _seed(sessions, rng, today, 400)
    overrides = {"periodic_notification_years": years, "notification_reminder_days": lead}
    ctx = context(f"{today.isoformat()}T12:00:00Z", triggers=overrides)
    settings = ctx.settings.triggers
    now = datetime(today.year, today.month, today.day, 12, tzinfo=UTC)
    wanted = await _wanted(sessions, now, settings)
    assert wanted, "the data must give the rule something to alert on"

    may_owe = or_(*load.notification_clocks(notifications.quiet_after(today, settings)))
    async with sessions() as s:
        read = set((await s.execute(
            select(Nominal.visor_ref).where(Nominal.registered.is_(True), may_owe)
        )).scalars())
    assert {ref for _, ref, _ in wanted} <= read
    total = len(await _all_registered(sessions))
    assert len(read) < total, "the filter should leave someone out, or it proves nothing"

    await run_scan(sessions, ctx, now)
    async with sessions() as s:
        opened = {a for a in await live(s) if a[0] in notifications.KINDS}
    assert opened == wanted


async def _all_registered(sessions: Sessions) -> list[str]:
    async with sessions() as s:
        rows = await s.execute(select(Nominal.visor_ref).where(Nominal.registered.is_(True)))
        return list(rows.scalars())


# Each branch of load.notification_clocks beside the nominal's own columns, with a nominal that
# would not be read otherwise (registered, a fixed abode, no release or relevant date, notified
# last week): which rows make it a candidate. (A function: rows are added to one session only.)
def _branches() -> list[tuple[str, list[Any], bool]]:
    back = BorderCheck(port="Dover", direction="inbound", checked_at=datetime(2026, 11, 8, 18, tzinfo=UTC))
    trip = TravelNotification(
        departure_on=date(2026, 11, 1), return_on=date(2026, 11, 8), destination="FR",
        notified_at=datetime(2026, 10, 1, tzinfo=UTC),
    )
    return [
        ("nothing", [], False),
        # s.84(1)(d): a release owes a notification within 3 days
        ("released", [Detention(started=True, kind="remand", on_date=date(2026, 10, 1)),
                      Detention(started=False, kind=None, on_date=date(2026, 11, 20))], True),
        # s.83(6), s.85(3): held, not released: the clocks only stand still
        ("held", [Detention(started=True, kind="sentence", on_date=date(2026, 10, 1))], False),
        # s.84(1): a change learned elsewhere owes a change notification
        ("detected", [ChangeDetection(what="name", changed_on=date(2026, 11, 20), source="Fictional")], True),
        # s.86: back from a notified trip: a return notification may be owed
        ("returned", [trip, back], True),
        ("inbound, no trip", [
            BorderCheck(port="Dover", direction="inbound", checked_at=datetime(2026, 11, 8, 18, tzinfo=UTC))
        ], False),
        ("trip, no inbound", [
            TravelNotification(
                departure_on=date(2026, 12, 1), return_on=None, destination="FR",
                notified_at=datetime(2026, 11, 1, tzinfo=UTC),
            )
        ], False),
    ]


async def test_each_branch_of_the_filter(sessions: Sessions) -> None:
    today = date(2026, 11, 23)
    branches = _branches()
    async with sessions.begin() as s:
        for i, (_, rows, _) in enumerate(branches):
            ref = f"VS-BR{i:05d}"
            s.add(nominal(ref, last_notification_on=today - timedelta(days=7)))
            for j, row in enumerate(rows):
                row.visor_ref, row.event_id = ref, f"br-{i}-{j}"
                s.add(row)
    ctx = context(f"{today.isoformat()}T12:00:00Z")
    may_owe = or_(*load.notification_clocks(notifications.quiet_after(today, ctx.settings.triggers)))
    async with sessions() as s:
        read = set((await s.execute(select(Nominal.visor_ref).where(may_owe))).scalars())
    assert {name for i, (name, _, _) in enumerate(branches) if f"VS-BR{i:05d}" in read} == {
        name for name, _, wanted in branches if wanted
    }
