"""Shared pieces of the routing, outbox, delivery and escalation tests (fictional data only).

Fixtures: `slack` (tests.slack_standin.SlackStandIn), `mail` (a real aiosmtpd server on
loopback, integrations.mail_sink.MailSink). Helpers build settings, a fixed clock, alerts through
casewatch.alerts.lifecycle.open_alert, and a worker whose sleeps advance the fixed clock.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.alerts.lifecycle import open_alert
from casewatch.clock import FixedClock
from casewatch.config import Settings, load_config
from casewatch.context import Context
from casewatch.delivery.pacing import Pacer
from casewatch.delivery.worker import DeliveryWorker
from casewatch.directory import sync_directory
from casewatch.model.alerts import AlertSpec
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.models import Alert, AuditEntry, Delivery, Marker, Nominal
from integrations.mail_sink import MailSink
from integrations.notifiers import build_notifiers
from tests.slack_standin import SlackStandIn

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TOKEN = "xoxb-test-token"

TEAM = {
    "id": "north",
    "name": "North MOSOVO",
    "channel": "C0NORTH",
    "spoc_email": "north.spoc@force.example",
    "supervisor_emails": ["sgt.north@force.example"],
    "npt_channels": {"N1": "C0NPTN1"},
}
OFFICERS = [
    {
        "id": "PC1234",
        "name": "PC Example",
        "email": "pc1234@force.example",
        "slack_user_id": "U0PC1234",
        "team": "north",
    },
    {"id": "PC5678", "name": "PC Mailonly", "email": "pc5678@force.example", "team": "north"},
]


def make_settings(
    *, slack_url: str = "http://127.0.0.1:9/api/", smtp_port: int = 9, **sections: dict[str, Any]
) -> Settings:
    data: dict[str, Any] = {
        "slack": {"mode": "http", "bot_token": TOKEN, "signing_secret": "s", "api_url": slack_url},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "timeout_seconds": 5},
        "teams": [TEAM],
        "officers": OFFICERS,
        "routing": {"control_room_channel": "C0CONTROL"},
        "delivery": {"send_timeout_seconds": 5, "lease_seconds": 60},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **values}
        else:
            data[name] = values
    return load_config(overrides=data, environ={})


def make_ctx(settings: Settings, at: datetime = T0) -> Context:
    return Context(settings, FixedClock(at))


def clock_of(ctx: Context) -> FixedClock:
    assert isinstance(ctx.clock, FixedClock)
    return ctx.clock


class ClockSleep:
    """An injected sleep: records how long it was asked to wait and moves the fixed clock (by
    `late` seconds more: a task woken late, as on a busy machine)."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.waits: list[float] = []
        self.late = 0.0

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(timedelta(seconds=seconds + self.late))


def make_worker(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    *,
    worker_id: str = "w1",
    notifiers: dict[str, Any] | None = None,
    pacer: Pacer | None = None,
) -> tuple[DeliveryWorker, ClockSleep]:
    sleep = ClockSleep(clock_of(ctx))
    worker = DeliveryWorker(
        sessions,
        ctx,
        notifiers if notifiers is not None else build_notifiers(ctx.settings, keep_alive=False),
        worker_id=worker_id,
        pacer=pacer,
        sleep=sleep,
        rng=random.Random(7),
    )
    return worker, sleep


async def setup_directory(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    async with sessions.begin() as session:
        await sync_directory(session, settings)


async def add_nominal(
    sessions: async_sessionmaker[AsyncSession],
    visor_ref: str = "VS-0000001",
    *,
    area: str = "N1",
    manager: str = "PC1234",
) -> None:
    async with sessions.begin() as session:
        session.add(
            Nominal(
                visor_ref=visor_ref,
                surname="Testperson",
                surname_key="testperson",
                forenames="Ada",
                date_of_birth=date(1970, 1, 2),
                category="1",
                mappa_level=2,
                registered=True,
                risk_level="high",
                lead_agency="police",
                team="north",
                offender_manager=manager,
                area=area,
                on_licence=True,
                no_fixed_abode=False,
                last_notification_on=None,
                release_date=None,
                licence_expiry=None,
                aliases=[],
                state_as_of=T0,
                level_as_of=None,
                updated_at=T0,
            )
        )
        session.add(Marker(visor_ref=visor_ref, code="VIOL", label="Violence", restricted=False))
        session.add(Marker(visor_ref=visor_ref, code="SECRET", label="Restricted thing", restricted=True))


async def open_test_alert(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    *,
    kind: str = "travel.unnotified",
    severity: str = "high",
    visor_ref: str = "VS-0000001",
    subject: str = "",
    owner: str | None = "PC1234",
) -> Alert:
    async with sessions.begin() as session:
        alert = await open_alert(
            session,
            AlertSpec(
                kind=kind,
                severity=severity,
                visor_ref=visor_ref,
                team="north",  # type: ignore[arg-type]
                subject=subject,
                summary=f"{kind} for {visor_ref}",
                owner=owner,
                due_at=T0 + timedelta(days=1),
            ),
            ctx,
        )
        assert alert is not None
        return alert


async def deliveries(sessions: async_sessionmaker[AsyncSession], **where: Any) -> list[Delivery]:
    async with sessions() as session:
        stmt = select(Delivery).order_by(Delivery.id)
        for key, value in where.items():
            stmt = stmt.where(getattr(Delivery, key) == value)
        return list((await session.execute(stmt)).scalars())


async def audits(sessions: async_sessionmaker[AsyncSession], action: str) -> list[AuditEntry]:
    async with sessions() as session:
        stmt = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        return list((await session.execute(stmt)).scalars())


@pytest.fixture(name="sessions")
async def sqlite_sessions_fixture(sqlite_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Imported by modules whose behaviour does not depend on the database (notifier faults,
    routing): SQLite only, to keep the suite fast. Claims, leases, races and transactions are
    tested on both databases elsewhere."""
    engine = make_engine(sqlite_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture(name="slack")
async def slack_fixture() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(token=TOKEN) as standin:
        yield standin


@pytest.fixture(name="mail")
def mail_fixture() -> Iterator[MailSink]:
    sink = MailSink().start()
    try:
        yield sink
    finally:
        sink.stop()
