"""New alerts' deliveries handed to this process's delivery worker in memory (bell.Handoff): written
already claimed by it in the transaction that queues them, started after the commit without a
claim transaction. The same rows, messages, attempts and audit entries as the plain path (claimed
by a worker); nothing sent twice across processes; a handed row never sent is given back at stop,
or claimed again by anyone once its lease lapses; without a running worker (CLI, scan) rows are
queued unclaimed as before. Real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from casewatch.bell import Claimer, Handoff, OutboxBell
from casewatch.context import Context
from casewatch.delivery.claim import ClaimedRow, claim_rows
from casewatch.delivery.worker import DeliveryWorker
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import AuditEntry, Delivery, DeliveryAttempt
from integrations.mail_sink import MailSink
from integrations.notifiers import build_notifiers
from tests.conftest import _pg_admin, pg_database_url
from tests.slack_standin import SlackStandIn
from tests.support import renamed
from tests.test_delivery_support import (
    clock_of,
    deliveries,
    make_ctx,
    make_settings,
    open_test_alert,
    setup_directory,
    slack_fixture,  # noqa: F401
)

DELIVERY = {"send_timeout_seconds": 5, "lease_seconds": 60, "chat_interval_seconds": 0,
            "email_interval_seconds": 0}
REFS = ("VS-0000001", "VS-0000002", "VS-0000003")


def _settings(slack: SlackStandIn, mail: MailSink, **delivery: Any) -> Any:
    return make_settings(slack_url=slack.url, smtp_port=mail.port, delivery={**DELIVERY, **delivery})


def _worker(
    sessions: async_sessionmaker[AsyncSession], ctx: Context, worker_id: str, *,
    bell: OutboxBell | None = None, handoff: Handoff | None = None,
) -> DeliveryWorker:
    return DeliveryWorker(
        sessions, ctx, build_notifiers(ctx.settings, keep_alive=False), worker_id=worker_id, bell=bell,
        handoff=handoff,
    )


def _count_claims(worker: DeliveryWorker) -> list[list[ClaimedRow]]:
    """Each claim transaction the worker runs, with what it claimed."""
    claims: list[list[ClaimedRow]] = []
    plain = worker._claim

    async def counted(*, spare_in_flight: bool = False) -> list[ClaimedRow]:
        rows = await plain(spare_in_flight=spare_in_flight)
        claims.append(rows)
        return rows

    worker._claim = counted  # type: ignore[method-assign]
    return claims


async def _until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _all_sent(sessions: async_sessionmaker[AsyncSession], count: int) -> bool:
    rows = await deliveries(sessions)
    return len(rows) == count and all(r.state == "sent" for r in rows)


@pytest.fixture(name="mail")
def mail_fixture() -> Any:
    sink = MailSink().start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
async def two_urls(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[str, str]]:
    """`db_url` and a second fresh, migrated database of the same kind."""
    if db_url.startswith("sqlite"):
        second = tmp_path / "second.db"
        shutil.copyfile(db_url.removeprefix("sqlite+aiosqlite:///"), second)
        yield db_url, f"sqlite+aiosqlite:///{second}"
        return
    name = f"cw_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f"CREATE DATABASE {name} TEMPLATE {request.getfixturevalue('pg_template')}")
    try:
        yield db_url, pg_database_url(name)
    finally:
        await _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_a_new_alerts_deliveries_start_without_a_claim(
    engine: AsyncEngine, slack: SlackStandIn, mail: MailSink
) -> None:
    """With a poll of 60 s, only the handoff can deliver at once; the worker claims once, at its
    start, and never for the alerts opened while it runs; no bell is rung for them."""
    settings = _settings(slack, mail, poll_seconds=60)
    ctx = make_ctx(settings)
    bell, handoff = OutboxBell(), Handoff(limit=20)
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring, handoff=handoff)
    await setup_directory(sessions, settings)
    worker = _worker(sessions, ctx, "w-handoff", bell=bell, handoff=handoff)
    claims = _count_claims(worker)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(stop))
    try:
        await _until(lambda: _claimed_once(claims))
        for n, ref in enumerate(REFS, start=1):
            await open_test_alert(sessions, ctx, visor_ref=ref)
            await _until(lambda n=n: _all_sent(sessions, 2 * n), within=5)  # type: ignore[misc]
        assert claims == [[]]
        assert bell.rings == 0
        assert len(slack.calls_to("chat.postMessage")) == 3 and len(mail.messages) == 3
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)


async def _claimed_once(claims: list[list[ClaimedRow]]) -> bool:
    return len(claims) == 1


async def test_a_handed_row_is_what_the_claim_would_have_read(engine: AsyncEngine) -> None:
    """Row by row: the rows written claimed, and what was handed over, against the same rows put
    back unclaimed and claimed by claim_rows with the same worker, instant and lease."""
    settings = make_settings(delivery=DELIVERY)
    ctx = make_ctx(settings)
    handoff = Handoff(limit=20)
    sessions = make_sessionmaker(engine, handoff=handoff)
    await setup_directory(sessions, settings)
    handoff.attach(Claimer("w-0", 60))
    await open_test_alert(sessions, ctx, visor_ref="VS-0000001")
    handed = handoff.take(20)
    written = [_claim_columns(d) for d in await deliveries(sessions)]
    assert [r.id for r in handed] == [d["id"] for d in written] and len(handed) == 2

    async with sessions.begin() as session:  # as the plain path writes them
        for d in (await session.execute(select(Delivery))).scalars():
            d.state, d.claimed_by, d.claimed_until = "pending", None, None
    now = ctx.clock.now()
    async with sessions.begin() as session:
        claimed = await claim_rows(session, "w-0", now, now + timedelta(seconds=60), 20)
    assert handed == claimed
    assert [_claim_columns(d) for d in await deliveries(sessions)] == written


def _claim_columns(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "state": d.state, "claimed_by": d.claimed_by, "claimed_until": d.claimed_until,
            "attempts": d.attempts, "next_attempt_at": d.next_attempt_at, "last_error": d.last_error}


async def _run_scenario(url: str, slack: SlackStandIn, mail: MailSink, *, handed: bool) -> dict[str, Any]:
    """Three alerts opened one after another while a worker runs (owning the handoff, or not),
    each sent before the next; what the database and the receivers hold afterwards, alert ids
    (random) and the payload hashes that cover them named by their order."""
    engine = make_engine(url)
    try:
        settings = _settings(slack, mail, poll_seconds=0.05)
        ctx = make_ctx(settings)
        bell, handoff = OutboxBell(), Handoff(limit=20) if handed else None
        sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring, handoff=handoff)
        await setup_directory(sessions, settings)
        worker = _worker(sessions, ctx, "w-0", bell=bell, handoff=handoff)
        claims = _count_claims(worker)
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run_forever(stop))
        alert_ids: list[str] = []
        posts_before, mails_before = len(slack.calls_to("chat.postMessage")), len(mail.messages)
        try:
            for n, ref in enumerate(REFS, start=1):
                alert_ids.append((await open_test_alert(sessions, ctx, visor_ref=ref)).id)
                await _until(lambda n=n: _all_sent(sessions, 2 * n), within=5)  # type: ignore[misc]
                clock_of(ctx).advance(timedelta(seconds=5))
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)
        names = {alert_id: f"alert-{i}" for i, alert_id in enumerate(alert_ids)}
        # A payload's hash covers its alert id: named by its row (both paths hash before they part).
        names.update({d.content_hash: f"hash-{d.id}" for d in await deliveries(sessions)})

        def plain(value: Any) -> Any:
            return renamed(value, names)

        async with sessions() as session:
            rows = (await session.execute(select(Delivery).order_by(Delivery.id))).scalars().all()
            attempts = (await session.execute(select(DeliveryAttempt).order_by(DeliveryAttempt.id))).scalars()
            audit = (await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all()
        posts = slack.calls_to("chat.postMessage")[posts_before:]
        return {
            "handed_claims": sum(1 for rows_ in claims if rows_),
            "deliveries": [
                plain({"id": d.id, "alert": d.alert_id, "purpose": d.purpose, "receiver": d.receiver,
                       "channel": d.channel, "target": d.target, "payload": d.payload,
                       "content_hash": d.content_hash, "state": d.state, "attempts": d.attempts,
                       "claimed": (d.claimed_by, d.claimed_until), "last_error": d.last_error,
                       "sent_at": d.sent_at, "created_at": d.created_at, "ref": bool(d.external_ref)})
                for d in rows
            ],
            # Sorted: on PostgreSQL one alert's two destinations record in transactions of their own,
            # in either order (on both paths).
            "attempts": sorted((a.delivery_id, a.attempted_at, a.outcome, a.error) for a in attempts),
            "audit": sorted(
                (plain({"at": e.at, "actor": e.actor, "action": e.action, "subject": e.subject,
                        "purpose": e.purpose, "details": e.details, "nominals": e.nominals})
                 for e in audit),
                key=lambda e: (e["at"], e["subject"], e["action"], e["details"].get("delivery", 0)),
            ),
            "slack": [plain({k: v for k, v in call.args.items() if k != "metadata"}) for call in posts],
            "mail": [(m["To"], plain(m["Subject"]), plain(m.get_body(("plain",)).get_content()))  # type: ignore[union-attr]
                     for m in mail.messages[mails_before:]],
        }
    finally:
        await engine.dispose()


async def test_handed_and_claimed_give_the_same_rows_messages_and_audit(
    two_urls: tuple[str, str], slack: SlackStandIn, mail: MailSink
) -> None:
    plain = await _run_scenario(two_urls[0], slack, mail, handed=False)
    handed = await _run_scenario(two_urls[1], slack, mail, handed=True)
    assert plain.pop("handed_claims") == 3 and handed.pop("handed_claims") == 0  # the paths differ...
    assert handed == plain  # ...and nothing else does
    assert len(plain["deliveries"]) == 6 and len(plain["slack"]) == 3 and len(plain["mail"]) == 3
    assert [e["action"] for e in plain["audit"]].count("delivery.sent") == 6


async def test_another_process_never_takes_a_handed_row(
    db_url: str, slack: SlackStandIn, mail: MailSink
) -> None:
    """Two processes' workers (their own engines, pacers and bells) polling every 50 ms: the rows
    process A hands its worker are under a live lease, so B's claims never see them; each
    message goes once."""
    settings = _settings(slack, mail, poll_seconds=0.05)
    engine_a, engine_b = make_engine(db_url), make_engine(db_url)
    try:
        ctx = make_ctx(settings)
        handoff = Handoff(limit=20)
        sessions_a = make_sessionmaker(engine_a, handoff=handoff)
        sessions_b = make_sessionmaker(engine_b)
        await setup_directory(sessions_a, settings)
        worker_a = _worker(sessions_a, ctx, "A-0", handoff=handoff)
        worker_b = _worker(sessions_b, ctx, "B-0")
        claims_b = _count_claims(worker_b)
        stop = asyncio.Event()
        running = [asyncio.create_task(w.run_forever(stop)) for w in (worker_a, worker_b)]
        try:
            await asyncio.sleep(0.2)  # both polling
            for ref in REFS:
                await open_test_alert(sessions_a, ctx, visor_ref=ref)
            await _until(lambda: _all_sent(sessions_a, 6))
            claimed_by_then = len(claims_b)

            async def b_polled_again() -> bool:  # B polled after the rows were sent, too
                return len(claims_b) > max(3, claimed_by_then)

            await _until(b_polled_again)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*running), 10)
        assert len(claims_b) > 3 and all(rows == [] for rows in claims_b)
        rows = await deliveries(sessions_a)
        assert [(r.state, r.attempts) for r in rows] == [("sent", 1)] * 6
        assert len(slack.calls_to("chat.postMessage")) == 3 and len(mail.messages) == 3
    finally:
        await engine_a.dispose()
        await engine_b.dispose()


async def test_a_handed_row_never_sent_is_claimed_again_once_its_lease_lapses(
    engine: AsyncEngine, slack: SlackStandIn, mail: MailSink
) -> None:
    """The process that wrote the rows claimed died before sending them: nobody may take them
    while the lease runs; after it, any worker sends each once (as a re-send after a crash)."""
    settings = _settings(slack, mail)
    ctx = make_ctx(settings)
    handoff = Handoff(limit=20)
    sessions = make_sessionmaker(engine, handoff=handoff)
    await setup_directory(sessions, settings)
    handoff.attach(Claimer("dead-process:0", 60))
    await open_test_alert(sessions, ctx, visor_ref="VS-0000001")
    rows = await deliveries(sessions)
    assert [(r.state, r.claimed_by) for r in rows] == [("sending", "dead-process:0")] * 2
    other = _worker(make_sessionmaker(engine), ctx, "other:0")
    assert await other.run_once() == 0  # the lease is live
    clock_of(ctx).advance(timedelta(seconds=61))
    assert await other.run_until_idle() == 2
    rows = await deliveries(sessions)
    assert [(r.state, r.attempts) for r in rows] == [("sent", 1), ("sent", 1)]
    assert len(slack.calls_to("chat.postMessage")) == 1 and len(mail.messages) == 1


async def test_stop_gives_back_the_rows_handed_but_not_started(
    engine: AsyncEngine, slack: SlackStandIn, mail: MailSink
) -> None:
    settings = _settings(slack, mail)
    ctx = make_ctx(settings)
    handoff = Handoff(limit=20)
    sessions = make_sessionmaker(engine, handoff=handoff)
    await setup_directory(sessions, settings)
    worker = _worker(sessions, ctx, "w-0", handoff=handoff)
    handoff.attach(Claimer("w-0", 60))  # as run_forever does; the rows come before it takes any
    await open_test_alert(sessions, ctx, visor_ref="VS-0000001")
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(worker.run_forever(stop), 10)
    rows = await deliveries(sessions)
    assert [(r.state, r.claimed_by, r.claimed_until, r.attempts) for r in rows] == [
        ("pending", None, None, 0)
    ] * 2
    assert all(r.next_attempt_at <= ctx.clock.now() for r in rows)
    assert slack.calls_to("chat.postMessage") == [] and mail.messages == []
    assert handoff.room(1) is None  # no owner any more: rows are queued unclaimed
    await open_test_alert(sessions, ctx, visor_ref="VS-0000002")
    assert [r.state for r in await deliveries(sessions)] == ["pending"] * 4
    assert await _worker(sessions, ctx, "w-1").run_until_idle() == 4


async def test_without_a_running_worker_rows_are_queued_unclaimed_and_ring(engine: AsyncEngine) -> None:
    """The CLI import and `casewatch scan` run no delivery worker: their rows are written as
    before (pending, unclaimed) and the bell rings; so are the rows of a commit bigger than the
    handoff's limit, and every change but a new alert's."""
    settings = make_settings(delivery=DELIVERY)
    ctx = make_ctx(settings)
    bell, handoff = OutboxBell(), Handoff(limit=1)
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring, handoff=handoff)
    await setup_directory(sessions, settings)
    await open_test_alert(sessions, ctx, visor_ref="VS-0000001")
    assert bell.rings == 1
    handoff.attach(Claimer("w-0", 60))
    await open_test_alert(sessions, ctx, visor_ref="VS-0000002")  # two rows, over the limit of one
    assert bell.rings == 2 and handoff.take(20) == []
    rows = await deliveries(sessions)
    assert [(r.state, r.claimed_by, r.claimed_until) for r in rows] == [("pending", None, None)] * 4
