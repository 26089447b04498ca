"""One mail, however it arrived: read it, then either ingest its `travel.border_alert` event or
keep it for a person. Both commit before handle() returns, so a caller marks the mail processed
(IMAP keyword, LMTP 250) only after its outcome is durable. A database that cannot be reached
raises (casewatch.store.errors.is_unavailable): the mail is then left as it was, to be read again.
Anything else that goes wrong while reading a mail (a parser bug, hostile input nobody foresaw)
keeps it for a person with a fixed reason: no mail escapes both the event and the kept item.

A mail not from an allowed sender is "ignored": neither read (past its From header) nor kept.

Idempotent: the event id derives from what the report says (the nominal, direction, time of
check, port), so the same check reported twice, even under another Message-ID, is one event; a
kept mail's external id derives from its Message-ID (or its body), so a mail read twice is kept once.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from casewatch.config.inbound_mail import InboundMailSection
from casewatch.context import Context
from casewatch.ingest.inbound import keep_now
from casewatch.ingest.pipeline import ingest
from casewatch.ingest.schema import parse_envelopes
from casewatch.model.names import name_key
from casewatch.store.errors import is_unavailable
from casewatch.store.models import Nominal
from integrations.mail_ingest.extract import (
    Mail,
    NotAllowed,
    Report,
    Unreadable,
    body_sha256,
    check_sender,
    extract,
    parse_mail,
)
from integrations.mail_ingest.template import Template

log = logging.getLogger(__name__)
SOURCE = "mail"
MEDIA_TYPE = "message/rfc822"
# Why a mail was kept when reading it failed in a way nobody foresaw: fixed, as the exception's
# text may quote the mail (it goes to chat).
FAILED_REASON = "reading it failed (an error in casewatch's reader; the mail is kept as received)"
RECENT_OUTCOMES = 100

Kind = Literal["ingested", "duplicate", "kept", "ignored"]


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    event_id: str | None = None
    item_id: int | None = None  # the inbound item, when kept
    reason: str | None = None  # why it was kept (no personal data)
    alerts: list[str] = field(default_factory=list)  # alerts the event opened
    failed: bool = False  # kept because reading it failed (a fault of ours, FAILED_REASON)


class Tally:
    """What a reader or listener did in this process: counts by kind, and the last
    RECENT_OUTCOMES outcomes (iterating yields those, oldest first)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.recent: deque[Outcome] = deque(maxlen=RECENT_OUTCOMES)
        self.unhandled = 0  # mails that raised and were left for a retry (IMAP unmarked, LMTP 451)

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.kind] += 1
        if outcome.failed:
            self.counts["failed"] += 1
        self.recent.append(outcome)

    def __iter__(self) -> Iterator[Outcome]:
        return iter(self.recent)

    def __len__(self) -> int:
        return len(self.recent)

    @property
    def total(self) -> int:
        return sum(self.counts[kind] for kind in ("ingested", "duplicate", "kept", "ignored"))

    @property
    def any_failed(self) -> bool:
        """A mail was kept because reading it failed, or could not be handled at all."""
        return bool(self.counts["failed"] or self.unhandled)

    def summary(self) -> str:
        c = self.counts
        text = (
            f"{self.total} mail(s): {c['ingested']} border alert(s) stored, {c['duplicate']} "
            f"duplicate(s), {c['kept']} kept for a person, {c['ignored']} not from an allowed sender "
            "(left unread)"
        )
        if c["failed"]:
            text += f"; reading {c['failed']} failed (kept)"
        if self.unhandled:
            text += f"; {self.unhandled} could not be handled (left for a retry)"
        return text


def event_id_for(report: Report, visor_ref: str) -> str:
    """From what the report says, not how it was sent: the same check re-sent (a new Message-ID,
    another forward) is the same event."""
    port = " ".join(report.port.casefold().split())
    checked_at = report.checked_at.astimezone(UTC).isoformat()
    what = "|".join(["border-check", visor_ref, report.direction, checked_at, port])
    return "mail-" + hashlib.sha256(what.encode()).hexdigest()[:40]


def kept_id_for(raw: bytes, mail: Mail | None) -> str:
    if mail is None:
        return "raw-" + body_sha256(raw)
    return f"{mail.key}:{mail.body_sha256[:16]}"


def _first_forename(forenames: str) -> str:
    words = forenames.split()
    return name_key(words[0]) if words else ""


