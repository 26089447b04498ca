"""Shared by the mail tests: a service with one fictional registered nominal, a MailProcessor on
it, and what the database holds afterwards."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import func, select

from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.models import Alert, Event, InboundItem
from casewatch.wiring import Service, stop
from integrations.mail_ingest.process import MailProcessor
from integrations.mail_ingest.template import load_template
from tests.support import envelope, make_service

REF = "VS-0001234"
UNKNOWN_REF = "VS-0009999"
SENDER = "warnings-index@borderforce.example"
# The sample's person (integrations/mail_ingest/samples): fictional.
NOMINAL = {"surname": "Testperson", "forenames": "Alex Sample", "date_of_birth": "1980-02-01"}
# The sample report's check: 19 Nov 2026 18:05 GMT, before the test clock (T0, 20 Nov).
CHECKED = "19/11/2026 18:05"


@asynccontextmanager
async def mail_service(db_url: str, **inbound_mail: Any) -> AsyncIterator[tuple[Service, MailProcessor]]:
    config = {"allowed_senders": [SENDER], "team": "north", **inbound_mail}
    service = await make_service(db_url, inbound_mail=config)
    try:
        envelopes, errors = parse_envelopes(
            envelope("nominal.upsert", id=f"mail-test-upsert-{REF}", visor_ref=REF, **NOMINAL)
        )
        assert not errors
        await ingest(service.sessions, envelopes, service.ctx, source="test")
        processor = MailProcessor(
            service.sessions, service.ctx, service.ctx.settings.inbound_mail, load_template(None)
        )
        yield service, processor
    finally:
        await stop(service)


async def border_events(service: Service) -> list[tuple[str, str]]:
    async with service.sessions() as session:
        rows = await session.execute(
            select(Event.id, Event.visor_ref).where(Event.type == "travel.border_alert").order_by(Event.id)
        )
        return [(r.id, r.visor_ref) for r in rows]


async def alert_kinds(service: Service, visor_ref: str | None = None) -> list[str]:
    async with service.sessions() as session:
        query = select(Alert.kind)
        if visor_ref is not None:
            query = query.where(Alert.visor_ref == visor_ref)
        return sorted((await session.execute(query)).scalars())


async def kept_items(service: Service) -> list[InboundItem]:
    async with service.sessions() as session:
        return list((await session.execute(select(InboundItem).order_by(InboundItem.id))).scalars())


async def count_events(service: Service) -> int:
    async with service.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(Event))).scalar_one())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
