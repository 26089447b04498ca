"""Border-alert mail through the real adapter (`python -m bench.feeds --only mail`).

For each database: a casewatch service's database and settings, fictional registered nominals,
and N distinct sample reports (integrations/mail_ingest/samples), each an unnotified border check
(one event stored, the border rules run, two alerts opened):
- "lmtp": the N mails delivered one after another over one LMTP connection (smtplib) to the
  listener, each answered 250 only after its commit;
- "imap": the N mails put into a throw-away Dovecot mailbox first (not timed), then one pass of
  the reader (fetch, handle, mark each), if Dovecot is installed;
- "baseline": the least work for the same job on the same database: parse each mail with `email`
  (policy=default), take its text, insert one row, commit, one mail at a time.
Timings on a shared 2-core machine are noisy: compare ratios within a run.
"""

from __future__ import annotations

import asyncio
import email
import logging
import shutil
import smtplib
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import text

from bench import harness
from bench.feeds.common import add_nominals, bench_settings
from casewatch.clock import SystemClock
from casewatch.config import Settings
from casewatch.store.engine import make_engine
from casewatch.store.migrate import upgrade
from casewatch.wiring import Service, create_service, stop
from integrations.mail_ingest.imap import ImapReader
from integrations.mail_ingest.lmtp import LmtpListener
from integrations.mail_ingest.process import MailProcessor
from integrations.mail_ingest.samples import SAMPLE_SENDER, SAMPLE_TO, border_alert_mail
from integrations.mail_ingest.template import load_template

ROOT = Path(__file__).resolve().parents[2]
NOMINALS = 100


def _settings(url: str, **inbound_mail: Any) -> Settings:
    return bench_settings(
        url, inbound_mail={"allowed_senders": [SAMPLE_SENDER], "team": "north", **inbound_mail}
    )


async def _nominals(service: Service) -> None:
    await add_nominals(service, [f"VS-M{n:06d}" for n in range(NOMINALS)])


_RUNS = ("lmtp", "imap", "baseline")


def _mails(what: str, total: int) -> list[bytes]:
    # The event id derives from what a report says: each run's checks at times of their own, so
    # the IMAP run's reports are new events, not duplicates of the LMTP run's.
    base = datetime.now(UTC) - timedelta(days=2 + _RUNS.index(what))
    return [
        border_alert_mail(
            f"VS-M{i % NOMINALS:06d}", checked=(base + timedelta(minutes=i)).strftime("%d/%m/%Y %H:%M"),
            message_id=f"<bench-{what}-{i}@borderforce.example>",
        )
        for i in range(total)
    ]


def _deliver_all(port: int, mails: list[bytes]) -> int:
    refused = 0
    with smtplib.LMTP("127.0.0.1", port, timeout=60) as client:
        for raw in mails:
            try:
                client.sendmail(SAMPLE_SENDER, [SAMPLE_TO], raw)
            except smtplib.SMTPException:
                refused += 1
    return refused


def _rate(count: int, seconds: float) -> dict[str, Any]:
    per_s = round(count / seconds, 1) if seconds else None
    return {"mails": count, "seconds": round(seconds, 3), "per_s": per_s}


async def _lmtp(processor: MailProcessor, mails: list[bytes]) -> dict[str, Any]:
    listener = await LmtpListener(processor, "127.0.0.1", 0, 1024 * 1024).start()
    try:
        started = time.perf_counter()
        refused = await asyncio.to_thread(_deliver_all, listener.port, mails)
        elapsed = time.perf_counter() - started
    finally:
        await listener.stop()
    ingested = listener.handler.outcomes.counts["ingested"]
    return {**_rate(len(mails), elapsed), "refused": refused, "ingested": ingested}


def _dovecot(action: str, directory: Path) -> subprocess.CompletedProcess[str]:
    script = str(ROOT / "scripts" / "dovecot-temp")
    return subprocess.run(["bash", script, action, str(directory)], capture_output=True, text=True)


def _dovecot_dir() -> Path | None:
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        return None
    directory = Path(tempfile.mkdtemp(prefix="casewatch-bench-dovecot-"))
    directory.chmod(0o755)  # as root, Dovecot's own users must reach it
    return directory


