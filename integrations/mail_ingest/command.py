"""`casewatch mail-ingest [--config PATH] [--once]`: border-alert mail into events, per
[inbound_mail] mode: "imap" reads the mailbox (with --once: what is there now, then exits);
"lmtp" listens for a forwarding rule until SIGINT/SIGTERM. Exit 0; 1: --once met an IMAP or
database problem (nothing unprocessed was marked), or reading a mail failed (a fault of ours: the
mail was kept for a person, or left unmarked for a retry); 2: could not start (configuration,
template, database not migrated)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from aioimaplib import aioimaplib

from casewatch.clock import SystemClock
from casewatch.commands._support import configure_logging, directory_problem, schema_problem, seal_audit
from casewatch.config import ConfigError, Settings, load_config
from casewatch.context import Context
from casewatch.directory import sync_directory
from casewatch.store.engine import make_engine, make_sessionmaker
from casewatch.store.errors import is_unavailable
from integrations.mail_ingest.imap import ImapProblem, ImapReader
from integrations.mail_ingest.lmtp import LmtpListener
from integrations.mail_ingest.process import MailProcessor
from integrations.mail_ingest.template import Template, TemplateError, load_template

log = logging.getLogger(__name__)


def _say(text: str) -> None:
    print(f"casewatch mail-ingest: {text}", file=sys.stderr)


# Their INFO lines would log each SMTP command (addresses) or IMAP exchange.
QUIET_LOGGERS = ("mail.log", "aioimaplib", "aioimaplib.aioimaplib")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        _say(str(exc))
        return 2
    configure_logging(settings)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    config = settings.inbound_mail
    once = bool(getattr(args, "once", False))
    if config.mode == "off":
        _say('[inbound_mail] mode is "off": set it to "imap" or "lmtp" (see config.example.toml)')
        return 2
    if once and config.mode != "imap":
        _say('--once reads a mailbox: it needs [inbound_mail] mode = "imap"')
        return 2
    if refused := directory_problem(settings, "mail-ingest"):
        _say(refused)
        return 2
    try:
        template = load_template(config.template)
    except TemplateError as exc:
        _say(f"[inbound_mail] template: {exc}")
        return 2
    return asyncio.run(_main(settings, template, args.config or "", once))


async def _main(settings: Settings, template: Template, config_hint: str, once: bool) -> int:
    engine = make_engine(settings.database.url, pool_size=settings.database.pool_size)
    try:
        if problem := await schema_problem(engine, config_hint):
            _say(problem)
            return 2
        sessions = make_sessionmaker(engine)
        async with sessions.begin() as session:
            await sync_directory(session, settings)
        ctx = Context(settings, SystemClock())
        processor = MailProcessor(sessions, ctx, settings.inbound_mail, template)
        if not processor.allowed_senders:
            log.warning("mail-ingest: no allowed_senders (nor template senders): mail from anyone is read")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            if settings.inbound_mail.mode == "imap":
                return await _imap(processor, settings, stop, once)
            return await _lmtp(processor, settings, stop)
        finally:
            await seal_audit(sessions, ctx)
    finally:
        await engine.dispose()


async def _imap(processor: MailProcessor, settings: Settings, stop: asyncio.Event, once: bool) -> int:
    config = settings.inbound_mail
    reader = ImapReader(processor, config)
    _say(f"reading {config.mailbox} on {config.host}:{config.port} ({config.security})")
    try:
        await reader.run(stop, once=once)
    except (TimeoutError, aioimaplib.AioImapException, ImapProblem, OSError) as exc:
        _say(f"IMAP: {type(exc).__name__}: {exc} ({reader.handled.summary()} before)")
        return 1
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        _say(f"database unavailable ({reader.handled.summary()} before; the rest stays unmarked)")
        return 1
    _say(reader.handled.summary())
    return 1 if reader.handled.any_failed else 0


async def _lmtp(processor: MailProcessor, settings: Settings, stop: asyncio.Event) -> int:
    config = settings.inbound_mail
    try:
        listener = await LmtpListener(
            processor, config.listen_host, config.listen_port, config.max_message_bytes
        ).start()
    except (OSError, ValueError) as exc:
        _say(f"LMTP: cannot listen on {config.listen_host}:{config.listen_port}: {exc}")
        return 2
    _say(f"LMTP listening on {config.listen_host}:{listener.port}; Ctrl-C stops")
    try:
        await stop.wait()
    finally:
        await listener.stop()
    _say(listener.handler.outcomes.summary())
    return 0
