"""Time-driven rules: one pass over the case store as of an instant (`casewatch scan`, and the
scheduler's periodic job).

Built for volume (a million actions, 100k nominals): rows are read in keyset-paged batches,
the obvious date filters are pushed into SQL (open actions due by today +
action_reminder_days; nominals who may owe a notification, load.notification_candidates, a
superset of those the rule alerts on), each batch's snapshots are loaded with one query per
table (no N+1), and the alerts already live are read once up front so that a re-run skips them
without a query. Each batch commits on its own, so a long scan never holds SQLite's single
writer for long; on PostgreSQL the batches are written beside the reading (_write_pages).
Alerts that are live but no longer wanted (an action done or moved, a notification received)
are resolved at the end of each part. Then every recall not returned keeps its
`recall.unlawfully_at_large` open, and, last, each live alert of a kind in
triggers.repeat_reminder_hours that is due one is sent a reminder (alerts.reminders).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, false, func, or_, select, true, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.reminders import send_reminders
from casewatch.context import Context
from casewatch.model.clocks import local_date
from casewatch.model.facts import MeetingFacts, NominalFacts, NotificationHistory, OrderFacts
from casewatch.model.results import LiveAlert, RuleResult
from casewatch.store.models import (
    Action,
    Detention,
    LevelChange,
    Meeting,
    Nominal,
    Officer,
    Order,
    Recall,
    RmpReview,
)
from casewatch.triggers import load
from casewatch.triggers.reconcile import Tally, apply
from casewatch.triggers.rules import actions, minutes, notifications, orders, recall, rmp_review, visits

BATCH = 2000
# Concurrent page writers on PostgreSQL (see _write_pages).
WRITERS = 2
NO_HISTORY = NotificationHistory()


@dataclass
class ScanSummary:
    at: datetime
    tally: Tally = field(default_factory=Tally)

    def lines(self) -> list[str]:
        out = [f"scan as of {self.at.isoformat()}"]
        t = self.tally
        for label, counts in (
            ("opened", t.opened), ("raised", t.raised), ("resolved", t.resolved), ("reminded", t.reminded),
        ):
            total = sum(counts.values())
            out.append(f"alerts {label}: {total}")
            out.extend(f"  {kind}: {n}" for kind, n in sorted(counts.items()))
        return out


async def run_scan(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    at: datetime | None = None,
    *,
    batch_size: int = BATCH,
) -> ScanSummary:
    """Evaluate every time-based trigger once as of `at` (default: the context's clock)."""
    at = at if at is not None else ctx.clock.now()
    if at.tzinfo is None:
        raise ValueError("scan time must be timezone-aware")
    summary = ScanSummary(at)
    await _scan_notifications(sessions, ctx, at, summary.tally, batch_size)
    await _scan_actions(sessions, ctx, at, summary.tally, batch_size)
    await _scan_visits(sessions, ctx, at, summary.tally, batch_size)
    await _scan_recalls(sessions, ctx, at, summary.tally, batch_size)
    await _scan_orders(sessions, ctx, at, summary.tally, batch_size)
    await _scan_minutes(sessions, ctx, at, summary.tally, batch_size)
    await _scan_rmp_reviews(sessions, ctx, at, summary.tally, batch_size)
    # Last: what the passes above opened or resolved is not reminded of.
    summary.tally.reminded.update(
        await send_reminders(sessions, ctx, at, skip=frozenset(summary.tally.opened_ids))
    )
    return summary


async def _live_by(
    sessions: async_sessionmaker[AsyncSession], kinds: Sequence[str], key: str
) -> dict[str, list[LiveAlert]]:
    async with sessions() as session:
        live = await load.live_alerts(session, kinds)
    grouped: dict[str, list[LiveAlert]] = defaultdict(list)
    for alert in live:
        grouped[getattr(alert, key)].append(alert)
    return grouped


async def _scan_notifications(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, at: datetime, tally: Tally, size: int
) -> None:
    settings, tz = ctx.settings.triggers, ZoneInfo(ctx.settings.service.timezone)
    live = await _live_by(sessions, notifications.KINDS, "visor_ref")
    # Only nominals who may owe something are read (their references first, in one statement);
    # the live alerts of the others are still evaluated (and resolved) below, with the leftovers.
    quiet_after = notifications.quiet_after(local_date(at, tz), settings)
    async with sessions() as session:
        candidates = await load.notification_candidates(session, quiet_after)

    async def pages() -> AsyncGenerator[Page, None]:
        for refs in load.chunks(candidates, size):
            async with sessions() as session:
                # By key: the candidates are ~1 in 20 of the nominals, so a range of references
                # would read ~20x the rows (and build their histories).
                known = await load.nominals(session, refs)
                found = await load.histories(session, refs, tz)
            page: Page = []
            for ref in refs:
                nominal = known.get(ref)
                if nominal is None:  # gone since: its live alerts are leftovers
                    continue
                mine = live.pop(ref, [])
                result = notifications.evaluate(nominal, found.get(ref, NO_HISTORY), mine, at, settings, tz)
                if result.opens or result.resolves:  # most nominals owe nothing yet
                    page.append((result, mine))
            yield page

    await _write_pages(sessions, ctx, tally, pages())
    # Live alerts of nominals not read above (no longer registered or known, or owing nothing
    # now): evaluated, so that those no longer wanted resolve.
    leftover = sorted(live)
    for part in load.chunks(leftover):
        async with sessions() as session, session.begin():
            known = await load.nominals(session, part)
            found = await load.histories(session, part, tz)
            for ref in part:
                result = notifications.evaluate(
                    known.get(ref), found.get(ref, NotificationHistory()), live[ref],
                    at, settings, tz,
                )
                await apply(session, result, ctx, live=live[ref], tally=tally)


async def _scan_actions(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, at: datetime, tally: Tally, size: int
) -> None:
    settings, tz = ctx.settings.triggers, ZoneInfo(ctx.settings.service.timezone)
    horizon = local_date(at, tz) + timedelta(days=settings.action_reminder_days)
    live = await _live_by(sessions, actions.KINDS, "subject")

    async def pages() -> AsyncGenerator[Page, None]:
        after: tuple[Any, str] | None = None
        while True:
            stmt = (
                select(*load.ACTION_COLUMNS)
                .select_from(Action)
                .outerjoin(Nominal, Nominal.visor_ref == Action.visor_ref)
                .outerjoin(Officer, Officer.id == Action.owner)
                .where(Action.status == "open", Action.due_on <= horizon)
                .order_by(Action.due_on, Action.action_id)
                .limit(size)
            )
            if after is not None:
                stmt = stmt.where(tuple_(Action.due_on, Action.action_id) > tuple_(*after))
            async with sessions() as session:
                rows = (await (await session.connection()).execute(stmt)).all()
            if not rows:
                return
            page: Page = []
            for row in rows:
                action = load.action_from_columns(tuple(row))
                mine = live.pop(action.action_id, [])
                result = actions.evaluate(action, mine, at, settings, tz)
                if result.opens or result.resolves:
                    page.append((result, mine))
            yield page
            if len(rows) < size:  # the last page: no need to ask for the next
                return
            last = load.action_from_columns(tuple(rows[-1]))
            after = (last.due_on, last.action_id)

    await _write_pages(sessions, ctx, tally, pages())
    # Live alerts whose action is done, moved beyond the horizon, or gone.
    leftover = sorted(live)
    for part in load.chunks(leftover):
        async with sessions() as session, session.begin():
            known = await load.actions(session, part)
            for action_id in part:
                result = actions.evaluate(known.get(action_id), live[action_id], at, settings, tz)
                await apply(session, result, ctx, live=live[action_id], tally=tally)


async def _scan_visits(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, at: datetime, tally: Tally, size: int
) -> None:
    """Home visits (rules.visits): the nominals who may owe one by today + visit_reminder_days
    (load.may_owe_visit, a superset: never visited ones only with visits_recorded_from set), in
    pages by reference; then the live visit alerts of the others, so that those no longer wanted
    resolve."""
    settings, tz = ctx.settings.triggers, ZoneInfo(ctx.settings.service.timezone)
    live = await _live_by(sessions, visits.KINDS, "visor_ref")
    horizon = local_date(at, tz) + timedelta(days=settings.visit_reminder_days)
    may_owe = load.may_owe_visit(horizon, settings.visit_every_days_by_risk, settings.visits_recorded_from)

    async def evaluate(session: AsyncSession, refs: Sequence[str], known: Mapping[str, NominalFacts]) -> Page:
        last = await load.last_visits(session, refs)
        found = await load.histories(session, refs, tz)
        page: Page = []
        for ref in refs:
            mine = live.pop(ref, [])
            result = visits.evaluate(
                known.get(ref), last.get(ref), found.get(ref, NO_HISTORY), mine, at, settings, tz
            )
            if result.opens or result.resolves:
                page.append((result, mine))
        return page

    await _scan_nominals(sessions, ctx, tally, size, may_owe, live, evaluate)


Page = list[tuple[RuleResult, list[LiveAlert]]]


Evaluate = Callable[[AsyncSession, Sequence[str], Mapping[str, NominalFacts]], Awaitable["Page"]]


async def _scan_nominals(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    tally: Tally,
    size: int,
    where: ColumnElement[bool],
    live: dict[str, list[LiveAlert]],
    evaluate: Evaluate,
) -> None:
    """A pass over the nominals matching `where` (a candidate filter, a superset of those the
    rule alerts on), in pages by reference, then over the nominals of the live alerts left in
    `live` (`evaluate` pops each nominal's), so that those no longer wanted resolve."""

    async def pages() -> AsyncGenerator[Page, None]:
        after = ""
        while True:
            async with sessions() as session:
                rows = (await (await session.connection()).execute(
                    select(*load.NOMINAL_COLUMNS)
                    .where(Nominal.visor_ref > after, where)
                    .order_by(Nominal.visor_ref)
                    .limit(size)
                )).all()
                if not rows:
                    return
                batch = {n.visor_ref: n for n in (load.nominal_from_columns(tuple(r)) for r in rows)}
                page = await evaluate(session, list(batch), batch)
            yield page
            if len(rows) < size:
                return
            after = rows[-1][0]

    await _write_pages(sessions, ctx, tally, pages())
    for part in load.chunks(sorted(live)):
        async with sessions() as session, session.begin():
            page = await evaluate(session, part, await load.nominals(session, part))
            for result, alerts in page:
                await apply(session, result, ctx, live=alerts, tally=tally)


async def _write_pages(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, tally: Tally, pages: AsyncGenerator[Page, None]
) -> None:
    """Apply each page's rule results in a transaction of its own.

    On PostgreSQL the pages are written by WRITERS tasks, each on its own connection, beside
    the reader: while one waits for the database to insert a page's alerts, Python builds the
    next page's rows or evaluates the next page (a first scan of a national data set spends
    about as long in each). Pages never share a live key (a nominal or an action is on one
    page only), so the writers' transactions cannot conflict. SQLite has a single connection
    (store.engine), so there the pages are written in turn.
    """

    async def write(page: Page) -> None:
        if not page:
            return
        counted = Tally()  # the page's own: writers run side by side, each in its transaction
        async with sessions() as session, session.begin():
            for result, mine in page:
                await apply(session, result, ctx, live=mine, tally=counted, defer=True)
            await counted.flush(session, ctx)  # the page's opens in one go
        tally.add(counted)

    bind = sessions.kw.get("bind")
    if bind is None or bind.dialect.name != "postgresql":
        async with aclosing(pages) as stream:
            async for page in stream:
                await write(page)
        return
    queue: asyncio.Queue[Page | None] = asyncio.Queue(maxsize=WRITERS)

    async def writer() -> None:
        while (page := await queue.get()) is not None:
            await write(page)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(WRITERS):
                group.create_task(writer())
            async with aclosing(pages) as stream:
                async for page in stream:
                    await queue.put(page)
            for _ in range(WRITERS):
                await queue.put(None)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


async def _custody_records(session: AsyncSession, refs: Sequence[str]) -> dict[str, recall.CustodyRecord]:
    """Each nominal's rules.recall.CustodyRecord: one statement per table (detentions, recalls)
    per chunk of `refs`."""
    started: dict[str, date] = {}
    recalls: dict[str, tuple[datetime | None, datetime | None]] = {}
    for part in load.chunks(refs):
        for ref, on in await session.execute(
            select(Detention.visor_ref, func.max(Detention.on_date))
            .where(Detention.visor_ref.in_(part), Detention.started.is_(True))
            .group_by(Detention.visor_ref)
        ):
            started[ref] = on
        for ref, returned_at, issued_at in await session.execute(
            select(Recall.visor_ref, func.max(Recall.returned_at), func.max(Recall.issued_at))
            .where(Recall.visor_ref.in_(part))
            .group_by(Recall.visor_ref)
        ):
            recalls[ref] = (returned_at, issued_at)
    return {
        ref: recall.CustodyRecord(started.get(ref), *recalls.get(ref, (None, None))) for ref in refs
    }


async def _scan_recalls(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, at: datetime, tally: Tally, size: int
) -> None:
    """Every recall not returned keeps its `recall.unlawfully_at_large` open while the nominal is
    at large on it (rules.recall.at_large: no custody, later recall or release after it on
    record, and the nominal known), and resolves it once not. And a safety net for events out
    of order: a live recall alert whose recall is recorded as returned is resolved.
    (recall.issued opens only from the recall.issued event.) Recalls are few (thousands), read
    by id in pages; the not returned ones alone."""
    settings, tz = ctx.settings.triggers, ZoneInfo(ctx.settings.service.timezone)
    live = await _live_by(sessions, recall.KINDS, "subject")
    not_returned = or_(Recall.returned_at.is_(None), Recall.returned_at < Recall.issued_at)

    async def pages() -> AsyncGenerator[Page, None]:
        after = 0
        while True:
            async with sessions() as session:
                rows = list((await session.scalars(
                    select(Recall).where(not_returned, Recall.id > after).order_by(Recall.id).limit(size)
                )).all())
                if not rows:
                    return
                refs = sorted({r.visor_ref for r in rows})
                known = await load.nominals(session, refs)
                records = await _custody_records(session, refs)
            page: Page = []
            for row in rows:
                facts = load.recall_facts(row)
                mine = live.pop(facts.event_id, [])
                result = recall.at_large(
                    facts, known.get(facts.visor_ref), mine, at, settings, tz, records[facts.visor_ref]
                )
                if result.opens or result.resolves:
                    page.append((result, mine))
            yield page
            if len(rows) < size:
                return
            after = rows[-1].id

    await _write_pages(sessions, ctx, tally, pages())
    subjects = sorted(live)  # live recall alerts whose recall is returned (or not known)
    for part in load.chunks(subjects):
        async with sessions() as session, session.begin():
            recalls = await load.recalls_by_event(session, part)
            for subject in part:
                r = recalls.get(subject)
                if r is None or r.returned_at is None or not recall.returned(r):
                    continue
                result = recall.on_returned(r.returned_at, {subject: r.issued_at}, live[subject])
                await apply(session, result, ctx, tally=tally)


_ORDER_COLUMNS = (
    Order.id, Order.order_id, Order.visor_ref, Order.kind, Order.made_on, Order.expires_on, Order.status,
)


async def _scan_orders(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, at: datetime, tally: Tally, size: int
) -> None:
    """`order.expiring` (rules.orders): the active orders expiring from today to today +
    order_expiry_notice_days (the rule's window, in SQL), read by id in pages; then the live
    alerts whose order was not read (discharged, expired, renewed, past its day, gone) are
    evaluated, so that they resolve. Orders are few (thousands)."""
    settings, tz = ctx.settings.triggers, ZoneInfo(ctx.settings.service.timezone)
    today = local_date(at, tz)
    horizon = today + timedelta(days=settings.order_expiry_notice_days)
    live: dict[tuple[str, str], list[LiveAlert]] = defaultdict(list)
    async with sessions() as session:
        for alert in await load.live_alerts(session, orders.KINDS):
            live[(alert.visor_ref, orders.order_id_of(alert.subject))].append(alert)
    due = (Order.status == "active") & (Order.expires_on >= today) & (Order.expires_on <= horizon)

    async def pages() -> AsyncGenerator[Page, None]:
        after = 0
        while True:
            async with sessions() as session:
                rows = (await (await session.connection()).execute(
                    select(*_ORDER_COLUMNS).where(due, Order.id > after).order_by(Order.id).limit(size)
                )).all()
                if not rows:
                    return
                known = await load.nominals(session, sorted({r.visor_ref for r in rows}))
            page: Page = []
            for _id, order_id, visor_ref, kind, made_on, expires_on, status in rows:
                order = OrderFacts(order_id, visor_ref, kind, made_on, expires_on, status)
                mine = live.pop((visor_ref, order_id), [])
                result = orders.evaluate(order, known.get(visor_ref), mine, at, settings, tz)
                if result.opens or result.resolves:
                    page.append((result, mine))
            yield page
            if len(rows) < size:
                return
            after = rows[-1].id

    await _write_pages(sessions, ctx, tally, pages())
    leftover = sorted(live)
    for part in load.chunks(leftover):
        refs = sorted({ref for ref, _ in part})
        async with sessions() as session, session.begin():
            known = await load.nominals(session, refs)
            found = await load.orders(session, refs)
            for ref, order_id in part:
                order = next((o for o in found.get(ref, ()) if o.order_id == order_id), None)
                result = orders.evaluate(order, known.get(ref), live[(ref, order_id)], at, settings, tz)
                await apply(session, result, ctx, live=live[(ref, order_id)], tally=tally)


_MEETING_COLUMNS = (
    Meeting.meeting_id, Meeting.visor_ref, Meeting.held_on, Meeting.level, Meeting.minutes_on_visor_on,
)


async def _scan_minutes(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, at: datetime, tally: Tally, size: int
) -> None:
    """`mappa.minutes_overdue` (rules.minutes): the meetings with no minutes on ViSOR held more
    than minutes.FEWEST_DAYS days ago (a superset: n working days are at least n days), read by
    id in pages; then the live alerts whose meeting was not read (minutes recorded, or gone) are
    evaluated, so that they resolve. Meeting ids are only unique per nominal: alerts are matched
    by (visor_ref, meeting_id)."""
    tz = ZoneInfo(ctx.settings.service.timezone)
    held_before = local_date(at, tz) - timedelta(days=minutes.FEWEST_DAYS)
    live: dict[tuple[str, str], list[LiveAlert]] = defaultdict(list)
    async with sessions() as session:
        for alert in await load.live_alerts(session, minutes.KINDS):
            live[(alert.visor_ref, alert.subject)].append(alert)

    async def pages() -> AsyncGenerator[Page, None]:
        after = 0
        while True:
            async with sessions() as session:
                rows = (await (await session.connection()).execute(
                    select(Meeting.id, *_MEETING_COLUMNS)
                    .where(Meeting.minutes_on_visor_on.is_(None), Meeting.held_on < held_before)
                    .where(Meeting.id > after)
                    .order_by(Meeting.id)
                    .limit(size)
                )).all()
                if not rows:
                    return
                known = await load.nominals(session, sorted({r.visor_ref for r in rows}))
            page: Page = []
            for row in rows:
                meeting = MeetingFacts(*row[1:])
                mine = live.pop((meeting.visor_ref, meeting.meeting_id), [])
                result = minutes.evaluate(meeting, known.get(meeting.visor_ref), mine, at, tz)
                if result.opens or result.resolves:
                    page.append((result, mine))
            yield page
            if len(rows) < size:
                return
            after = rows[-1].id

    await _write_pages(sessions, ctx, tally, pages())
    leftover = sorted(live)
    for part in load.chunks(leftover):
        async with sessions() as session, session.begin():
            refs = sorted({ref for ref, _ in part})
            found = await load.meetings(session, refs)
            known = await load.nominals(session, refs)
            for ref, meeting_id in part:
                meeting = next((m for m in found.get(ref, ()) if m.meeting_id == meeting_id), None)
                result = minutes.evaluate(meeting, known.get(ref), live[(ref, meeting_id)], at, tz)
                await apply(session, result, ctx, live=live[(ref, meeting_id)], tally=tally)


async def _level_changed_on(session: AsyncSession, refs: Sequence[str], tz: ZoneInfo) -> dict[str, date]:
    """The local date of each nominal's newest MAPPA level change (rules.rmp_review's clock for a
    plan never reviewed)."""
    found: dict[str, date] = {}
    for part in load.chunks(refs):
        stmt = (
            select(LevelChange.visor_ref, func.max(LevelChange.changed_at))
            .where(LevelChange.visor_ref.in_(part))
            .group_by(LevelChange.visor_ref)
        )
        for ref, changed_at in await session.execute(stmt):
            found[ref] = local_date(changed_at, tz)
    return found


async def _scan_rmp_reviews(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, at: datetime, tally: Tally, size: int
) -> None:
    """`rmp.review_due` (rules.rmp_review): nominals read by reference in pages, only those that
    may be due (a superset, in SQL): registered or at a MAPPA level, with no review after the
    day whose review falls due within the reminder (the cutoff), and a review to count from, or,
    never reviewed, rmp_reviews_recorded_from set and on or before the cutoff (the never-reviewed
    clock starts no earlier than that day; unset: no clock). Then the live alerts of nominals not
    read are evaluated, so that they resolve."""
    settings, tz = ctx.settings.triggers, ZoneInfo(ctx.settings.service.timezone)
    cutoff = (
        local_date(at, tz)
        + timedelta(days=settings.rmp_review_reminder_days)
        - timedelta(weeks=settings.rmp_review_weeks)
    )
    live = await _live_by(sessions, rmp_review.KINDS, "visor_ref")
    reviews = select(RmpReview.id).where(RmpReview.visor_ref == Nominal.visor_ref)
    newer_review = reviews.where(RmpReview.reviewed_on > cutoff).exists()
    since = settings.rmp_reviews_recorded_from
    never_reviewed_may_be_due = since is not None and since <= cutoff
    may_be_due = and_(
        or_(Nominal.registered.is_(True), Nominal.mappa_level.is_not(None)),
        ~newer_review,
        or_(reviews.exists(), true() if never_reviewed_may_be_due else false()),
    )

    async def evaluate(session: AsyncSession, refs: Sequence[str], known: Mapping[str, NominalFacts]) -> Page:
        reviewed = await load.last_rmp_reviews(session, refs)
        changed = await _level_changed_on(session, refs, tz)
        page: Page = []
        for ref in refs:
            mine = live.pop(ref, [])
            result = rmp_review.evaluate(
                known.get(ref), reviewed.get(ref), changed.get(ref), mine, at, settings, tz
            )
            if result.opens or result.resolves:
                page.append((result, mine))
        return page

    await _scan_nominals(sessions, ctx, tally, size, may_be_due, live, evaluate)


__all__ = ["ScanSummary", "run_scan"]
