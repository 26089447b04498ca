"""`casewatch scan [--at] [--config]` as a command: loads the config, scans, prints a summary."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest

from casewatch.cli import main
from casewatch.store.engine import make_engine, make_sessionmaker
from tests.test_triggers_case_data import action, nominal

TEAM = '[[teams]]\nid = "north"\nname = "North"\nspoc_email = "north.spoc@force.example"\n'


def _seed(url: str) -> None:
    async def go() -> None:
        engine = make_engine(url)
        async with make_sessionmaker(engine).begin() as s:
            s.add(nominal("VS-0000070", last_notification_on=date(2025, 11, 20)))
            s.add(action("MAPP-70", "VS-0000070", date(2026, 11, 20)))
        await engine.dispose()

    asyncio.run(go())


def test_scan_command_prints_what_it_opened_and_is_idempotent(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed(sqlite_url)
    config = tmp_path / "casewatch.toml"
    config.write_text(f'[database]\nurl = "{sqlite_url}"\n' + TEAM, encoding="utf-8")
    assert main(["scan", "--at", "2026-11-21T00:00:00Z", "--act", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "scan as of 2026-11-21T00:00:00+00:00" in out
    assert "alerts opened: 2" in out
    assert "  action.overdue: 1" in out and "  notification.missed: 1" in out
    assert main(["scan", "--at", "2026-11-21T00:00:00Z", "--act", "--config", str(config)]) == 0
    assert "alerts opened: 0" in capsys.readouterr().out


def test_scan_command_refuses_an_unmigrated_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "casewatch.toml"
    url = f'sqlite+aiosqlite:///{tmp_path}/empty.db'
    config.write_text(f'[database]\nurl = "{url}"\n' + TEAM, encoding="utf-8")
    assert main(["scan", "--config", str(config)]) == 2
    assert "casewatch db upgrade" in capsys.readouterr().err


def test_scan_command_rejects_a_time_without_offset(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["scan", "--at", "2026-11-21T00:00:00"])
    assert exc.value.code == 2
    assert "no UTC offset" in capsys.readouterr().err


def test_scan_command_refuses_a_configuration_with_no_teams(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "casewatch.toml"
    config.write_text(f'[database]\nurl = "{sqlite_url}"\n', encoding="utf-8")
    assert main(["scan", "--config", str(config)]) == 2
    assert "no [[teams]]" in capsys.readouterr().err


@pytest.mark.parametrize(("at", "said"), [
    ("2027-03-01T09:00:00Z", "after now"),  # a what-if that opened 63 alerts and raised 6 for real
    ("2026-01-01T00:00:00Z", "before now"),  # a mistyped year, which resolved live alerts
])
def test_scan_refuses_an_instant_far_from_now_without_act(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], at: str, said: str
) -> None:
    """The nineteenth session's trials: a scan as of another instant acts on the database, and not
    all of it comes back at the next scan as of now. Refused without --act; nothing written."""
    _seed(sqlite_url)
    config = tmp_path / "casewatch.toml"
    config.write_text(f'[database]\nurl = "{sqlite_url}"\n' + TEAM, encoding="utf-8")
    assert main(["scan", "--at", at, "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert said in captured.err and "--act" in captured.err and captured.out == ""
    # Nothing was opened: the same scan with --act opens what it would have.
    assert main(["scan", "--at", "2026-11-21T00:00:00Z", "--act", "--config", str(config)]) == 0
    assert "alerts opened: 2" in capsys.readouterr().out


def test_scan_as_of_a_few_minutes_from_now_needs_no_act() -> None:
    from datetime import UTC, datetime, timedelta

    from casewatch.commands.scan import at_problem

    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    assert at_problem(now - timedelta(minutes=4), now, act=False) is None
    assert at_problem(None, now, act=False) is None
    assert at_problem(now + timedelta(hours=2), now, act=True) is None
    assert "2 hour(s) 0 min after now" in str(at_problem(now + timedelta(hours=2), now, act=False))
