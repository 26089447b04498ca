"""Group commit for the events API: requests that arrive while an ingest transaction is running
wait for it to end and are then stored together, in one transaction and one commit, instead of
one after another. A lone request is stored at once, as before; under steady load a group waits
up to GATHER_SECONDS for the requests the last one answered (GroupCommit._gather). Every request
is answered only after the commit that holds its events, with what `ingest` would have answered
it alone.

Requests are grouped only when applying them together cannot change what either does: their
ViSOR references, action ids and event ids are disjoint, so no event of one reads or writes the
state (nominal, action, meetings, orders, recalls, live alerts) an event of another touches, and
the rules of each see what they would have seen in their own transaction. Each alert opened is
given back to the request whose reference it is about; one that cannot be placed so, or any
failure of the group's transaction, rolls the group back and each request is then stored alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.context import Context
from casewatch.ingest.pipeline import _RNG, IngestResult, _ingest_with_retries, ingest
from casewatch.model.events import ActionUpsert, Envelope
from casewatch.store.errors import is_unavailable
from casewatch.store.models import Alert

log = logging.getLogger(__name__)

MAX_GROUP_EVENTS = 1000  # a group is never larger than one batch may be
# When fewer requests are waiting than the last group held, a group waits for the others while
# they keep coming: until none has arrived for GATHER_SECONDS, and GATHER_SECONDS *
# GATHER_ROUNDS at most (see GroupCommit._gather).
GATHER_SECONDS = 0.002
GATHER_ROUNDS = 4


class _Unattributable(Exception):
    """An alert opened by a group is about a reference none of its requests names."""


@dataclass
class _Waiting:
    envelopes: Sequence[Envelope]
    done: asyncio.Future[IngestResult]
    keys: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, envelopes: Sequence[Envelope]) -> _Waiting:
        keys: set[str] = set()
        for e in envelopes:
            keys.update((f"ref:{e.visor_ref}", f"id:{e.id}"))
            if isinstance(e.data, ActionUpsert):
                keys.add(f"action:{e.data.action_id}")
        done: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        # A request cancelled while it waits leaves its outcome unread: not an error to report.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        return cls(envelopes, done, frozenset(keys))


class GroupCommit:
    """One per service (sessions and context): `ingest` here instead of pipeline.ingest."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], ctx: Context, *, source: str,
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.ctx = ctx
        self.source = source
        self.gather_seconds = gather_seconds
        self._queue: list[_Waiting] = []
        self._runner: asyncio.Task[None] | None = None
        # Requests in the last transaction and those waiting when it ended: how many requests
        # the senders keep going under the present load.
        self._circulating = 0
        self._arrived = asyncio.Event()  # set by each request queued; _gather waits on it
        self.groups = 0  # transactions that stored more than one request (for tests and bench)
        self.transactions = 0  # transactions run, alone or grouped (for tests and bench)

    async def ingest(self, envelopes: Sequence[Envelope]) -> IngestResult:
        waiting = _Waiting.of(envelopes)
        self._queue.append(waiting)
        self._arrived.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._drain())
        return await asyncio.shield(waiting.done)

    async def _drain(self) -> None:
        while self._queue:
            await self._gather()
            group = self._take()
            self.transactions += 1
            if len(group) == 1:
                await self._alone(group[0])
            else:
                await self._together(group)
            self._circulating = len(group) + len(self._queue)

    async def _gather(self) -> None:
        """Before a transaction, when fewer requests wait than the last transaction held plus
        those that waited at its end, wait for as many while they keep coming: until none has
        arrived for gather_seconds, gather_seconds * GATHER_ROUNDS at most (a commit delay, as
        PostgreSQL's commit_delay). Under steady load the requests the last group answered are on
        their way back, one after another (each is read, checked and parsed in turn); without the
        wait an early one takes a transaction of its own (its fixed reads and commit) and the
        rest the next: at 8 requesters the groups alternated 1 and 7. A lone requester never
        waits; after a burst, the first request alone waits once."""
        if self.gather_seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gather_seconds * GATHER_ROUNDS
        while len(self._queue) < self._circulating:
            if self._run_length() < len(self._queue):
                return  # a conflict (or the size cap) already ends the next group: no arrival joins it
            wait = min(self.gather_seconds, deadline - loop.time())
            if wait <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._arrived.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Waiting]:
        """The longest run of waiting requests, in arrival order, that may be stored together."""
        group = self._queue[: self._run_length()]
        del self._queue[: len(group)]
        return group

    def _run_length(self) -> int:
        """How many waiting requests, from the first, may be stored together (at least one)."""
        keys = set(self._queue[0].keys)
        events = len(self._queue[0].envelopes)
        for length, nxt in enumerate(self._queue[1:], start=1):
            if not keys.isdisjoint(nxt.keys) or events + len(nxt.envelopes) > MAX_GROUP_EVENTS:
                return length
            keys.update(nxt.keys)
            events += len(nxt.envelopes)
        return len(self._queue)

    async def _alone(self, waiting: _Waiting) -> None:
        try:
            result = await ingest(self.sessions, waiting.envelopes, self.ctx, source=self.source)
        except Exception as exc:  # noqa: BLE001 (handed to the request, which raises it)
            _settle(waiting, exc)
        else:
            _settle(waiting, result)

    async def _together(self, group: list[_Waiting]) -> None:
        envelopes = [e for w in group for e in w.envelopes]
        owner = {e.visor_ref: i for i, w in enumerate(group) for e in w.envelopes}

        async def alert_refs(session: AsyncSession, alert_ids: Sequence[str]) -> dict[str, str]:
            stmt = select(Alert.id, Alert.visor_ref).where(Alert.id.in_(alert_ids))
            rows = (await session.execute(stmt)).all()
            refs = {str(i): str(ref) for i, ref in rows}
            if set(refs) != set(alert_ids) or not set(refs.values()) <= set(owner):
                raise _Unattributable
            return refs

        try:
            merged, refs = await _ingest_with_retries(
                self.sessions, envelopes, self.ctx, self.source, asyncio.sleep, _RNG, alert_refs
            )
        except Exception as exc:  # noqa: BLE001 (handed to the requests, or each stored alone)
            if is_unavailable(exc):
                # The database is away, or the connection dropped (perhaps during the commit, whose
                # outcome is then unknown): every request answers 503 at once and its sender
                # retries (idempotent), instead of each waiting out its own failure in turn.
                for waiting in group:
                    _settle(waiting, exc)
                return
            log.info(
                "ingest: a group of %d requests is stored one by one (%s)", len(group), type(exc).__name__
            )
            for waiting in group:
                await self._alone(waiting)
            return
        self.groups += 1
        for i, waiting in enumerate(group):
            _settle(waiting, _share(waiting, merged, [a for a in merged.alerts if owner[refs[a]] == i]))


def _share(waiting: _Waiting, merged: IngestResult, alerts: list[str]) -> IngestResult:
    """One request's part of a group's result: its events stored, its duplicates (event ids are
    disjoint across a group, so a duplicate is one stored before or repeated within itself)."""
    stored = {e.id for e in waiting.envelopes} & merged.stored
    return IngestResult(
        accepted=len(stored), duplicates=len(waiting.envelopes) - len(stored), alerts=alerts,
        retries=merged.retries, stored=stored,
    )


def _settle(waiting: _Waiting, outcome: IngestResult | BaseException) -> None:
    if waiting.done.done():
        return
    if isinstance(outcome, BaseException):
        waiting.done.set_exception(outcome)
    else:
        waiting.done.set_result(outcome)