async def nominal_by_name(
    sessions: async_sessionmaker[AsyncSession],
    surname: str,
    date_of_birth: date,
    forenames: str | None = None,
) -> str | None:
    """The ViSOR reference of the one nominal with this surname (folded) and date of birth, and,
    when the report gives forenames, the same first forename (folded); None when there is none or
    more than one."""
    key = name_key(surname)
    if not key:
        return None
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Nominal.visor_ref, Nominal.forenames)
                .where(Nominal.surname_key == key, Nominal.date_of_birth == date_of_birth)
                .limit(50)
            )
        ).all()
    if forenames and (first := _first_forename(forenames)):
        rows = [row for row in rows if _first_forename(row.forenames) == first]
    return str(rows[0].visor_ref) if len(rows) == 1 else None


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
        only the beginning was fetched (IMAP) or received (LMTP)."""
        try:
            check_sender(raw, self.allowed_senders)
        except NotAllowed:
            log.info("mail-ingest: a mail not from an allowed sender was not read")
            return Outcome("ignored")
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
            return await self._read(raw, mail)
        except Unreadable as problem:
            return await self._keep(raw, kept_id_for(raw, mail), str(problem))
        except Exception as exc:
            if is_unavailable(exc):
                raise
            # The type only: an exception's text may quote the mail.
            log.error("mail-ingest: reading a mail failed (%s); kept for a person", type(exc).__name__)
            return await self._keep(raw, kept_id_for(raw, mail), FAILED_REASON, failed=True)

    async def keep_as_is(self, raw: bytes, external_id: str, reason: str) -> Outcome:
        """Keep `raw` for a person, unread, for a reason the caller found (an empty message)."""
        return await self._keep(raw, external_id, reason)

    async def _read(self, raw: bytes, mail: Mail) -> Outcome:
        report = extract(mail, self.template)
        kept_id = kept_id_for(raw, mail)
        now = self.ctx.clock.now()
        skew = self.ctx.settings.ingest.max_clock_skew_seconds
        if report.checked_at > now + timedelta(seconds=skew):
            return await self._keep(
                raw, kept_id, "checked_at is in the future (check the year)", visor_ref=report.visor_ref
            )
        visor_ref = report.visor_ref
        if visor_ref is None:
            assert report.surname is not None and report.date_of_birth is not None
            visor_ref = await nominal_by_name(
                self.sessions, report.surname, report.date_of_birth, report.forenames
            )
            if visor_ref is None:
                return await self._keep(
                    raw, kept_id,
                    "no ViSOR reference, and the name and date of birth match no single nominal",
                )
        checked_at = report.checked_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        envelope = {
            "id": event_id_for(report, visor_ref),
            "type": "travel.border_alert",
            "occurred_at": checked_at,
            "visor_ref": visor_ref,
            "data": {"port": report.port, "direction": report.direction, "checked_at": checked_at},
        }
        envelopes, errors = parse_envelopes(envelope, now=now, max_ahead_seconds=skew)
        if errors:
            fields = ", ".join(sorted({e.field or "(envelope)" for e in errors}))
            return await self._keep(
                raw, kept_id, f"a field is not valid: {fields}", visor_ref=report.visor_ref
            )
        result = await ingest(self.sessions, envelopes, self.ctx, source=SOURCE)
        kind: Kind = "ingested" if result.accepted else "duplicate"
        log.info("mail-ingest: border alert %s (%s)", envelope["id"], kind)
        return Outcome(kind, event_id=str(envelope["id"]), alerts=list(result.alerts))

    async def _keep(
        self,
        content: bytes,
        external_id: str,
        reason: str,
        *,
        visor_ref: str | None = None,
        failed: bool = False,
    ) -> Outcome:
        kept = await keep_now(
            self.sessions, self.ctx, source=SOURCE, external_id=external_id[:200], reason=reason,
            content=content, media_type=MEDIA_TYPE, team=self.config.team or None, visor_ref=visor_ref,
        )
        log.warning(
            "mail-ingest: kept as inbound item %d%s: %s",
            kept.item_id, " (kept before)" if kept.duplicate else "", reason,
        )
        alerts = [kept.alert_id] if kept.alert_id else []
        return Outcome("kept", item_id=kept.item_id, reason=reason, alerts=alerts, failed=failed)
