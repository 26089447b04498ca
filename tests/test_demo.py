"""`casewatch demo`: the fictional data set, the mail sink, and the whole demo end to end."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.parse
import urllib.request
from datetime import date
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib

from casewatch.audit.chain import Hasher
from casewatch.audit.verify import Verification, verify
from casewatch.demo.data import FORENAMES, SURNAMES, UNKNOWN_REF, build_demo
from casewatch.demo.runner import DemoOptions, demo_config, to_toml
from casewatch.ingest.schema import parse_envelopes
from casewatch.store.engine import make_engine, make_sessionmaker
from integrations.mail_sink import MailSink

TODAY = date(2026, 11, 23)

# Every alert kind the demo must show (issue 3: "the demo data exercises every trigger").
EXPECTED_KINDS = {
    "travel.confirmed", "travel.unnotified", "travel.unmatched_nominal", "notification.missed",
    "notification.due_soon", "action.overdue", "action.due_soon", "mappa.level_changed",
    "mappa.decrease_without_rationale", "recall.issued", "notification.late",
    # issue 15
    "risk.changed", "area.moved_out", "area.moved_in", "visit.overdue", "mappa.minutes_overdue",
    "rmp.review_due", "order.expiring", "recall.unlawfully_at_large", "recall.risk_review_due",
}


def test_the_demo_data_is_valid_deterministic_and_fictional() -> None:
    data = build_demo(TODAY)
    events = data.all_events
    for start in range(0, len(events), 1000):
        envelopes, errors = parse_envelopes(events[start : start + 1000])
        assert errors == []
    assert build_demo(TODAY).all_events == events
    assert len({e["id"] for e in events}) == len(events)
    upserts = [e for e in events if e["type"] == "nominal.upsert"]
    # one a nominal, and a second for two of them (a risk level raised, a move between areas)
    assert len({e["visor_ref"] for e in upserts}) == 200 and len(upserts) == 202
    for e in upserts:
        assert e["data"]["surname"] in SURNAMES and e["data"]["forenames"] in FORENAMES
        assert re.fullmatch(r"VS-D\d{6}", e["visor_ref"])
    assert len(data.teams) == 3 and 8 <= len(data.officers) <= 12
    officer_ids = {o["id"] for o in data.officers}
    assert {e["data"]["offender_manager"] for e in upserts} <= officer_ids
    assert UNKNOWN_REF not in {e["visor_ref"] for e in upserts}
    # Every event type of the contract appears.
    assert {e["type"] for e in events} == {
        "nominal.upsert", "notification.received", "travel.notified", "travel.border_alert",
        "mappa.level_changed", "recall.issued", "recall.returned", "action.upsert", "visit.recorded",
        "detention.started", "change.detected", "meeting.held", "rmp.reviewed", "order.upsert",
    }


def test_the_demo_configuration_loads(tmp_path: Path) -> None:
    from casewatch.config import load_config

    data = build_demo(TODAY, nominals=20)
    path = tmp_path / "casewatch.toml"
    path.write_text(to_toml(demo_config(DemoOptions(tmp_path, port=0), 2525, "demo-secret", data)))
    assert tomllib.loads(path.read_text())["slack"]["mode"] == "off"
    settings = load_config(path, environ={})
    assert settings.smtp.port == 2525 and settings.http.port == 0
    assert settings.delivery.chat_log_path == str(tmp_path / "chat.log")
    assert [t.id for t in settings.teams] == ["north", "south", "east"]


async def test_the_mail_sink_writes_each_message_as_eml(tmp_path: Path) -> None:
    sink = MailSink(folder=tmp_path / "mail").start()
    try:
        message = EmailMessage()
        message["From"] = "casewatch-demo@force.example"
        message["To"] = "north.spoc@force.example"
        message["Subject"] = "[casewatch] high travel.unnotified VS-D000002"
        message.set_content("A fictional alert.")
        await aiosmtplib.send(message, hostname="127.0.0.1", port=sink.port, timeout=10)
    finally:
        sink.stop()
    files = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 1
    parsed = message_from_bytes(files[0].read_bytes())
    assert parsed["Subject"] == "[casewatch] high travel.unnotified VS-D000002"
    assert parsed["X-Envelope-To"] == "north.spoc@force.example"
    assert len(sink.messages) == 1


def _start_demo(folder: Path, exit_after: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "casewatch.cli", "demo", "--port", "0", "--dir", str(folder),
         "--exit-after", str(exit_after)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _read_banner(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "stops after" in line or "Ctrl-C stops it" in line:
            return "".join(lines)
    stderr = process.stderr.read() if process.stderr and process.poll() is not None else ""
    raise AssertionError("no banner:\n" + "".join(lines) + stderr)


def _signed_get(url: str, secret: str) -> Any:
    """GET signed v2: the message names the method and the request target (path?query) as sent."""
    timestamp = str(int(time.time()))
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    message = f"v2:{timestamp}:GET:{target}:".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    request = urllib.request.Request(url, headers={  # noqa: S310
        "X-Casewatch-Timestamp": timestamp, "X-Casewatch-Signature": f"v2={digest}",
    })
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
        return json.loads(reply.read())


def _the_banner_curl_line_works(banner: str) -> None:
    """The ready-to-paste line, run as pasted (when curl and openssl are here), reads the alerts."""
    line = next(text.strip() for text in banner.splitlines() if text.strip().startswith("SECRET="))
    if not (shutil.which("curl") and shutil.which("openssl")):
        return
    done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    alerts = json.loads(done.stdout)["alerts"]
    assert alerts and {a["state"] for a in alerts} == {"open"}


def test_the_demo_runs_end_to_end_and_again(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    process = _start_demo(folder, exit_after=60)
    try:
        banner = _read_banner(process)
        base = re.search(r"health\s+(http://127\.0\.0\.1:\d+)/healthz", banner)
        assert base, banner
        with urllib.request.urlopen(base.group(1) + "/healthz", timeout=5) as reply:  # noqa: S310
            assert reply.status == 200
        secret = (folder / "ingest-secret").read_text().strip()
        assert secret in banner  # the demo-only secret is shown, with its label
        alerts = _signed_get(base.group(1) + "/api/v1/alerts", secret)["alerts"]
        kinds = {a["kind"] for a in alerts}
        assert EXPECTED_KINDS <= kinds, EXPECTED_KINDS - kinds
        # Issue 14's cases: a caution with no initial notification, a change not notified, a
        # late change, a nominal held over the annual date (none), a compliant weekly reporter
        # (none).
        about = {(a["visor_ref"], a["kind"], a["subject"].split(":")[0]) for a in alerts}
        assert ("VS-D000014", "notification.missed", "initial") in about
        assert ("VS-D000015", "notification.missed", "change") in about
        assert ("VS-D000016", "notification.late", "change") in about
        assert not [a for a in alerts if a["visor_ref"] in ("VS-D000017", "VS-D000019")]
        # The returned recall's alert was opened and then resolved.
        resolved = _signed_get(base.group(1) + "/api/v1/alerts?state=resolved", secret)["alerts"]
        assert any(a["kind"] == "recall.issued" and a["visor_ref"] == "VS-D000012" for a in resolved)
        assert "200 nominals" in banner and "0 already loaded" in banner
        # Issue 18: the sample border-alert email went through the real LMTP listener and the
        # domain events through the real probation endpoint, and their alerts are there.
        assert "email about VS-D000044 through the LMTP listener: ingested, 2 alert(s)" in banner
        assert re.search(r"VS-D000040: MAPPA registration .*: accepted, [1-9]", banner), banner
        assert re.search(r"VS-D000041: recall .*: accepted, 1 alert", banner), banner
        assert "not a nominal (acknowledged, ignored, counted): ignored" in banner
        assert re.search(r"snapshot-extract.csv .*: 66 rows, 1 new, 2 changed, 1 bad, 1 missing", banner)
        fed = {(a["visor_ref"], a["kind"]) for a in alerts}
        assert {
            ("VS-D000027", "mappa.level_changed"), ("VS-D000030", "risk.changed"),
            ("VS-D000033", "feed.nominal_missing"), ("SYSTEM", "feed.unreadable"),
            ("VS-D000040", "mappa.level_changed"), ("VS-D000041", "recall.issued"),
            ("VS-D000044", "travel.unnotified"),
        } <= fed, fed
        _the_banner_curl_line_works(banner)
        for kind in EXPECTED_KINDS:
            assert kind in banner
        assert str(folder / "chat.log") in banner and str(folder / "mail") in banner
        # Alerts flow on to where the banner says: team chat lines and SPOC emails.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            chat = (folder / "chat.log").read_text()
            if "recall.issued VS-D000011" in chat and list((folder / "mail").glob("*.eml")):
                break
            time.sleep(0.1)
        assert "recall.issued VS-D000011" in (folder / "chat.log").read_text()
        subjects = {message_from_bytes(p.read_bytes())["Subject"] for p in (folder / "mail").glob("*.eml")}
        assert any(s.startswith("[casewatch]") for s in subjects), subjects
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "casewatch demo stopped" in out
    assert secret not in err  # logs never carry it
    assert "Traceback" not in err, err

    # Again in the same folder: everything is a duplicate, nothing new opens, and it stops itself.
    again = _start_demo(folder, exit_after=0.2)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert re.search(r"\d+ events: 0 new, \d+ already loaded", out), out
    assert "alerts opened now: 0 by the events, 0 by the time-based scan" in out
    assert "through the LMTP listener: duplicate, 0 alert(s)" in out
    assert len(re.findall(r"probation  VS-D0000\d\d: .*: duplicate, 0 alert", out)) == 3, out
    assert re.search(r"snapshot-extract.csv .*: 66 rows, 0 new, 0 changed, 1 bad, 1 missing; 0 event", out)
    assert (folder / "ingest-secret").read_text().strip() == secret
    # Everything the demo's real service audited (alerts opened, deliveries, lookups) was sealed
    # into one hash chain before it stopped, and the chain verifies.
    result = asyncio.run(_verify_demo_chain(folder / "casewatch.db"))
    assert result.intact, result.broken
    assert result.unsealed == 0 and result.checked > 50


async def _verify_demo_chain(path: Path) -> Verification:
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        return await verify(make_sessionmaker(engine), Hasher())
    finally:
        await engine.dispose()


async def test_the_demo_mail_is_never_checked_in_the_future(sqlite_url: str) -> None:
    """Run before 06:30 local time, the demo's border-alert mail is yesterday's 06:30 check, not a
    check in the future (which the mail feed would keep for a person instead of storing)."""
    from datetime import UTC, datetime

    from casewatch.clock import FixedClock
    from casewatch.demo.runner import FeedLines, mail_feed
    from casewatch.wiring import stop
    from tests.support import make_service

    service = await make_service(sqlite_url, FixedClock(datetime(2026, 11, 23, 5, 0, tzinfo=UTC)))
    try:
        feeds = FeedLines()
        await mail_feed(service, 200, feeds)
    finally:
        await stop(service)
    assert "through the LMTP listener: ingested" in feeds.lines[0], feeds.lines
