"""Recording outcomes in fewer statements (eighth session, issue 17): each sent message's thread
written in one upsert instead of a read and an insert. The same deliveries, attempts, threads and
audit entries in a batch as recording each outcome alone; a Slack thread takes a new ts when it
differs, an email thread keeps its first Message-ID. Since the fifteenth session a batch reads its
rows with their alerts in one statement before recording (not each by its key), and writes its
threads and audit entries together; on PostgreSQL that read locks the rows, so a lease lapsing
mid-batch cannot hand a row to another claim under the batch (sixteenth session's review).
Real SQLite and PostgreSQL, two fresh databases a run."""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.delivery import worker as worker_module
from casewatch.delivery.claim import claim_rows
from casewatch.delivery.notifier import Outcome, Permanent, Retryable, Sent
from casewatch.delivery.worker import DeliveryWorker, Result, _claimed
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import AlertThread, AuditEntry, Delivery, DeliveryAttempt
from tests.support import renamed
from tests.test_delivery_handoff import DELIVERY, two_urls  # noqa: F401 (fixture)
from tests.test_delivery_support import clock_of, make_ctx, make_settings, open_test_alert, setup_directory

REFS = ("VS-0000001", "VS-0000002", "VS-0000003")


ALL_SENT: list[Outcome] = [Sent(f"new-{i}") for i in range(1, 7)]

STATEMENT_KINDS = {
    "thread_reads": r"FROM alert_threads",  # a thread read before its write
    "gets": r"FROM (deliveries|alerts)\s+WHERE (deliveries|alerts)\.id = ",  # a row by its key (session.get)
    "loads": r"FROM deliveries LEFT OUTER JOIN alerts",  # the batch's rows with their alerts
    "upserts": r"^INSERT INTO alert_threads",
    "entries": r"INSERT INTO audit_log",
}


