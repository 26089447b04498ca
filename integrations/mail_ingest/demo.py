"""The demo's border-alert mail: a sample report for one demo nominal, sent through the real LMTP
path (a listener on a free loopback port, smtplib speaking LMTP to it, the listener stopped)."""

from __future__ import annotations

import asyncio
import smtplib
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.context import Context
from integrations.mail_ingest.lmtp import LmtpListener
from integrations.mail_ingest.process import MailProcessor, Outcome
from integrations.mail_ingest.samples import SAMPLE_SENDER, SAMPLE_TO, border_alert_mail
from integrations.mail_ingest.template import load_template


def _deliver(port: int, raw: bytes) -> None:
    with smtplib.LMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(SAMPLE_SENDER, [SAMPLE_TO], raw)


async def send_sample_border_alert(
    sessions: async_sessionmaker[AsyncSession],
    ctx: Context,
    visor_ref: str,
    *,
    checked_at: datetime | None = None,
) -> Outcome:
    """Deliver a sample report for `visor_ref` (checked an hour before the context's clock, an
    arrival at a fictional port) to a listener started for it; the outcome of the mail."""
    config = ctx.settings.inbound_mail.model_copy(update={"allowed_senders": [SAMPLE_SENDER]})
    template = load_template(config.template)
    processor = MailProcessor(sessions, ctx, config, template)
    at = (checked_at or ctx.clock.now() - timedelta(hours=1)).astimezone(template.timezone)
    raw = border_alert_mail(
        visor_ref,
        port="Testport Ferry Terminal (fictional)",
        checked=at.strftime("%d/%m/%Y %H:%M"),
        message_id=f"<demo-{visor_ref}-{at:%Y%m%d%H%M}@borderforce.example>",
    )
    listener = await LmtpListener(processor, "127.0.0.1", 0, config.max_message_bytes).start()
    try:
        await asyncio.to_thread(_deliver, listener.port, raw)
    finally:
        await listener.stop()
    [outcome] = listener.handler.outcomes
    return outcome
