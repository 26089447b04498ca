"""`casewatch inbound list|show|done`: the items a feed kept because it could not read them.

`show` prints an item for the person the feed.unreadable alert went to; the item is as received
and hostile until read by a person, so it reaches the terminal through safe_text.printable (no
control or escape sequence survives) unless `--raw FILE` writes the exact bytes to a new file.
Every `show` and `done` is audited (the item may hold personal data); `show` prints only once its
audit entry is committed.

Exit codes: 0 done; 1 no such item; 2 could not run (or --raw names a file that exists).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from email import policy
from email.parser import BytesParser

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from casewatch.alerts.lifecycle import resolve
from casewatch.audit import record
from casewatch.clock import SystemClock
from casewatch.commands._support import configure_logging, on_database, seal_audit
from casewatch.commands.audit_export import cli_actor
from casewatch.config import load_config
from casewatch.context import Context
from casewatch.routing.purposes import nominals_of
from casewatch.safe_text import printable
from casewatch.store.engine import make_sessionmaker
from casewatch.store.models import Alert, InboundItem

_TEXT_TYPES = ("text/", "message/", "application/json")
_MAIL_HEADERS = ("From", "To", "Date", "Subject", "Message-ID")


def run(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    configure_logging(settings)
    ctx = Context(settings, SystemClock())
    command = args.inbound_command

    async def body(engine: AsyncEngine) -> int:
        sessions = make_sessionmaker(engine)
        shown: InboundItem | None = None
        async with sessions() as session, session.begin():
            if command == "list":
                stmt = select(
                    InboundItem.id, InboundItem.source, InboundItem.received_at, InboundItem.reason,
                    InboundItem.size, InboundItem.team, InboundItem.alert_id, InboundItem.state,
                ).order_by(InboundItem.id)
                if not args.all:
                    stmt = stmt.where(InboundItem.state == "kept")
                rows = (await session.execute(stmt)).all()
                for r in rows:
                    print(
                        f"{r.id}\t{r.source}\t{r.received_at.isoformat(timespec='seconds')}\t{r.state}\t"
                        f"{r.team or '-'}\t{r.alert_id or '-'}\t{r.size} B\t{printable(r.reason)}"
                    )
                print(f"{len(rows)} item(s)", file=sys.stderr)
                return 0
            item = await session.get(InboundItem, args.id)
            if item is None:
                print(f"casewatch inbound: no item {args.id}", file=sys.stderr)
                return 1
            actor = cli_actor()
            if command == "show":
                shown = item  # shown once the view is audited and committed, as the chronology is
                action, purpose = "inbound.viewed", "a kept feed item read by the person dealing with it"
            elif item.state == "reviewed":
                # The first record stands: who dealt with it, and when its retention began.
                when = item.reviewed_at.isoformat(timespec="seconds") if item.reviewed_at else "?"
                print(f"item {item.id} was already recorded as dealt with by {item.reviewed_by} at {when}")
                return 0
            else:
                item.state, item.reviewed_by, item.reviewed_at = "reviewed", actor, ctx.clock.now()
                action, purpose = "inbound.reviewed", "a kept feed item recorded as dealt with"
                alert = await session.get(Alert, item.alert_id) if item.alert_id else None
                if alert is not None and await resolve(session, alert, "the kept item was dealt with", ctx):
                    print(f"item {item.id} recorded as dealt with; alert {alert.id} resolved")
                else:
                    print(f"item {item.id} recorded as dealt with")
            await record(
                session, ctx, actor=actor, action=action, subject=f"{item.source}:{item.id}",
                purpose=purpose, details={"item": item.id}, nominals=nominals_of(item.visor_ref),
            )
        await seal_audit(sessions, ctx)
        if shown is not None:
            try:
                _show(shown, getattr(args, "raw", None))
            except OSError as exc:
                print(f"casewatch inbound: cannot write {args.raw}: {exc.strerror}", file=sys.stderr)
                return 2
        return 0

    return asyncio.run(on_database(settings, args.config or "", "inbound", body))


def _show(item: InboundItem, raw_path: str | None) -> None:
    print(f"item {item.id} from {item.source}, received {item.received_at.isoformat(timespec='seconds')}")
    print(f"why kept: {printable(item.reason)}")
    print(f"type {printable(item.media_type)}, {item.size} bytes, sha256 {item.content_sha256}")
    print(f"alert {item.alert_id or '-'}, state {item.state}")
    if raw_path:
        # O_EXCL: never overwrite a file; 0600: the item may hold personal data.
        fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(item.content)
        print(f"the exact bytes are in {raw_path}")
        return
    print("-" * 72)
    if item.media_type == "message/rfc822":
        print(_mail_text(item.content))
    elif item.media_type.startswith(_TEXT_TYPES):
        print(printable(item.content.decode("utf-8", errors="replace"), keep_lines=True))
    else:
        print(item.content.hex(" ", 16))


def _mail_text(raw: bytes) -> str:
    """A kept email as a person reads it: the main headers with encoded words decoded, then each
    text part decoded (base64, quoted-printable, its charset), all through printable; the raw
    message if it cannot be parsed."""
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        lines = [f"{name}: {printable(message.get(name, ''))}" for name in _MAIL_HEADERS if name in message]
        for number, part in enumerate(message.walk(), start=1):
            if part.is_multipart() or part.get_content_maintype() != "text":
                continue
            text = part.get_content()
            lines += ["", f"[part {number}: {printable(part.get_content_type())}]",
                      printable(text if isinstance(text, str) else "", keep_lines=True)]
        return "\n".join(lines)
    except Exception:  # noqa: BLE001 (a message the parser cannot take is shown as received)
        return printable(raw.decode("utf-8", errors="replace"), keep_lines=True)
