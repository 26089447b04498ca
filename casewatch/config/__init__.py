"""Configuration: a TOML file, overridden key by key by CASEWATCH_<SECTION>__<KEY> variables.

`load_config()` is the only entry point. Every problem comes back as one ConfigError that names
each bad key and says why; secret values are never echoed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from casewatch.config.delivery import DeliverySection
from casewatch.config.inbound_mail import InboundMailSection
from casewatch.config.probation import ProbationSection
from casewatch.config.routing import RoutingSection
from casewatch.config.schedules import ScheduleSection
from casewatch.config.sections import (
    AuditSection,
    DatabaseSection,
    HttpSection,
    IngestSection,
    OfficerSection,
    ServiceSection,
    SlackSection,
    SmtpSection,
    TeamSection,
)
from casewatch.config.triggers import TriggerSection

DEFAULT_PATH = Path("casewatch.toml")
ENV_PREFIX = "CASEWATCH_"
SECRET_KEYS = frozenset(
    # database.url may hold a password (postgresql+asyncpg://user:PASSWORD@host/db)
    {"secret", "bot_token", "signing_secret", "app_token", "password", "url", "key"}
)

# Keys that were removed: still refused like any unknown key, but saying why, so that an upgrade
# does not leave a user guessing at the spelling of a key that no longer exists.
REMOVED_KEYS = {
    "triggers.change_notification_days": "removed: nothing ever read it (the period for notifying "
    "changes is set by statute, SOA 2003 s.84, not a setting); delete it",
}

__all__ = ["DEFAULT_PATH", "ConfigError", "Settings", "load_config"]


class ConfigError(Exception):
    """The configuration cannot be used; the message names every bad key."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    service: ServiceSection = ServiceSection()
    database: DatabaseSection = DatabaseSection()
    http: HttpSection = HttpSection()
    ingest: IngestSection = IngestSection()
    audit: AuditSection = AuditSection()
    slack: SlackSection = SlackSection()
    smtp: SmtpSection = SmtpSection()
    triggers: TriggerSection = TriggerSection()
    routing: RoutingSection = RoutingSection()
    delivery: DeliverySection = DeliverySection()
    schedules: ScheduleSection = ScheduleSection()
    inbound_mail: InboundMailSection = InboundMailSection()
    probation: ProbationSection = ProbationSection()
    teams: list[TeamSection] = Field(default_factory=list)
    officers: list[OfficerSection] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file is passed in as init data by load_config(); the environment wins over it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _directory_consistent(self) -> Settings:
        problems: list[str] = []
        team_ids = [t.id for t in self.teams]
        for dup in _repeated(team_ids):
            problems.append(f"teams: team id {dup!r} is defined more than once")
        for dup in _repeated(o.id for o in self.officers):
            problems.append(f"officers: officer id {dup!r} is defined more than once")
        for dup in _repeated(o.slack_user_id for o in self.officers if o.slack_user_id):
            problems.append(f"officers: slack_user_id {dup!r} belongs to more than one officer")
        known = set(team_ids)
        for index, officer in enumerate(self.officers):
            if officer.team not in known:
                problems.append(
                    f"officers[{index}].team: unknown team {officer.team!r} "
                    f"(known: {', '.join(sorted(known)) or 'none'})"
                )
        feed_teams = (("inbound_mail.team", self.inbound_mail.team), ("probation.team", self.probation.team))
        for key, feed_team in feed_teams:
            if feed_team and feed_team not in known:
                problems.append(
                    f"{key}: unknown team {feed_team!r} (known: {', '.join(sorted(known)) or 'none'})"
                )
        unmatched = self.triggers.unmatched_team
        if unmatched and unmatched not in known:
            problems.append(
                f"triggers.unmatched_team: unknown team {unmatched!r} "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def fallback_team(self) -> TeamSection | None:
        """Who hears of an alert whose team is not configured (an unknown ViSOR reference, a
        nominal on a team this force does not list): triggers.unmatched_team, else the first
        team. A border alert or a recall is never routed to nobody."""
        return self.team(self.triggers.unmatched_team) or (self.teams[0] if self.teams else None)

    def team(self, team_id: str) -> TeamSection | None:
        return next((t for t in self.teams if t.id == team_id), None)

    def officer(self, officer_id: str) -> OfficerSection | None:
        return next((o for o in self.officers if o.id == officer_id), None)

    def serve_problems(self) -> list[str]:
        """What stops `casewatch serve` from running safely (the other commands need less)."""
        problems = []
        if not self.teams:
            problems.append(
                "teams: none configured; every alert would reach nobody. Add [[teams]] "
                "(see config.example.toml)"
            )
        if not self.ingest.secret.get_secret_value():
            problems.append(
                "ingest.secret: empty; the events API would accept nothing. "
                "Set CASEWATCH_INGEST__SECRET"
            )
        if self.slack.mode != "off" and not self.slack.bot_token.get_secret_value():
            problems.append(
                f"slack.bot_token: required when slack.mode is {self.slack.mode!r}. "
                "Set CASEWATCH_SLACK__BOT_TOKEN, or slack.mode = \"off\""
            )
        if self.slack.mode == "http" and not self.slack.signing_secret.get_secret_value():
            problems.append(
                "slack.signing_secret: required when slack.mode is 'http'. "
                "Set CASEWATCH_SLACK__SIGNING_SECRET"
            )
        if self.slack.mode == "socket" and not self.slack.app_token.get_secret_value():
            problems.append(
                "slack.app_token: required when slack.mode is 'socket'. "
                "Set CASEWATCH_SLACK__APP_TOKEN"
            )
        return problems


def _describe(error: Any) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = REMOVED_KEYS.get(
            location, "unknown key (check the spelling against config.example.toml)"
        )
    leaf = str(error["loc"][-1]) if error["loc"] else ""
    shown = ""
    if leaf not in SECRET_KEYS and error["type"] != "extra_forbidden" and "input" in error:
        value = error["input"]
        if isinstance(value, (str, int, float, bool)) and len(repr(value)) <= 60:
            shown = f" (got {value!r})"
    return f"{location}: {message}{shown}"


def _repeated(values: Iterable[str]) -> list[str]:
    """The values that occur more than once, sorted (a directory of 2,000 officers is read at
    every command's start: list.count for each was quadratic)."""
    return sorted(value for value, count in Counter(values).items() if count > 1)


def _unknown_sections(environ: Mapping[str, str]) -> list[str]:
    """The CASEWATCH_<SECTION>__<KEY> variables whose section Settings does not have (sorted).
    pydantic-settings ignores them, so CASEWATCH_AUDT__KEY would leave the audit key unset without
    a word. Names without "__" are not looked at: the tests' and bench's own switches
    (CASEWATCH_REQUIRE_POSTGRES, ...) share the prefix."""
    unknown = []
    for name in environ:
        if name.startswith(ENV_PREFIX) and "__" in name[len(ENV_PREFIX):]:
            section = name[len(ENV_PREFIX):].split("__", 1)[0].lower()
            if section not in Settings.model_fields:
                unknown.append(name)
    return sorted(unknown)


def load_config(
    path: str | Path | None = None,
    *,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Read the TOML file (the default path only if it exists), apply the environment, validate."""
    explicit = path is not None
    file_path = Path(path) if path is not None else DEFAULT_PATH
    data: dict[str, Any] = {}
    if file_path.exists():
        try:
            data = tomllib.loads(file_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file_path}: not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{file_path}: cannot be read: {exc.strerror}") from exc
    elif explicit:
        raise ConfigError(f"{file_path}: no such configuration file")
    for key, value in (overrides or {}).items():
        data.setdefault(key, {})
        if isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value

    saved = None
    if environ is not None:
        saved = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
        for key in saved:
            del os.environ[key]
        os.environ.update({k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)})
    try:
        if unknown := _unknown_sections(os.environ):
            raise ConfigError(
                f"configuration is not valid: {', '.join(unknown)}: no such section (sections: "
                f"{', '.join(Settings.model_fields)}); a misspelt variable would be silently ignored"
            )
        return Settings(**data)
    except SettingsError as exc:
        # A list or table variable that is not JSON ("critical" for ["critical"]): pydantic-settings
        # names the section, never the value.
        field = re.search(r'field "([a-z_]+)"', str(exc))
        section = field.group(1).upper() if field else "..."
        raise ConfigError(
            f"configuration is not valid: a {ENV_PREFIX}{section}__* variable could not be read; "
            'lists and tables are written as JSON (["critical", "high"])'
        ) from None
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        source = str(file_path) if file_path.exists() else "built-in defaults"
        raise ConfigError(
            f"configuration is not valid ({source} and {ENV_PREFIX}* variables):\n  "
            + "\n  ".join(lines)
        ) from None
    finally:
        if saved is not None:
            for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
                del os.environ[key]
            os.environ.update(saved)