async def _scenario(
    url: str, *, batched: bool, outcomes: list[Outcome] | None = None
) -> tuple[dict[str, Any], Counter[str]]:
    """Three alerts, two deliveries each (Slack channel, SPOC inbox), all claimed; the first alert's
    threads already exist (a Slack ts and a Message-ID that differ from what is sent now). Then six
    outcomes (by default sent, sent, a retry, a permanent failure, sent, sent) recorded in one batch
    or one at a time. What the database holds afterwards, and the statements recording sent, by kind
    (STATEMENT_KINDS)."""
    engine = make_engine(url)
    seen: Counter[str] = Counter()
    try:
        settings = make_settings(delivery=DELIVERY)
        ctx = make_ctx(settings)
        sessions = make_sessionmaker(engine)
        await setup_directory(sessions, settings)
        alerts = [(await open_test_alert(sessions, ctx, visor_ref=ref)).id for ref in REFS]
        clock_of(ctx).advance(timedelta(seconds=1))
        worker = DeliveryWorker(sessions, ctx, {}, worker_id="w-0", rng=random.Random(8))  # the same jitter
        rows = await worker._claim()
        assert len(rows) == 6
        async with sessions.begin() as session:
            first = select(Delivery).where(Delivery.alert_id == alerts[0])
            for d in (await session.execute(first)).scalars():
                session.add(AlertThread(alert_id=alerts[0], channel=d.channel, target=d.target,
                                        external_ref=f"old-{d.channel}", created_at=ctx.clock.now()))
        outcomes = outcomes or [Sent("new-1"), Sent("new-2"), Retryable("busy"), Permanent("refused"),
                                Sent("new-5"), Sent("new-6")]
        results: list[Result] = [(_claimed(r), outcome, 3) for r, outcome in zip(rows, outcomes, strict=True)]
        def counted(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            seen.update(kind for kind, pattern in STATEMENT_KINDS.items() if re.search(pattern, statement))

        event.listen(engine.sync_engine, "before_cursor_execute", counted)
        for batch in [results] if batched else [[r] for r in results]:
            await worker._record_many(batch)
        event.remove(engine.sync_engine, "before_cursor_execute", counted)  # not _state's reads
        return await _state(sessions, alerts), seen
    finally:
        await engine.dispose()


async def _state(sessions: async_sessionmaker[AsyncSession], alerts: list[str]) -> dict[str, Any]:
    """The rows, alert ids (random) named by their order and payload hashes (which cover them) by
    their delivery: the scenario's alerts first, then any opened while recording (a dead letter's)."""
    names = {alert_id: f"alert-{i}" for i, alert_id in enumerate(alerts)}
    async with sessions() as session:
        for d in (await session.execute(select(Delivery).order_by(Delivery.id))).scalars():
            if d.alert_id and d.alert_id not in names:
                names[d.alert_id] = f"alert-{len(names)}"
            names[d.content_hash] = f"hash-{d.id}"

    def plain(value: Any) -> Any:
        return renamed(value, names)

    async with sessions() as session:
        rows = (await session.execute(select(Delivery).order_by(Delivery.id))).scalars().all()
        attempts = (await session.execute(select(DeliveryAttempt).order_by(DeliveryAttempt.id))).scalars()
        threads = (await session.execute(select(AlertThread).order_by(AlertThread.alert_id))).scalars().all()
        audit = (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all()
        return {
            "deliveries": [plain({
                "id": d.id, "alert": d.alert_id, "purpose": d.purpose, "receiver": d.receiver,
                "channel": d.channel, "target": d.target, "payload": d.payload, "hash": d.content_hash,
                "state": d.state, "attempts": d.attempts, "claimed": (d.claimed_by, d.claimed_until),
                "last_error": d.last_error, "sent_at": d.sent_at, "ref": d.external_ref,
                "next": d.next_attempt_at,
            }) for d in rows],
            "attempts": [(a.delivery_id, a.attempted_at, a.outcome, a.error, a.duration_ms)
                         for a in attempts],
            "threads": sorted(plain([t.alert_id, t.channel, t.target, t.external_ref]) for t in threads),
            "audit": [plain({"at": e.at, "actor": e.actor, "action": e.action, "subject": e.subject,
                             "purpose": e.purpose, "details": e.details, "nominals": e.nominals})
                      for e in audit],
        }


async def test_a_batch_records_what_each_outcome_alone_records(two_urls: tuple[str, str]) -> None:  # noqa: F811
    batched, batched_sent = await _scenario(two_urls[0], batched=True)
    alone, alone_sent = await _scenario(two_urls[1], batched=False)
    assert batched == alone
    # What was recorded, so that the comparison is not of two wrong records.
    states = [d["state"] for d in alone["deliveries"]]
    assert states[:6] == ["sent", "sent", "pending", "dead", "sent", "sent"]
    assert len(states) == 8  # the dead letter's fallback email and its system.delivery_failed alert's
    assert [a[2] for a in alone["attempts"]] == ["sent", "sent", "retry", "dead", "sent", "sent"]
    assert [e["action"] for e in alone["audit"] if e["action"].startswith("delivery.")] == [
        "delivery.sent", "delivery.sent", "delivery.retry", "delivery.dead", "delivery.fallback",
        "delivery.sent", "delivery.sent"]
    by_alert = {(t[0], t[1]): t[3] for t in alone["threads"]}
    assert by_alert[("alert-0", "slack")] == "new-2"  # a Slack thread posted anew takes the new ts
    assert by_alert[("alert-0", "email")] == "old-email"  # an email thread keeps its first Message-ID
    assert by_alert[("alert-2", "email")] == "new-5" and by_alert[("alert-2", "slack")] == "new-6"
    assert ("alert-1", "slack") not in by_alert and ("alert-1", "email") not in by_alert  # not sent
    assert batched_sent["thread_reads"] == alone_sent["thread_reads"] == 0  # one upsert a thread, no read
    # Four sent messages: alone, an upsert each; in the batch, one executemany a channel kind
    # (fifteenth session) at the dead letter in the middle (the two sent before it, a Slack one and
    # an email) and one a kind at the end (the two after it).
    assert (alone_sent["upserts"], batched_sent["upserts"]) == (4, 4)
    # Each outcome's row and alert are read before it is recorded, with the batch's others (one
    # statement a batch, fifteenth session), not by key; the dead letter's fallback reads one row
    # by key either way.
    assert (alone_sent["gets"], batched_sent["gets"]) == (1, 1)


async def test_a_batch_of_sent_messages_writes_its_threads_and_entries_together(
    two_urls: tuple[str, str],  # noqa: F811
) -> None:
    """Six messages sent (three alerts, a Slack post and an email each; the first alert's threads
    exist): the same rows either way; alone, every message reads its row with its alert and writes
    its thread and its audit entry; the batch reads all rows with their alerts in one statement,
    writes the threads in one executemany a channel kind and the entries in one statement."""
    batched, batched_sent = await _scenario(two_urls[0], batched=True, outcomes=ALL_SENT)
    alone, alone_sent = await _scenario(two_urls[1], batched=False, outcomes=ALL_SENT)
    assert batched == alone
    assert [d["state"] for d in alone["deliveries"]] == ["sent"] * 6
    sent = [e["action"] for e in alone["audit"] if e["action"].startswith("delivery.")]
    assert sent == ["delivery.sent"] * 6
    by_alert = {(t[0], t[1]): t[3] for t in alone["threads"]}
    assert len(by_alert) == 6 and by_alert[("alert-0", "email")] == "old-email"
    assert by_alert[("alert-0", "slack")].startswith("new-")  # the Slack thread takes the new ts
    assert (alone_sent["loads"], batched_sent["loads"]) == (6, 1)
    assert alone_sent["gets"] == batched_sent["gets"] == 0
    assert (alone_sent["upserts"], batched_sent["upserts"]) == (6, 2)
    assert (alone_sent["entries"], batched_sent["entries"]) == (6, 1)


@pytest.mark.postgres
async def test_a_lease_lapsing_mid_batch_does_not_hand_a_batch_row_to_another_claim(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two alerts, four rows claimed by w-0; a batch records two of them (A first, then B), both
    refused for good. While A's dead letter is reported, another process's claim runs with every
    lease lapsed. It takes the two rows outside the batch, and neither A nor B: the batch's read
    locked them. So B is recorded as w-0's (dead), and no other worker holds it. Without the lock
    the claim took B, and the batch then dead-lettered a row another worker was sending."""
    engine, other = make_engine(pg_url), make_engine(pg_url)
    try:
        settings = make_settings(delivery=DELIVERY)
        ctx = make_ctx(settings)
        sessions = make_sessionmaker(engine)
        await setup_directory(sessions, settings)
        for ref in REFS[:2]:
            await open_test_alert(sessions, ctx, visor_ref=ref)
        clock_of(ctx).advance(timedelta(seconds=1))
        worker = DeliveryWorker(sessions, ctx, {}, worker_id="w-0", rng=random.Random(8))
        rows = sorted(await worker._claim(), key=lambda r: r.id)
        assert len(rows) == 4
        a, b = rows[0], rows[3]
        lapsed = max(r.claimed_until for r in rows) + timedelta(seconds=1)
        taken: list[int] = []
        real_report_dead = worker_module._report_dead

        async def report_dead_while_another_claims(*args: Any, **kwargs: Any) -> None:
            if not taken:
                async with make_sessionmaker(other).begin() as session:
                    claimed = await claim_rows(session, "w-other", lapsed, lapsed + timedelta(seconds=60), 10)
                taken.extend(r.id for r in claimed)
            await real_report_dead(*args, **kwargs)

        monkeypatch.setattr(worker_module, "_report_dead", report_dead_while_another_claims)
        await worker._record_many([(_claimed(row), Permanent("refused"), 3) for row in (a, b)])

        assert sorted(taken) == [rows[1].id, rows[2].id]  # the claim ran, and took what it may
        async with sessions() as session:
            states = {
                r.id: (r.state, r.claimed_by)
                for r in (await session.execute(select(Delivery).order_by(Delivery.id))).scalars()
            }
            b_attempts = (await session.execute(
                select(DeliveryAttempt.outcome).where(DeliveryAttempt.delivery_id == b.id)
            )).scalars().all()
        assert states[a.id] == ("dead", None) and states[b.id] == ("dead", None)
        assert states[rows[1].id] == states[rows[2].id] == ("sending", "w-other")
        assert b_attempts == ["dead"]
    finally:
        await engine.dispose()
        await other.dispose()
