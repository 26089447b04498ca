"""`casewatch digest [--team] [--at]`: builds, queues and actually delivers the digest (real SMTP on
loopback), printing progress; refuses an unknown team clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from casewatch.cli import main
from casewatch.store.models import Delivery
from integrations.mail_sink import MailSink
from tests.test_delivery_support import mail_fixture  # noqa: F401


def _config(tmp_path: Path, db_url: str, smtp_port: int, wait_seconds: int = 20) -> Path:
    path = tmp_path / "casewatch.toml"
    path.write_text(
        f"""
[database]
url = "{db_url}"
[slack]
mode = "off"
[smtp]
port = {smtp_port}
timeout_seconds = 5
[schedules]
digest_command_wait_seconds = {wait_seconds}

[[teams]]
id = "north"
name = "North MOSOVO"
spoc_email = "north.spoc@force.example"
supervisor_emails = ["sgt.north@force.example", "insp.north@force.example"]

[[teams]]
id = "south"
name = "South MOSOVO"
spoc_email = "south.spoc@force.example"
supervisor_emails = ["sgt.south@force.example"]
""",
        encoding="utf-8",
    )
    return path


def test_digest_command_sends_the_digest(
    sqlite_url: str, mail: MailSink, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, sqlite_url, mail.port)
    code = main(["digest", "--team", "north", "--at", "2026-03-29T06:00:00Z", "--config", str(config)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "north: digest for 2026-03-29 (nothing to report); 2 message(s) queued" in out
    assert "delivered 2 of 2" in out
    assert sorted(m["To"] for m in mail.messages) == ["insp.north@force.example", "sgt.north@force.example"]
    assert all(
        m["Subject"] == "[casewatch] Daily digest North MOSOVO 2026-03-29 (nothing to report)"
        for m in mail.messages
    )


def test_digest_command_refuses_an_unknown_team(
    sqlite_url: str, mail: MailSink, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, sqlite_url, mail.port)
    assert main(["digest", "--team", "west", "--config", str(config)]) == 2
    assert "unknown team 'west' (known: north, south)" in capsys.readouterr().err
    assert mail.messages == []


def test_digest_command_with_no_wait_queues_and_sends_nothing_itself(
    sqlite_url: str, mail: MailSink, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """digest_command_wait_seconds = 0 (how bench/ times build and queue): the messages are
    queued and left for a running service; this process starts no delivery worker."""
    config = _config(tmp_path, sqlite_url, mail.port, wait_seconds=0)
    code = main(["digest", "--team", "north", "--at", "2026-03-29T06:00:00Z", "--config", str(config)])
    captured = capsys.readouterr()
    assert code == 1
    assert "north: digest for 2026-03-29 (nothing to report); 2 message(s) queued" in captured.out
    assert "delivered 0 of 2" in captured.out
    assert "2 message(s) not delivered within 0s" in captured.err
    assert mail.messages == []
    engine = create_engine(sqlite_url.replace("+aiosqlite", ""))
    try:
        with engine.connect() as conn:
            states = conn.execute(select(Delivery.state, Delivery.attempts)).all()
    finally:
        engine.dispose()
    assert sorted(states) == [("pending", 0), ("pending", 0)]
