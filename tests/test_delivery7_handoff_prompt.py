"""Rows handed to a delivery worker start at once even while its loop waits for a claim (seventh
session, issue 17): on SQLite a poll's claim waits for the one connection behind the very
transaction that hands the rows, and the rows waited for that claim too (3-4 ms in the bench)."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.bell import Handoff, OutboxBell
from casewatch.delivery.claim import ClaimedRow
from casewatch.store.engine import make_sessionmaker
from integrations.mail_sink import MailSink
from tests.slack_standin import SlackStandIn
from tests.test_delivery_handoff import _all_sent, _settings, _until, _worker, mail_fixture  # noqa: F401
from tests.test_delivery_support import make_ctx, open_test_alert, setup_directory, slack_fixture  # noqa: F401


async def test_handed_rows_are_sent_while_the_workers_claim_is_still_waiting(
    engine: AsyncEngine, slack: SlackStandIn, mail: MailSink
) -> None:
    settings = _settings(slack, mail, poll_seconds=60)
    ctx = make_ctx(settings)
    bell, handoff = OutboxBell(), Handoff(limit=20)
    sessions = make_sessionmaker(engine, after_outbox_commit=bell.ring, handoff=handoff)
    await setup_directory(sessions, settings)
    worker = _worker(sessions, ctx, "w-prompt", bell=bell, handoff=handoff)
    plain_claim = worker._claim
    in_claim, claim_may_end = asyncio.Event(), asyncio.Event()
    claims = 0

    async def slow_claim(*, spare_in_flight: bool = False) -> list[ClaimedRow]:
        nonlocal claims
        claims += 1
        if claims == 2:  # the second claim (a ring below) waits until the test lets it go
            in_claim.set()
            await claim_may_end.wait()
        return await plain_claim(spare_in_flight=spare_in_flight)

    worker._claim = slow_claim  # type: ignore[method-assign]
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run_forever(stop))
    try:
        await _until(_one_claim(lambda: claims))
        bell.ring()  # as an acknowledgement's commit would: the worker claims again, and waits there
        await asyncio.wait_for(in_claim.wait(), 5)
        await open_test_alert(sessions, ctx)
        await _until(lambda: _all_sent(sessions, 2), within=5)
        assert not claim_may_end.is_set() and claims == 2  # sent while the claim still waited
        assert len(slack.calls_to("chat.postMessage")) == 1 and len(mail.messages) == 1
    finally:
        claim_may_end.set()
        stop.set()
        await asyncio.wait_for(running, 10)


def _one_claim(count: object) -> object:
    async def check() -> bool:
        return count() >= 1  # type: ignore[operator]

    return check
