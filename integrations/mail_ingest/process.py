"""One mail, however it arrived: read it, then either ingest its `travel.border_alert` event or
keep it for a person. Both commit before handle() returns, so a caller marks the mail processed
(IMAP keyword, LMTP 250) only after its outcome is durable. A database that cannot be reached
raises (casewatch.store.errors.is_unavailable): the mail is then left as it was, to be read again.

Idempotent: the event id derives from the mail's Message-ID (or its body) and what it says, and
a kept mail's external id from the same, so a mail read twice is a duplicate the second time.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, date
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.config.inbound_mail import InboundMailSection
from casewatch.context import Context
from casewatch.ingest.inbound import keep_now
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.model.names import name_key
from casewatch.store.models import Nominal
from integrations.mail_ingest.extract import Mail, Report, Unreadable, body_sha256, extract, parse_mail
from integrations.mail_ingest.template import Template

log = logging.getLogger(__name__)
SOURCE = "mail"
MEDIA_TYPE = "message/rfc822"


@dataclass(frozen=True)
class Outcome:
    kind: Literal["ingested", "duplicate", "kept"]
    event_id: str | None = None
    item_id: int | None = None  # the inbound item, when kept
    reason: str | None = None  # why it was kept (no personal data)
    alerts: list[str] = field(default_factory=list)  # alerts the event opened


def event_id_for(mail: Mail, report: Report, visor_ref: str) -> str:
    what = "|".join([mail.key, visor_ref, report.direction, report.checked_at.isoformat(), report.port])
    return "mail-" + hashlib.sha256(what.encode()).hexdigest()[:40]


def kept_id_for(raw: bytes, mail: Mail | None) -> str:
    if mail is None:
        return "raw-" + body_sha256(raw)
    return f"{mail.key}:{mail.body_sha256[:16]}"


async def nominal_by_name(
    sessions: async_sessionmaker[AsyncSession], surname: str, date_of_birth: date
) -> str | None:
    """The ViSOR reference of the one nominal with this surname (folded) and date of birth; None
    when there is none or more than one."""
    key = name_key(surname)
    if not key:
        return None
    async with sessions() as session:
        refs = (
            await session.execute(
                select(Nominal.visor_ref)
                .where(Nominal.surname_key == key, Nominal.date_of_birth == date_of_birth)
                .limit(2)
            )
        ).scalars().all()
    return refs[0] if len(refs) == 1 else None


class MailProcessor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        ctx: Context,
        config: InboundMailSection,
        template: Template,
    ) -> None:
        self.sessions = sessions
        self.ctx = ctx
        self.config = config
        self.template = template
        allowed = [s.lower() for s in config.allowed_senders] or sorted(template.senders)
        self.allowed_senders = frozenset(allowed)

    async def handle(self, raw: bytes, *, size: int | None = None) -> Outcome:
        """`raw`: the mail's bytes (at most max_message_bytes of them); `size`: its whole size when
        only the beginning was fetched."""
        whole = len(raw) if size is None else size
        if whole > self.config.max_message_bytes:
            return await self._keep(
                raw[: self.config.max_message_bytes], "big-" + hashlib.sha256(raw).hexdigest(),
                f"larger than max_message_bytes ({whole} bytes; the first "
                f"{min(len(raw), self.config.max_message_bytes)} kept)",
            )
        mail: Mail | None = None
        try:
            mail = parse_mail(raw)
            if self.allowed_senders and mail.sender not in self.allowed_senders:
                raise Unreadable("not from an expected sender (allowed_senders)")
            report = extract(mail, self.template)
        except Unreadable as problem:
            return await self._keep(raw, kept_id_for(raw, mail), str(problem))
        visor_ref = report.visor_ref
        if visor_ref is None:
            assert report.surname is not None and report.date_of_birth is not None
            visor_ref = await nominal_by_name(self.sessions, report.surname, report.date_of_birth)
            if visor_ref is None:
                return await self._keep(
                    raw, kept_id_for(raw, mail),
                    "no ViSOR reference, and the name and date of birth match no single nominal",
                )
        checked_at = report.checked_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        envelope = {
            "id": event_id_for(mail, report, visor_ref),
            "type": "travel.border_alert",
            "occurred_at": checked_at,
            "visor_ref": visor_ref,
            "data": {"port": report.port, "direction": report.direction, "checked_at": checked_at},
        }
        envelopes, errors = parse_envelopes(envelope)
        if errors:
            fields = ", ".join(sorted({e.field or "(envelope)" for e in errors}))
            return await self._keep(raw, kept_id_for(raw, mail), f"a field is not valid: {fields}")
        result = await ingest(self.sessions, envelopes, self.ctx, source=SOURCE)
        kind: Literal["ingested", "duplicate"] = "ingested" if result.accepted else "duplicate"
        log.info("mail-ingest: border alert %s (%s)", envelope["id"], kind)
        return Outcome(kind, event_id=str(envelope["id"]), alerts=list(result.alerts))

    async def _keep(self, content: bytes, external_id: str, reason: str) -> Outcome:
        kept = await keep_now(
            self.sessions, self.ctx, source=SOURCE, external_id=external_id[:200], reason=reason,
            content=content, media_type=MEDIA_TYPE, team=self.config.team or None,
        )
        log.warning(
            "mail-ingest: kept as inbound item %d%s: %s",
            kept.item_id, " (kept before)" if kept.duplicate else "", reason,
        )
        alerts = [kept.alert_id] if kept.alert_id else []
        return Outcome("kept", item_id=kept.item_id, reason=reason, alerts=alerts)
