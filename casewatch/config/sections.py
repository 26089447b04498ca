"""The configuration sections named in the interface contract (shared/contract.md)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from casewatch.model.text_rules import TextKind, text_problem

Role = Literal["officer", "supervisor", "spoc", "control_room", "admin"]

# Matched whole (fullmatch): with re.match, "$" also matches before a final "\n".
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


class Section(BaseModel):
    # A mistyped key is a silent misconfiguration; refuse it instead.
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_email(value: str) -> str:
    if not _EMAIL.fullmatch(value) or text_problem(value, TextKind.IDENTIFIER) is not None:
        raise ValueError(f"{value!r} is not an email address")
    return value


def check_text(kind: TextKind) -> Callable[[str], str]:
    """A field validator refusing what casewatch.model.text_rules refuses for `kind`."""

    def check(value: str) -> str:
        problem = text_problem(value, kind)
        if problem is not None:
            raise ValueError(problem[1])
        return value

    return check


_identifier = check_text(TextKind.IDENTIFIER)
_name = check_text(TextKind.NAME)


class DatabaseSection(Section):
    url: str = Field(
        "sqlite+aiosqlite:///./casewatch.db",
        description="SQLAlchemy URL: sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB",
    )
    pool_size: int = Field(
        10, ge=1, le=200,
        description=(
            "PostgreSQL connections kept per pool: writes and lookups have a pool each, each opening "
            "up to as many again under load (at most 4 x pool_size a process)"
        ),
    )
    reader_pool_size: int = Field(
        4, ge=1, le=64,
        description="SQLite: read-only connections per process beside the one writer, for lookups",
    )

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not (value.startswith("sqlite+aiosqlite://") or value.startswith("postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value


class HttpSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    reuse_port: bool = Field(
        False,
        description="bind with SO_REUSEPORT, so several `casewatch serve` processes on one host share "
        "the port (Linux spreads the connections among them); every one must set it",
    )


class IngestSection(Section):
    secret: SecretStr = Field(SecretStr(""), description="HMAC-SHA256 key for the events API")
    max_clock_skew_seconds: int = Field(300, ge=1, le=3600)


class AuditSection(Section):
    key: SecretStr = Field(
        SecretStr(""),
        description=(
            "HMAC-SHA256 key for the audit log's hash chain (set it from the environment, "
            "CASEWATCH_AUDIT__KEY). Empty: plain SHA-256, which shows edits by anyone who cannot "
            "also rebuild the chain; with a key, someone with database write access but not the "
            "key cannot rebuild it. Set it before the first entry is sealed: the chain is bound "
            "to the key it began with"
        ),
    )
    seal_interval_seconds: float = Field(
        1.0, gt=0, le=60,
        description="how often a running service seals new audit entries into the chain (at most)",
    )


class SlackSection(Section):
    mode: Literal["http", "socket", "off"] = "http"
    bot_token: SecretStr = SecretStr("")
    signing_secret: SecretStr = SecretStr("")
    app_token: SecretStr = SecretStr("")
    api_url: str = "https://slack.com/api/"

    @field_validator("api_url")
    @classmethod
    def _slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value if value.endswith("/") else value + "/"


class SmtpSection(Section):
    host: str = "127.0.0.1"
    port: int = Field(25, ge=1, le=65535)
    sender: str = "casewatch@force.example"
    starttls: bool = False
    username: str = ""
    password: SecretStr = SecretStr("")
    timeout_seconds: float = Field(30.0, gt=0, le=600)

    _sender = field_validator("sender")(check_email)


class TeamSection(Section):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1)
    channel: str = Field("", description="team Slack channel id; empty: no team channel")
    spoc_email: str
    supervisor_emails: list[str] = []
    digest_time: str = "07:00"
    npt_channels: dict[str, str] = Field(
        default_factory=dict, description="neighbourhood code -> NPT Slack channel id"
    )

    _spoc = field_validator("spoc_email")(check_email)
    _ids = field_validator("id", "channel")(_identifier)
    _names = field_validator("name")(_name)

    @field_validator("supervisor_emails")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        return [check_email(v) for v in value]

    @field_validator("npt_channels")
    @classmethod
    def _npt(cls, value: dict[str, str]) -> dict[str, str]:
        for area, channel in value.items():
            _identifier(area)
            _identifier(channel)
        return value

    @field_validator("digest_time")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not HHMM.fullmatch(value):
            raise ValueError("must be a 24-hour time HH:MM, for example 07:00")
        return value


class OfficerSection(Section):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1)
    email: str = ""
    slack_user_id: str = ""
    team: str
    roles: list[Role] = ["officer"]

    _ids = field_validator("id", "slack_user_id", "team")(_identifier)
    _names = field_validator("name")(_name)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return check_email(value) if value else value


class ServiceSection(Section):
    timezone: str = Field("Europe/London", description="the service timezone (IANA name)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value
