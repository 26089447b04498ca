"""Configuration: the TOML file, CASEWATCH_<SECTION>__<KEY> overrides, and readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from casewatch.config import ConfigError, load_config

TEAM = """
[[teams]]
id = "north"
name = "North MOSOVO"
spoc_email = "north.spoc@force.example"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "casewatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./casewatch.toml here
    settings = load_config(environ={})
    assert settings.database.url == "sqlite+aiosqlite:///./casewatch.db"
    assert settings.http.port == 8080
    assert settings.slack.mode == "http"
    assert settings.service.timezone == "Europe/London"


def test_the_default_file_is_read_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "[http]\nport = 9001\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(environ={}).http.port == 9001


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\nport = 9001\nhost = "127.0.0.1"\n[ingest]\nsecret = "from-file"\n')
    settings = load_config(
        path,
        environ={"CASEWATCH_HTTP__PORT": "9002", "CASEWATCH_INGEST__SECRET": "from-env"},
    )
    assert settings.http.port == 9002
    assert settings.http.host == "127.0.0.1"  # keys not overridden keep the file's value
    assert settings.ingest.secret.get_secret_value() == "from-env"


def test_environment_alone_sets_a_secret(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    settings = load_config(path, environ={"CASEWATCH_SLACK__BOT_TOKEN": "xoxb-test"})
    assert settings.slack.bot_token.get_secret_value() == "xoxb-test"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nprot = 8080\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "http.prot" in str(info.value)
    assert "unknown key" in str(info.value)


@pytest.mark.parametrize(
    ("text", "environ"),
    [
        ("[triggers]\nchange_notification_days = 3\n", {}),
        ("", {"CASEWATCH_TRIGGERS__CHANGE_NOTIFICATION_DAYS": "3"}),
    ],
)
def test_a_removed_key_is_refused_saying_why(tmp_path: Path, text: str, environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ=environ)
    assert "triggers.change_notification_days: removed: nothing ever read it" in str(info.value)


def test_unknown_section_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[smpt]\nhost = \"x\"\n")
    with pytest.raises(ConfigError, match=r"smpt: unknown key"):
        load_config(path, environ={})


def test_bad_value_names_the_key_and_why(tmp_path: Path) -> None:
    path = write(tmp_path, '[http]\nport = 70000\n[slack]\nmode = "carrier-pigeon"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "http.port" in message and "less than or equal to 65535" in message
    assert "slack.mode" in message and "'http', 'socket' or 'off'" in message
    assert "(got 70000)" in message  # a non-secret bad value is shown


def test_bad_environment_value_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"http\.port"):
        load_config(path, environ={"CASEWATCH_HTTP__PORT": "eighty"})


def test_bad_database_url_says_what_is_supported(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "mysql://localhost/x"\n')
    with pytest.raises(ConfigError, match=r"database\.url: must start with sqlite\+aiosqlite://"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    "text",
    [
        '[ingest]\nsecret = ["hunter2-in-a-list"]\n',
        "[smtp]\npassword = 123456789\n",
        '[slack]\nsigning_secret = { value = "hunter2-in-a-table" }\n',
        '[database]\nurl = "postgresql://casewatch:hunter2@db.force.example/casewatch"\n',
    ],
)
def test_a_bad_secret_value_is_never_echoed(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "hunter2" not in message and "123456789" not in message
    assert any(
        key in message for key in ("ingest.secret", "smtp.password", "slack.signing_secret", "database.url")
    )


def test_a_bad_secret_from_the_environment_is_never_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    # A secret that is fine is never part of any error either, even when another key is bad.
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"CASEWATCH_INGEST__SECRET": "s3cr3t-value", "CASEWATCH_HTTP__PORT": "-1"})
    assert "s3cr3t-value" not in str(info.value)
    assert "http.port" in str(info.value)


def test_missing_explicit_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: no such configuration file"):
        load_config(missing, environ={})


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[http\nport = 8080\n")
    with pytest.raises(ConfigError, match=r"casewatch\.toml: not valid TOML"):
        load_config(path, environ={})


def test_duplicate_team_ids(tmp_path: Path) -> None:
    path = write(tmp_path, TEAM + TEAM)
    with pytest.raises(ConfigError, match=r"team id 'north' is defined more than once"):
        load_config(path, environ={})


def test_officer_with_unknown_team(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TEAM + '[[officers]]\nid = "PC1"\nname = "PC Testington"\nteam = "south"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "officers[0].team: unknown team 'south'" in message
    assert "known: north" in message


@pytest.mark.parametrize("section", ["inbound_mail", "probation"])
def test_a_feed_team_must_be_a_known_team(tmp_path: Path, section: str) -> None:
    """Issue 18: whose SPOC hears of what a feed cannot read is a configured team."""
    path = write(tmp_path, TEAM + f'[{section}]\nteam = "nowhere"\n')
    with pytest.raises(ConfigError, match=rf"{section}\.team: unknown team 'nowhere' \(known: north\)"):
        load_config(path, environ={})


def test_bad_team_field_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, TEAM.replace("north.spoc@force.example", "not-an-address"))
    with pytest.raises(ConfigError, match=r"teams\.0\.spoc_email: 'not-an-address' is not an email address"):
        load_config(path, environ={})


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "[http]\nport = -5\n[smtp]\nport = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "http.port" in str(info.value) and "smtp.port" in str(info.value)


def test_serve_problems_name_the_missing_secrets(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, '[slack]\nmode = "http"\n'), environ={})
    problems = "\n".join(settings.serve_problems())
    assert "ingest.secret" in problems
    assert "slack.bot_token" in problems
    assert "slack.signing_secret" in problems
    assert "CASEWATCH_INGEST__SECRET" in problems


def test_no_serve_problems_when_configured(tmp_path: Path) -> None:
    settings = load_config(
        write(
            tmp_path,
            '[slack]\nmode = "off"\n[[teams]]\nid = "north"\nname = "North"\n'
            'spoc_email = "north.spoc@force.example"\n',
        ),
        environ={"CASEWATCH_INGEST__SECRET": "k"},
    )
    assert settings.serve_problems() == []
