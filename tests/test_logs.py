"""casewatch.logs: every record is one bounded line whatever its input, and Slack library records
lose their details (issue 12, class 6)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from casewatch import cli, logs

# Everything that could end or disguise a line: LF, CR, NEL (C1), line and paragraph separators,
# vertical tab, form feed, NUL, a bidi override and a zero-width space.
BREAKERS = "\n\r\u0085\u2028\u2029\x0b\x0c\x00\u202e\u200b"


def _record(msg: object, *args: object, name: str = "casewatch.test") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args or None, None)


def test_escape_writes_every_breaker_as_an_escape() -> None:
    escaped = logs.escape(f"a{BREAKERS}b")
    assert escaped == "a\\n\\r\\x85\\u2028\\u2029\\x0b\\x0c\\x00\\u202e\\u200bb"
    assert escaped.isprintable()
    assert logs.escape("plain text, unicode é ü 名前") == "plain text, unicode é ü 名前"


@pytest.mark.parametrize("breaker", list(BREAKERS))
def test_the_formatter_keeps_message_and_args_on_one_line(breaker: str) -> None:
    formatter = logs.SafeFormatter("%(levelname)s %(message)s")
    line = formatter.format(_record(f"forged{breaker}ERROR fake %s", f"x{breaker}INFO fake"))
    assert line.isprintable(), line
    assert line.startswith("WARNING forged\\")
    assert len(line.splitlines()) == 1


def test_the_formatter_puts_a_traceback_on_the_same_line() -> None:
    formatter = logs.SafeFormatter("%(message)s")
    try:
        raise ValueError("bad value\nERROR forged line\u2028")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = formatter.format(record)
    assert line.isprintable() and len(line.splitlines()) == 1
    assert "Traceback" in line and "\\nERROR forged line\\u2028" in line


def test_the_formatter_bounds_the_line() -> None:
    formatter = logs.SafeFormatter("%(message)s", limit=100)
    line = formatter.format(_record("%s", "x" * 10_000))
    assert len(line) < 150 and line.endswith("[9900 characters cut]")
    assert len(logs.SafeFormatter("%(message)s").format(_record("y" * 500_000))) < logs.MAX_LINE + 50


def test_the_slack_filter_withholds_details_and_traceback() -> None:
    flt = logs.slack_filter()
    refused = _record("Invalid request signature detected (signature: v0=1, timestamp: 1, body: surname=X\n)",
                      name="slack_bolt.RequestVerification")
    assert flt.filter(refused)
    assert refused.getMessage() == logs.SLACK_FIXED["Invalid request signature detected"]
    body = _record("request body: {'text': 'Fictionalson'}", name="casewatch.bot.slack")
    assert flt.filter(body) and body.getMessage() == "request body [details withheld]"
    try:
        raise KeyError("Fictionalson")
    except KeyError:
        failed = logging.LogRecord("slack_sdk.socket_mode.aiohttp", logging.ERROR, __file__, 1,
                                   "Failed to process a message: %s", ("Fictionalson",), sys.exc_info())
    assert flt.filter(failed)
    assert failed.getMessage() == "Failed to process a message [details withheld] (KeyError)"
    assert failed.exc_info is None and failed.exc_text is None
    plain = _record("Rate limited. Retrying in 3 seconds...", name="slack_sdk.socket_mode")
    assert flt.filter(plain) and plain.getMessage() == "Rate limited. Retrying in 3 seconds..."
    ours = _record("casewatch's own line (%s)", "kept", name="casewatch.api")
    assert flt.filter(ours) and ours.getMessage() == "casewatch's own line (kept)"
    not_slack = _record("x (y)", name="slack_bolt_lookalike")
    assert flt.filter(not_slack) and not_slack.getMessage() == "x (y)"


def test_configured_logging_writes_one_escaped_line_per_record(tmp_path: Path) -> None:
    script = (
        "import logging\n"
        "from casewatch import logs\n"
        "logs.configure()\n"
        "logging.getLogger('casewatch.x').warning('typed %s', 'a\\nERROR forged\\u2028b')\n"
        "logging.getLogger('slack_bolt.RequestVerification').info("
        "'Invalid request signature detected (body: surname=Fictionalson\\n)')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          check=True, cwd=Path(__file__).resolve().parents[1])
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].endswith("WARNING casewatch.x: typed a\\nERROR forged\\u2028b")
    assert "Slack request refused" in lines[1] and "Fictionalson" not in done.stderr


def test_the_cli_configures_logging_through_casewatch_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[object] = []
    monkeypatch.setattr(logs, "configure", lambda level=logging.INFO: called.append(level))
    assert cli.main(["scan", "--config", "/nonexistent/casewatch.toml"]) == 2
    assert called == [logging.INFO]


async def test_a_failing_scheduler_tick_logs_its_type_not_its_message(
    sqlite_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error's text quotes its bound parameters (names): the scheduler's loop logs
    the exception's type and place, without message or traceback."""
    from casewatch.wiring import stop
    from schedules.leader import LeaderLease
    from schedules.service import Scheduler
    from tests.support import make_service

    async def failing_tick(self: LeaderLease) -> bool:
        raise RuntimeError("parameters: ('Fictionalson', '1970-01-01')")

    monkeypatch.setattr(LeaderLease, "tick", failing_tick)
    service = await make_service(sqlite_url, schedules={"leader_renew_seconds": 0.05})
    scheduler = Scheduler(service.sessions, service.ctx)
    caplog.set_level(logging.INFO)
    try:
        await scheduler.start()
        for _ in range(100):
            if any("leader tick failed" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
    finally:
        await scheduler.stop()
        await stop(service)
    failed = [r for r in caplog.records if "leader tick failed" in r.getMessage()]
    assert failed and "RuntimeError at " in failed[0].getMessage()
    for record in failed:
        assert "Fictionalson" not in record.getMessage() and record.exc_info is None
