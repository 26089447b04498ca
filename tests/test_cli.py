"""The command line: `casewatch serve` refusing and serving, `casewatch digest` without teams."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from casewatch.cli import main

SERVE_SECRET = "serve-test-secret-f00d"


def test_serve_refuses_without_secrets_and_says_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("CASEWATCH_")]:
        monkeypatch.delenv(key)
    config = tmp_path / "casewatch.toml"
    # A signing secret is set but not the bot token: the set one must not be echoed.
    config.write_text('[slack]\nmode = "http"\nsigning_secret = "do-not-print-me"\n')
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "casewatch serve: not starting; fix these first:" in err
    assert "  - ingest.secret: empty" in err and "CASEWATCH_INGEST__SECRET" in err
    assert "  - slack.bot_token: required when slack.mode is 'http'" in err
    assert "  - teams: none configured; every alert would reach nobody" in err
    assert "slack.signing_secret" not in err
    assert "do-not-print-me" not in err
    assert "Traceback" not in err


def test_serve_refuses_an_unmigrated_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CASEWATCH_INGEST__SECRET", SERVE_SECRET)
    config = tmp_path / "casewatch.toml"
    config.write_text(
        f'[slack]\nmode = "off"\n[database]\nurl = "sqlite+aiosqlite:///{tmp_path / "new.db"}"\n'
        '[[teams]]\nid = "north"\nname = "North"\nspoc_email = "north.spoc@force.example"\n'
    )
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"Run `casewatch db upgrade --config {config}` first" in err
    assert SERVE_SECRET not in err


def test_serve_reports_a_bad_config_readably(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "casewatch.toml"
    config.write_text("[http]\nport = 99999\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "http.port: Input should be less than or equal to 65535" in capsys.readouterr().err


def test_serve_runs_until_sigterm(sqlite_url: str, tmp_path: Path) -> None:
    """A real `casewatch serve` process: it answers, takes a signed event, and stops cleanly on
    SIGTERM without printing its secret."""
    config = tmp_path / "casewatch.toml"
    config.write_text(
        f'[slack]\nmode = "off"\n[http]\nport = 0\n[database]\nurl = "{sqlite_url}"\n'
        '[[teams]]\nid = "north"\nname = "North"\nspoc_email = "north.spoc@force.example"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEWATCH_")}
    env["CASEWATCH_INGEST__SECRET"] = SERVE_SECRET
    process = subprocess.Popen(
        [sys.executable, "-m", "casewatch.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    output: list[str] = []
    try:
        port = _wait_for_port(process, output)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:  # noqa: S310
            assert reply.status == 200
        body = json.dumps({
            "id": "serve-test-1", "type": "travel.border_alert", "occurred_at": "2026-11-22T07:40:00Z",
            "visor_ref": "VS-D999555",
            "data": {"port": "Mockford Airport (fictional)", "direction": "inbound",
                     "checked_at": "2026-11-22T07:40:00Z"},
        }).encode()
        reply_body = _post_signed(f"http://127.0.0.1:{port}/api/v1/events", body)
        assert reply_body["accepted"] == 1
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=20)
        output.append(rest)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    text = "".join(output)
    assert process.returncode == 0, text
    assert "casewatch stopping" in text
    assert SERVE_SECRET not in text
    assert "Traceback" not in text, text


def _wait_for_port(process: subprocess.Popen[str], output: list[str]) -> int:
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        found = re.search(r"casewatch serving on http://127\.0\.0\.1:(\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError("serve did not start:\n" + "".join(output))


def _post_signed(url: str, body: bytes) -> dict[str, object]:
    timestamp = str(int(time.time()))
    digest = hmac.new(SERVE_SECRET.encode(), f"v1:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(url, data=body, method="POST", headers={  # noqa: S310
        "Content-Type": "application/json",
        "X-Casewatch-Timestamp": timestamp,
        "X-Casewatch-Signature": f"v1={digest}",
    })
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
        assert reply.status == 202
        result: dict[str, object] = json.loads(reply.read())
        return result


def test_digest_without_teams_says_there_is_nothing_to_send(capsys: pytest.CaptureFixture[str]) -> None:
    # The digest itself is tested in tests/test_digest_command.py.
    assert main(["digest"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "no teams are configured" in err


@pytest.mark.parametrize("words", [
    ["db", "upgrade"], ["inbound", "list"], ["inbound", "show", "3"], ["inbound", "done", "3"],
    ["outbox", "dead"], ["outbox", "requeue", "--all"], ["audit", "verify"], ["audit", "export"],
])
def test_a_command_of_subcommands_takes_config_before_or_after_the_subcommand(words: list[str]) -> None:
    """`casewatch inbound --config X list` was refused ("invalid choice: X"): the nineteenth
    session's newcomer typed it so. Both places give the same path; none gives None."""
    from casewatch.cli import build_parser

    parser = build_parser()
    before = parser.parse_args([words[0], "--config", "here.toml", *words[1:]])
    after = parser.parse_args([*words, "--config", "here.toml"])
    assert before.config == after.config == "here.toml"
    assert parser.parse_args(words).config is None
