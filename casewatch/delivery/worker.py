"""The delivery worker: claim due outbox rows, send each through its channel's notifier, record
the attempt, and retry, pace, dead-letter or fall back as the outcome requires.

Nothing is dropped silently: every attempt is a DeliveryAttempt row and an audit entry; a dead
letter is also logged, counted and (for critical and high alerts on Slack) emailed to the SPOC.
Delivery is at-least-once: a worker that dies after sending but before recording leaves a claim
that expires, and the message is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts import SYSTEM_REF
from casewatch.alerts.lifecycle import live_alert, open_alert, resolve
from casewatch.audit import Entry, record, record_many
from casewatch.audit.quiet import Quiet
from casewatch.bell import Claimer, Handoff, OutboxBell, first_of
from casewatch.context import Context
from casewatch.delivery.claim import (
    MAYBE_SENT,
    UNFINISHED,
    ClaimedRow,
    claim_rows,
    holds_row,
    release,
    was_maybe_sent,
)
from casewatch.delivery.metrics import DeliveryMetrics
from casewatch.delivery.notifier import (
    Notifier,
    Outbound,
    Outcome,
    Permanent,
    Retryable,
    Sent,
    unbuildable,
)
from casewatch.delivery.pacing import Pacer, Turn
from casewatch.delivery.transition import AlertBrief, DeliveryFacts, Policy, RowUpdate, next_step
from casewatch.model.alerts import AlertSpec
from casewatch.routing.outbox import cleared_now, enqueue_fallback
from casewatch.routing.purposes import delivery_purpose, nominals_of
from casewatch.store.models import Alert, AlertThread, Delivery, DeliveryAttempt

log = logging.getLogger(__name__)

DELIVERY_FAILED = "system.delivery_failed"

Sleep = Callable[[float], Awaitable[None]]

# A claim made because the poll came round (not the bell, not a full batch) waits for a quiet
# moment (audit.quiet: nothing in flight for POLL_QUIET_GAP_SECONDS), as the audit sealer does:
# an empty claim is a write transaction (~5 ms of the loop and a commit here), and the poll's
# claims that ran beside an event's ingest or its sends were among the end-to-end bench's slowest
# events (bench/README, "(twelfth session)"). After POLL_DEFER_SECONDS nothing in flight is
# enough; after POLL_DEFER_LIMIT_SECONDS (or the poll, if shorter) it claims anyway.
POLL_QUIET_GAP_SECONDS = 0.025
POLL_DEFER_SECONDS = 0.2
POLL_DEFER_LIMIT_SECONDS = 0.3

# Rounds one worker's `run_forever` may have sending at once: with `delivery.batch_size` rows each,
# at most this many batches are claimed (leased) and not yet recorded.
ROUNDS_IN_FLIGHT = 4
# How long a round's outcomes may wait for its other sends still in flight before they are
# recorded anyway (_Recorder): a record transaction is ~5-10 ms of the event loop, which a send
# in flight would otherwise wait for between its round trips (bench/README, seventh session).
RECORD_HOLD_SECONDS = 0.03


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    channel: str
    target: str
    claimed_until: datetime
    message: Outbound
    # The stored payload is not a message at all (not a JSON object): nothing can be built.
    broken: bool = False


Result = tuple[Claimed, Outcome, int]  # what was sent, how it went, how long it took (ms)


def _claimed(row: ClaimedRow) -> Claimed:
    broken = not isinstance(row.payload, dict)
    message = Outbound(
        delivery_id=row.id, alert_id=row.alert_id or "", change=row.purpose, target=row.target,
        payload={} if broken else dict(row.payload), content_hash=row.content_hash,
        thread_ref=row.thread_ref if row.alert_id is not None else None,
        maybe_sent=was_maybe_sent(row.last_error),
    )
    return Claimed(row.id, row.channel, row.target, row.claimed_until, message, broken)


class _Recorder:
    """Group commit for one round's outcomes: a group's outcome waits for the transaction that
    records it (its next message needs it: the thread, the order), and outcomes that arrive while
    `parallel` transactions are being written share the next one. On SQLite, with its one writer,
    `parallel` is 1; on PostgreSQL each group may write at once, as before. A failing shared
    transaction is retried one outcome at a time, so one bad outcome spoils no other.

    Outcomes also wait while another group of the round is sending, until `hold` seconds after
    the round's first outcome at most (one budget for the round: a destination's messages in a
    row are not each held again): the transaction's work on the event loop would otherwise sit
    between that send's round trips (an SMTP message is four), and the outcomes then share one
    transaction.
    The rows stay claimed meanwhile; a crash in between re-sends them, as a crash before any
    record does (maybe_sent)."""

    def __init__(
        self, write: Callable[[list[Result]], Awaitable[None]], groups: int, parallel: int,
        hold: float = 0.0,
    ) -> None:
        self.write = write
        self.open = groups
        self.parallel = parallel
        self.hold = hold
        self.writing = 0
        self.sending = 0  # the round's sends in flight
        self.queue: list[tuple[Result, asyncio.Future[None]]] = []
        self.first_at: float | None = None  # when the round's first outcome came (loop time)
        self.wake = asyncio.Event()

    @contextlib.contextmanager
    def send(self) -> Iterator[None]:
        """Around one send of the round."""
        self.sending += 1
        try:
            yield
        finally:
            self.sending -= 1
            self.wake.set()

    async def record(self, result: Result) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self.first_at is None:
            self.first_at = loop.time()
        self.queue.append((result, done))
        self.wake.set()
        await done

    def finished(self) -> None:
        self.open -= 1
        self.wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as flushes:  # cancelled with the round: nothing outlives it
            while self.open or self.queue:
                held = 0.0
                if self.sending and self.first_at is not None:
                    held = self.first_at + self.hold - loop.time()
                if self.queue and self.writing < self.parallel and held <= 0:
                    batch, self.queue = self.queue, []
                    self.writing += 1
                    flushes.create_task(self._flush(batch))
                    continue
                self.wake.clear()
                if self.queue and held > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(held):
                            await self.wake.wait()
                else:
                    await self.wake.wait()

    async def _flush(self, batch: list[tuple[Result, asyncio.Future[None]]]) -> None:
        try:
            await self._write(batch)
        finally:
            self.writing -= 1
            self.wake.set()

    async def _write(self, batch: list[tuple[Result, asyncio.Future[None]]]) -> None:
        try:
            await self.write([result for result, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for result, done in batch:
                try:
                    await self.write([result])
                except Exception as one:
                    _settle(done, one)
                else:
                    _settle(done, None)
        else:
            for _, done in batch:
                _settle(done, None)


def _exception_types(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return ", ".join(sorted({_exception_types(inner) for inner in exc.exceptions}))
    return type(exc).__name__


def _settle(done: asyncio.Future[None], exc: BaseException | None) -> None:
    if done.done():
        return
    if exc is None:
        done.set_result(None)
    else:
        done.set_exception(exc)


def new_worker_id(n: int = 0) -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{n}:{uuid.uuid4().hex[:6]}"


class DeliveryWorker:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ctx: Context,
        notifiers: Mapping[str, Notifier],
        *,
        worker_id: str | None = None,
        pacer: Pacer | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        metrics: DeliveryMetrics | None = None,
        bell: OutboxBell | None = None,
        handoff: Handoff | None = None,
        quiet: Quiet | None = None,
    ) -> None:
        self.sessions = sessions
        self.bell = bell or OutboxBell()
        self.handoff = handoff
        self.quiet = quiet  # the service's: the poll's claims wait for a quiet moment
        self.ctx = ctx
        self.notifiers = notifiers
        self.worker_id = worker_id or new_worker_id()
        self.pacer = pacer or Pacer()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.config = ctx.settings.delivery
        self.metrics = metrics or DeliveryMetrics()
        self.policy = Policy.of(self.config, self.rng)
        self._stop: asyncio.Event | None = None  # run_forever's: once set, unstarted rows go back

    # --- loop -----------------------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim one batch of due deliveries and handle them; return how many were claimed.
        Different destinations are served concurrently, one destination's messages in order; the
        outcomes of different destinations that land together are recorded in one transaction."""
        rows = await self._claim()
        if rows:
            await self._run_round(rows)
        return len(rows)

    async def run_until_idle(self, max_rounds: int = 1000) -> int:
        """Handle batches until none is due now (tests, the demo, `casewatch digest`)."""
        total = 0
        for _ in range(max_rounds):
            handled = await self.run_once()
            if not handled:
                break
            total += handled
        return total

    async def run_forever(self, stop: asyncio.Event) -> None:
        """The service's loop. Unlike `run_once`, it claims again while earlier rounds are still
        sending (up to ROUNDS_IN_FLIGHT of them), so a destination that must wait (pacing) holds
        up only its own messages. It claims again at once when its claim was a full batch or the
        bell rang since the claim began, when a round ends if it was held at ROUNDS_IN_FLIGHT,
        and otherwise at the bell or the poll, the poll's at a quiet moment (`quiet`, as the audit
        sealer's rounds: POLL_QUIET_GAP_SECONDS). (A round's end makes nothing due in this process:
        retries, deferred updates and paced rows are put back for later; an empty claim costs a
        write transaction.) With a `handoff`, this worker is its owner while it runs: rows
        written claimed by it start a round as soon as they are handed over, without a claim
        (the poll still claims on time). Once `stop` is set, a row not yet started is given back
        and the rounds in flight are awaited; cancelling this cancels them."""
        in_flight: set[asyncio.Task[None]] = set()
        round_ended = asyncio.Event()
        handoff = self.handoff
        waits_also = (handoff.ready.wait,) if handoff is not None else ()

        def room() -> None:  # new rows are written claimed by this worker only while it has room
            if handoff is not None and handoff.owner is not None:
                handoff.accepting = len(in_flight) < ROUNDS_IN_FLIGHT and not stop.is_set()

        def ended(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            round_ended.set()
            room()

        def start(rows: list[ClaimedRow]) -> None:
            self.pacer.in_flight.update((row.id, row.claimed_until) for row in rows)
            task = rounds.create_task(self._guarded_round(rows))
            in_flight.add(task)
            task.add_done_callback(ended)
            room()

        def start_handed() -> None:
            """Rows handed over start now, even while this loop waits for a claim (on SQLite a
            claim waits for the one connection, behind the very transaction that handed them)."""
            if handoff is None or handoff.on_hand is not start_handed:  # this loop has ended
                return
            while len(in_flight) < ROUNDS_IN_FLIGHT and not stop.is_set():
                handed = handoff.take(self.config.batch_size)
                if not handed:
                    return
                start(handed)

        self._stop = stop
        if handoff is not None:
            handoff.attach(Claimer(self.worker_id, self.config.lease_seconds))
        left: list[ClaimedRow] = []
        claim_at = 0.0  # when to claim (monotonic): at once, or the poll after an empty claim
        claimed_rings = -1  # the bell's count when the last claim began
        try:
            async with asyncio.TaskGroup() as rounds:
                if handoff is not None:
                    handoff.on_hand = start_handed
                while not stop.is_set():
                    if len(in_flight) >= ROUNDS_IN_FLIGHT:  # claims nothing until a round ends
                        round_ended.clear()
                        await first_of(round_ended.wait(), stop.wait())
                        continue
                    if handoff is not None and (handed := handoff.take(self.config.batch_size)):
                        start(handed)
                        continue
                    # Rung since the last claim began (while it ran, after it read the outbox, or while
                    # this worker was held at ROUNDS_IN_FLIGHT): look again at once, not at the poll.
                    if self.bell.rings != claimed_rings:
                        claim_at = 0.0
                    if time.monotonic() >= claim_at:
                        if claim_at and self.quiet is not None:  # the poll's claim, not the bell's
                            # The bell ends the wait: a ring meanwhile is a claim it asks for.
                            hard = min(self.config.poll_seconds, POLL_DEFER_LIMIT_SECONDS)
                            await self.bell.wait(hard, stop, self.quiet.settled(
                                stop, gap=POLL_QUIET_GAP_SECONDS, soft=min(hard, POLL_DEFER_SECONDS),
                                hard=hard,
                            ))
                            if stop.is_set():
                                continue
                        claimed_rings = self.bell.rings
                        try:
                            rows = await self._claim(spare_in_flight=True)
                        except Exception as exc:  # the database may be away for a while: keep going
                            log.error("delivery worker %s: a claim failed (%s); retrying", self.worker_id,
                                      type(exc).__name__)
                            rows = []
                        if rows:
                            start(rows)
                        if len(rows) >= self.config.batch_size:
                            self.bell.ring()  # maybe more: another waiting worker claims beside this one
                            continue
                        if self.bell.rings != claimed_rings:
                            continue
                        claim_at = time.monotonic() + self.config.poll_seconds
                    await self.bell.wait(
                        claim_at - time.monotonic(), stop, *(wait() for wait in waits_also)
                    )
                if handoff is not None:  # stopping: new rows are queued unclaimed
                    handoff.accepting, handoff.on_hand = False, None
        finally:
            self._stop = None  # a later run_once (tests, tools) sends again
            if handoff is not None:
                left = handoff.detach()
        now = self.ctx.clock.now()
        for row in left:  # handed over but never started: given back (not when cancelled)
            await self._release(row.id, row.claimed_until, now)

    async def _claim(self, *, spare_in_flight: bool = False) -> list[ClaimedRow]:
        """Claim a batch; with `spare_in_flight`, none of the rows this process has in flight."""
        now = self.ctx.clock.now()
        # The same instant as the claim's: a lease lapsing in between is either spared or live.
        exclude = self.pacer.lapsed_in_flight(now) if spare_in_flight else ()
        async with self.sessions.begin() as session:
            return await claim_rows(
                session, self.worker_id, now, now + timedelta(seconds=self.config.lease_seconds),
                self.config.batch_size, exclude,
            )

    async def _guarded_round(self, rows: list[ClaimedRow]) -> None:
        try:
            await self._run_round(rows)
        except Exception as exc:  # never the worker's end; the rows' leases lapse, as after a crash
            # The types only: a database error's text can quote the statement's parameters.
            kinds = _exception_types(exc)
            log.error("delivery worker %s: a round of %d failed (%s)", self.worker_id, len(rows), kinds)
        finally:
            for row in rows:  # those the round never reached (it failed or was cancelled)
                self.pacer.in_flight.pop(row.id, None)

    async def _run_round(self, rows: list[ClaimedRow]) -> None:
        groups: dict[tuple[str, str], list[ClaimedRow]] = {}
        for row in rows:
            groups.setdefault((row.channel, row.target), []).append(row)
        # Taken now, before any await: a destination's groups run one at a time, in claim order,
        # across this worker's rounds and the other workers sharing the pacer.
        turns = {key: self.pacer.turns.take(key) for key in groups}
        one_writer = self.sessions.kw["bind"].dialect.name == "sqlite"
        recorder = _Recorder(
            self._record_many, len(groups), 1 if one_writer else len(groups), hold=RECORD_HOLD_SECONDS
        )
        try:
            # One task group: if recording fails, the groups waiting on it are cancelled (their
            # rows stay claimed until the lease lapses, as after a crash) instead of waiting for ever.
            async with asyncio.TaskGroup() as round_:
                round_.create_task(recorder.run())
                for key, group in groups.items():
                    round_.create_task(self._run_group(group, recorder, turns[key]))
        finally:
            for turn in turns.values():  # a group cancelled before it started never ended its own
                turn.end()

    async def _run_group(self, rows: list[ClaimedRow], recorder: _Recorder, turn: Turn) -> None:
        try:
            await turn.wait()
            for row in rows:
                try:
                    if self._stop is not None and self._stop.is_set():
                        await self._release(row.id, row.claimed_until, self.ctx.clock.now())  # not started
                    else:
                        await self._handle(row, recorder)
                except Exception as exc:
                    # The claim lapses and the delivery is tried again: logged, never lost. The type
                    # only: a database error's text can quote the statement's parameters (the payload).
                    log.error("delivery %d: unexpected %s while handling it", row.id, type(exc).__name__)
                finally:
                    # Recorded or given back (or failed, its lease to lapse): this round is done
                    # with it, so the process's other claims may take it when it is due.
                    self.pacer.in_flight.pop(row.id, None)
        finally:
            turn.end()
            recorder.finished()

    # --- one delivery ---------------------------------------------------------------------------

    async def _handle(self, row: ClaimedRow, recorder: _Recorder) -> None:
        # The claim read the row; one whose alert has an earlier message unfinished at this
        # destination is read again now, after that message's outcome (in this batch) is recorded.
        claimed = await self._prepare(row) if row.after_earlier else _claimed(row)
        if claimed is None:
            return
        key = (claimed.channel, claimed.target)
        now = self.ctx.clock.now()
        pace = self.pacer.wait(key, now)
        # Too long a pace to wait inline, or too little lease left to wait it and still send (checked
        # before taking a slot it cannot use): given back, due when the destination is free again. A
        # fresh claim then has its whole lease (due now, a short lease and a long pace would be
        # claimed and given back in a loop).
        if pace > self.config.max_inline_wait_seconds or self._lease_too_short(claimed, now, pace):
            await self._release(claimed.delivery_id, claimed.claimed_until, now + timedelta(seconds=pace))
            return
        interval = (
            self.config.chat_interval_seconds if claimed.channel == "slack"
            else self.config.email_interval_seconds
        )
        wait = self.pacer.reserve(key, now, interval)
        if wait > 0:
            await self._paced(wait)
        now = self.ctx.clock.now()
        if self._stop is not None and self._stop.is_set():  # stopping: given back, not sent late
            await self._release(claimed.delivery_id, claimed.claimed_until, now)
            return
        if self._lease_too_short(claimed, now, 0.0):
            await self._release(claimed.delivery_id, claimed.claimed_until, now)
            return
        self.pacer.started(key, now, interval)
        started = time.monotonic()
        with recorder.send():
            outcome = await self._send(claimed)
        duration_ms = int((time.monotonic() - started) * 1000)
        if isinstance(outcome, Retryable) and outcome.retry_after:
            self.pacer.block(key, self.ctx.clock.now() + timedelta(seconds=outcome.retry_after))
        await recorder.record((claimed, outcome, duration_ms))

    async def _send(self, claimed: Claimed) -> Outcome:
        if claimed.broken:
            return unbuildable(TypeError("payload is not an object"))
        notifier = self.notifiers.get(claimed.channel)
        if notifier is None:
            return Permanent(f"no notifier for channel {claimed.channel!r} (is it configured?)")
        message = claimed.message
        if "personal" in message.payload and not cleared_now(self.ctx.settings, message.target):
            # Rendered for a target cleared when it was queued, whose clearance has since been
            # withdrawn (the service restarted with another configuration): sent without the name
            # and markers. (The audit's content hash stays the queued message's: more than went.)
            payload = {key: value for key, value in message.payload.items() if key != "personal"}
            message = dataclasses.replace(message, payload=payload)
        task = asyncio.current_task()
        cancelling = task.cancelling() if task is not None else 0
        try:
            # asyncio.timeout, not wait_for (a task of its own on 3.11): the send starts now, in
            # this task, at the moment the pacer counted it from.
            async with asyncio.timeout(self.config.send_timeout_seconds):
                outcome = await notifier.send(message)
        except TimeoutError:
            # The request may have gone out and taken effect, its answer late (Slack slow, a proxy).
            outcome = Retryable(f"timed out after {self.config.send_timeout_seconds:g}s", maybe_sent=True)
        except Exception as exc:  # a notifier bug or an unforeseen library error: retry, visibly
            # The type only: an exception's text (and a traceback's) can quote the message.
            log.error(
                "delivery %d: notifier %s raised %s", claimed.delivery_id, claimed.channel,
                type(exc).__name__,
            )
            outcome = Retryable(f"notifier raised {type(exc).__name__}")
        if task is not None and task.cancelling() > cancelling:
            # This task was cancelled (a stop) and the notifier swallowed it, whatever it then
            # returned or raised: the stop goes on, as it did when wait_for ran the send in a task
            # of its own; the row's lease then hands it on, maybe sent.
            raise asyncio.CancelledError
        if isinstance(outcome, Retryable) and (outcome.maybe_sent or message.maybe_sent):
            # Said on the row until an attempt sends it: a later failure (a rate-limited look for
            # the earlier post, say) must not make the next attempt post without looking.
            if not outcome.error.startswith(MAYBE_SENT):
                outcome = dataclasses.replace(outcome, error=MAYBE_SENT + outcome.error, maybe_sent=True)
        return outcome

    async def _paced(self, seconds: float) -> None:
        """The pacing wait; run_forever's stop ends it early."""
        if self._stop is None:
            await self.sleep(seconds)
        else:
            await first_of(self.sleep(seconds), self._stop.wait())

    def _lease_too_short(self, claimed: Claimed, now: datetime, wait: float) -> bool:
        """Too little of the claim's lease left to wait `wait` and then send safely."""
        return (claimed.claimed_until - now).total_seconds() - wait < self.config.send_timeout_seconds

    async def _prepare(self, row: ClaimedRow) -> Claimed | None:
        now = self.ctx.clock.now()
        async with self.sessions.begin() as session:
            d = await session.get(Delivery, row.id)
            if d is None or not holds_row(d, self.worker_id, row.claimed_until):
                return None
            assert d.claimed_until is not None
            thread_ref = None
            if d.alert_id is not None:
                if await self._earlier_unfinished(session, d):
                    # Keep one destination's messages in order: an update waits for the first
                    # message (it needs its ts or Message-ID) rather than posting a second one.
                    d.state, d.claimed_by, d.claimed_until = "pending", None, None
                    d.next_attempt_at = now + timedelta(seconds=self.config.update_wait_seconds)
                    return None
                thread = await _thread(session, d.alert_id, d.channel, d.target)
                thread_ref = thread.external_ref if thread else None
            broken = not isinstance(d.payload, dict)
            message = Outbound(
                delivery_id=d.id, alert_id=d.alert_id or "", change=d.purpose, target=d.target,
                payload={} if broken else dict(d.payload), content_hash=d.content_hash,
                thread_ref=thread_ref, maybe_sent=was_maybe_sent(d.last_error),
            )
            return Claimed(d.id, d.channel, d.target, d.claimed_until, message, broken)

    async def _earlier_unfinished(self, session: AsyncSession, d: Delivery) -> bool:
        count = (
            await session.execute(
                select(func.count()).select_from(Delivery).where(
                    Delivery.alert_id == d.alert_id, Delivery.channel == d.channel,
                    Delivery.target == d.target, Delivery.id < d.id, Delivery.state.in_(UNFINISHED),
                )
            )
        ).scalar_one()
        return bool(count)

    async def _release(self, delivery_id: int, claimed_until: datetime, at: datetime) -> None:
        async with self.sessions.begin() as session:
            await release(session, delivery_id, self.worker_id, claimed_until, at)
        if delivery_id in self.pacer.in_flight:
            del self.pacer.in_flight[delivery_id]  # given back: the process's claims may take it
            if at <= self.ctx.clock.now():
                self.bell.ring()  # due now: claimed at once, not at the next poll

    async def _record_many(self, results: list[Result]) -> None:
        """Record outcomes in one transaction; nothing is reported (metrics, logs) before it commits."""
        after: list[Callable[[], None]] = []
        async with self.sessions.begin() as session:
            held = await _load_rows(session, [claimed.delivery_id for claimed, _, _ in results])
            later = _Later()
            for claimed, outcome, duration_ms in results:
                await self._record(session, claimed, outcome, duration_ms, after, later)
            await later.write(session, self.ctx)
            del held
        for report in after:
            report()

    async def _record(
        self, session: AsyncSession, claimed: Claimed, outcome: Outcome, duration_ms: int,
        after: list[Callable[[], None]], later: _Later,
    ) -> None:
        """Apply transition.next_step to the row, and write what it asks for (its thread and its
        audit entry with the batch's others, in `later`)."""
        now = self.ctx.clock.now()
        d = await session.get(Delivery, claimed.delivery_id)
        assert d is not None
        alert = await session.get(Alert, d.alert_id) if d.alert_id else None
        facts = DeliveryFacts(
            d.state, holds_row(d, self.worker_id, claimed.claimed_until), d.attempts, d.created_at,
            d.channel, d.purpose, AlertBrief(alert.kind, alert.severity, alert.state) if alert else None,
        )
        step = next_step(facts, outcome, self.policy, now)
        if step.update is not None:
            _apply(d, step.update, outcome, now)
            if isinstance(outcome, Sent) and d.alert_id is not None:
                later.threads.append(_thread_row(d, outcome.external_ref, now))
        error, kind = step.error, step.outcome
        session.add(DeliveryAttempt(
            delivery_id=d.id, attempted_at=now, outcome=kind, error=error, duration_ms=duration_ms
        ))
        later.entries.append(Entry(
            actor="system", action=f"delivery.{kind}", subject=d.alert_id or "",
            purpose=delivery_purpose(d.purpose, d.receiver, alert.kind if alert else None, kind),
            nominals=nominals_of(alert.visor_ref if alert else None),
            details={
                "delivery": d.id, "receiver": d.receiver, "channel": d.channel, "target": d.target,
                "change": d.purpose, "content_hash": d.content_hash, "attempt": d.attempts,
                **({"error": error} if error else {}),
                **({"next_attempt_at": d.next_attempt_at.isoformat()} if kind == "retry" else {}),
            },
        ))
        after.append(self._reporter(d, kind, error, dead=step.dead_lettered))
        if alert is not None and (step.fall_back or step.report_dead):
            # What follows writes entries and reads threads of its own: the batch's so far first,
            # so that the audit log keeps the order recording one message at a time gives it.
            await later.write(session, self.ctx)
        if alert is not None and step.fall_back:
            await self._fall_back(session, d, alert, error or "", after)
        if alert is not None and step.report_dead:
            await _report_dead(session, d, alert, self.ctx, unbuildable=step.unbuildable)

    def _reporter(self, d: Delivery, kind: str, error: str | None, *, dead: bool) -> Callable[[], None]:
        # Read now: after the commit the row's attributes are expired (reading them is I/O).
        delivery_id, channel, target, receiver, alert_id = d.id, d.channel, d.target, d.receiver, d.alert_id

        def report() -> None:
            self.metrics.attempts.labels(channel, kind).inc()
            if dead:
                self.metrics.dead.labels(channel).inc()
                log.warning(
                    "delivery %d dead-lettered: %s to %s (%s) for alert %s: %s",
                    delivery_id, channel, target, receiver, alert_id, error,
                )
            elif kind == "retry":
                log.info("delivery %d: %s to %s will be retried: %s", delivery_id, channel, target, error)

        return report

    async def _fall_back(
        self, session: AsyncSession, d: Delivery, alert: Alert, error: str, after: list[Callable[[], None]]
    ) -> None:
        if await _has_fallback(session, alert.id, d.target):
            return
        fallback = await enqueue_fallback(session, alert, d, error, self.ctx)
        if fallback is None:
            return
        message = (
            "alert %s (%s): Slack delivery %d to %s failing (%s); emailing %s instead",
            alert.id, alert.severity, d.id, d.target, error, fallback,
        )

        def report() -> None:
            self.metrics.fallbacks.inc()
            log.warning(*message)

        after.append(report)
        await record(
            session, self.ctx, actor="system", action="delivery.fallback", subject=alert.id,
            purpose=f"chat delivery failing, so the alert goes by email instead to be acted on: {alert.kind}",
            nominals=nominals_of(alert.visor_ref),
            details={"failed_delivery": d.id, "channel": d.channel, "target": d.target,
                     "error": error[:500], "fallback_to": fallback},
        )

def _apply(d: Delivery, update: RowUpdate, outcome: Outcome, now: datetime) -> None:
    d.state, d.attempts, d.last_error = update.state, update.attempts, update.last_error
    d.claimed_by, d.claimed_until = None, None
    if update.next_attempt_at is not None:
        d.next_attempt_at = update.next_attempt_at
    if isinstance(outcome, Sent):
        d.sent_at, d.external_ref = now, outcome.external_ref


async def _report_dead(
    session: AsyncSession, d: Delivery, alert: Alert, ctx: Context, *, unbuildable: bool = False
) -> None:
    """A message that will never arrive is itself an alert, to the admins: one per failing address
    while it stays live, so a wrong channel id raises one alert, not one per message. A message
    that could not be built says so (the address is fine; the alert's data is not)."""
    if unbuildable:
        subject = f"unbuildable:{d.channel}:{d.target}"
        summary = (
            f"A message to {d.channel} {d.target} ({d.receiver}) could not be built from the "
            f"alert's data and was dead-lettered; first for alert {alert.id}. The address is "
            "not at fault: see `casewatch outbox dead` and the audit log (delivery.dead)"
        )
    else:
        subject = f"{d.channel}:{d.target}"
        summary = (
            f"Messages to {d.channel} {d.target} ({d.receiver}) cannot be delivered; "
            f"first for alert {alert.id}. Check the address and the audit log (delivery.dead)"
        )
    reported = await live_alert(session, DELIVERY_FAILED, SYSTEM_REF, subject[:200])
    if reported is not None and reported.state == "acknowledged":
        # Acknowledged ("after fixing the address", docs/alerts.md), yet failing again: the fix
        # did not hold, or the address broke anew. Kept live, it would take every later failure
        # silently; this one is a new report.
        await resolve(session, reported, "acknowledged; the address failed again", ctx)
    await open_alert(
        session,
        AlertSpec(
            kind=DELIVERY_FAILED,
            severity="high" if alert.severity in ("critical", "high") else "medium",
            visor_ref=SYSTEM_REF,
            team=alert.team,
            subject=subject[:200],
            summary=summary,
            details={"delivery": d.id, "alert": alert.id, "error": (d.last_error or "")[:300]},
        ),
        ctx,
    )


async def _thread(session: AsyncSession, alert_id: str, channel: str, target: str) -> AlertThread | None:
    stmt = select(AlertThread).where(
        AlertThread.alert_id == alert_id, AlertThread.channel == channel, AlertThread.target == target
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def _load_rows(session: AsyncSession, delivery_ids: list[int]) -> list[object]:
    """A batch's outbox rows and their alerts, in one statement, for `_record`'s session.get to
    find in the session instead of reading them one by one (two statements a message). Returned
    to be held while the batch is recorded: the session keeps an unchanged object only while
    something else refers to it.

    On PostgreSQL the outbox rows are locked as they are read (in id order), so that whether each
    is still this worker's (holds_row) stays true until the batch commits: another process's
    claim of a row whose lease lapsed meanwhile skips it (claim_rows: SKIP LOCKED) instead of
    taking it over under a batch that then overwrites its claim. On SQLite the batch's BEGIN
    IMMEDIATE already keeps every other writer out."""
    stmt = (
        select(Delivery, Alert).outerjoin(Alert, Alert.id == Delivery.alert_id)
        .where(Delivery.id.in_(delivery_ids))
        .order_by(Delivery.id)
        .with_for_update(of=Delivery)
    )
    return [found for row in (await session.execute(stmt)).all() for found in row if found is not None]


@dataclass
class _Later:
    """A record batch's thread rows and audit entries, written together (`write`): one statement
    for each kind of thread and one for the entries, instead of one each a message."""

    threads: list[dict[str, Any]] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    async def write(self, session: AsyncSession, ctx: Context) -> None:
        await _save_threads(session, self.threads)
        await record_many(session, ctx, self.entries)
        self.threads, self.entries = [], []


def _thread_row(d: Delivery, external_ref: str, now: datetime) -> dict[str, Any]:
    assert d.alert_id is not None
    return {
        "alert_id": d.alert_id, "channel": d.channel, "target": d.target, "external_ref": external_ref,
        "created_at": now,
    }


async def _save_threads(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Each alert's first message at each destination: a new row; on Slack an existing row takes
    the new ts when it differs (the first message was gone and posted anew); an email thread keeps
    its first Message-ID. One executemany a channel kind, the rows in the order sent, so that two
    of one thread in a batch end as they would one after the other."""
    dialect = session.get_bind().dialect.name
    for slack in (True, False):
        mine = [row for row in rows if (row["channel"] == "slack") == slack]
        if mine:
            await session.execute(_thread_upsert(dialect, slack), mine)


_THREADS = AlertThread.metadata.tables[AlertThread.__tablename__]


@cache
def _thread_upsert(dialect: str, slack: bool) -> Any:
    """_save_threads' statement, built once a dialect and channel kind; the rows' values are its
    parameters. Building it anew for each message (an INSERT with the values in it, then its
    ON CONFLICT clause) was ~40% of recording a sent message (bench/README, "(fifteenth session)")."""
    insert: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_THREADS)
    key = ["alert_id", "channel", "target"]
    if slack:
        return insert.on_conflict_do_update(
            index_elements=key, set_={"external_ref": insert.excluded.external_ref},
            where=_THREADS.c.external_ref != insert.excluded.external_ref,
        )
    return insert.on_conflict_do_nothing(index_elements=key)


async def _has_fallback(session: AsyncSession, alert_id: str, target: str) -> bool:
    payloads = (
        await session.execute(
            select(Delivery.payload).where(Delivery.alert_id == alert_id, Delivery.purpose == "fallback")
        )
    ).scalars()
    return any((p or {}).get("fallback", {}).get("target") == target for p in payloads)