async def _imap(service: Service, processor: MailProcessor, mails: list[bytes]) -> dict[str, Any] | None:
    from aioimaplib import aioimaplib

    directory = await asyncio.to_thread(_dovecot_dir)
    if directory is None:
        return None
    try:
        started = await asyncio.to_thread(_dovecot, "start", directory)
        if started.returncode != 0:
            return {"error": started.stderr.strip()[-300:]}
        port, username, password = started.stdout.split()
        client = aioimaplib.IMAP4(host="127.0.0.1", port=int(port), timeout=30)
        await client.wait_hello_from_server()
        await client.login(username, password)
        for raw in mails:
            await client.append(raw, mailbox="INBOX")
        await client.logout()
        config = service.ctx.settings.inbound_mail.model_copy(update={
            "mode": "imap", "host": "127.0.0.1", "port": int(port), "security": "none",
            "username": username, "password": SecretStr(password),
        })
        reader = ImapReader(processor, config)
        began = time.perf_counter()
        await reader.run(asyncio.Event(), once=True)
        elapsed = time.perf_counter() - began
        return {**_rate(len(mails), elapsed), "ingested": reader.handled.counts["ingested"]}
    finally:
        await asyncio.to_thread(_dovecot, "stop", directory)
        await asyncio.to_thread(shutil.rmtree, directory, True)


async def _baseline(url: str, mails: list[bytes]) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(
                "CREATE TABLE IF NOT EXISTS bench_mail_baseline (id VARCHAR(200) PRIMARY KEY, body TEXT)"
            ))
        started = time.perf_counter()
        for raw in mails:
            message = email.message_from_bytes(raw, policy=policy.default)
            body = message.get_body(preferencelist=("plain", "html"))
            content = body.get_content() if body is not None else ""
            async with engine.begin() as conn:
                await conn.execute(
                    text("INSERT INTO bench_mail_baseline (id, body) VALUES (:id, :body)"),
                    {"id": str(message["Message-ID"]), "body": content},
                )
        return _rate(len(mails), time.perf_counter() - started)
    finally:
        await engine.dispose()


async def _one_database(kind: str, options: Any) -> dict[str, Any]:
    total = 40 if options.quick else (options.rows or 300)
    out: dict[str, Any] = {"mails_each": total}
    async with harness.database(kind, harness.Options(pg_url=options.pg_url)) as url:
        engine = make_engine(url)
        await upgrade(engine)
        await engine.dispose()
        service = await create_service(_settings(url), SystemClock())
        try:
            await _nominals(service)
            processor = MailProcessor(
                service.sessions, service.ctx, service.ctx.settings.inbound_mail, load_template(None)
            )
            out["lmtp"] = await _lmtp(processor, _mails("lmtp", total))
            imap = await _imap(service, processor, _mails("imap", total))
            if imap is not None:
                out["imap"] = imap
            out["baseline"] = await _baseline(url, _mails("baseline", total))
        finally:
            await stop(service)
    base = out["baseline"]["per_s"]
    for what in ("lmtp", "imap"):
        if isinstance(out.get(what), dict) and out[what].get("per_s") and base:
            out[what]["x_baseline_time"] = round(base / out[what]["per_s"], 2)
    print(
        f"  {kind}: LMTP {out['lmtp']['per_s']}/s, IMAP "
        f"{out.get('imap', {}).get('per_s', 'n/a (no Dovecot)')}/s, baseline {base}/s",
        flush=True,
    )
    return out


async def run(options: Any) -> dict[str, Any]:
    """mails/s through LMTP and IMAP (Dovecot, if installed), with the least-work baseline, on
    each database asked for."""
    quiet = logging.getLogger("casewatch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    quiet_mail = logging.getLogger("integrations")
    mail_level = quiet_mail.level
    quiet_mail.setLevel(logging.ERROR)
    try:
        return {kind: await _one_database(kind, options) for kind in options.databases}
    finally:
        quiet.setLevel(level)
        quiet_mail.setLevel(mail_level)
