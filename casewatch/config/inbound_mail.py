"""`[inbound_mail]`: how border-alert emails reach `casewatch mail-ingest` (contract v2, issue 18)."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from casewatch.config.sections import Section, check_email
from casewatch.model.text_rules import TextKind, text_problem

_KEYWORD = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class InboundMailSection(Section):
    mode: Literal["off", "imap", "lmtp"] = Field(
        "off",
        description='"imap": poll the mailbox below (IDLE where the server has it); "lmtp": listen '
        "for a forwarding rule on listen_host:listen_port; \"off\": mail-ingest refuses to start",
    )
    host: str = Field("127.0.0.1", description="IMAP server host")
    port: int = Field(993, ge=1, le=65535, description="IMAP server port (993 with tls, 143 otherwise)")
    security: Literal["tls", "starttls", "none"] = Field(
        "tls", description='IMAP connection security: "tls", "starttls", or "none" (only with a '
        "loopback host: the password would cross the network in clear text)",
    )
    username: str = Field("", description="IMAP login")
    password: SecretStr = Field(
        SecretStr(""), description="IMAP password (from CASEWATCH_INBOUND_MAIL__PASSWORD)"
    )
    mailbox: str = Field(
        "INBOX", min_length=1, max_length=200,
        description="the IMAP folder to read (any Unicode name; best a folder a server-side rule files "
        "only the reports into)",
    )
    idle: bool = Field(True, description="use IMAP IDLE when the server supports it (else poll)")
    poll_seconds: float = Field(
        60.0, gt=0, le=3600, description="how often to look without IDLE (with IDLE: how often to renew it)"
    )
    processed_keyword: str = Field(
        "casewatch-processed",
        description="IMAP keyword set on a mail once it is stored (mail is never deleted)",
    )
    ignored_keyword: str = Field(
        "casewatch-ignored",
        description="IMAP keyword set on a mail not from an allowed sender: not read, not copied, "
        "left unseen in the mailbox (counted in the summary)",
    )
    listen_host: str = Field("127.0.0.1", description="LMTP listener address")
    listen_port: int = Field(8024, ge=0, le=65535, description="LMTP listener port (0: any free port)")
    template: str = Field(
        "", description="path of a template TOML describing the report's format; empty: the built-in "
        "format documented in docs/feeds/mail.md",
    )
    team: str = Field(
        "", description="the team whose SPOC owns this mailbox: told of mail that cannot be read; "
        "empty: triggers.unmatched_team, else the first team",
    )
    max_message_bytes: int = Field(
        1024 * 1024, ge=1024, le=50 * 1024 * 1024,
        description="a larger mail is kept unread, for a person: its first max_message_bytes bytes",
    )
    allowed_senders: list[str] = Field(
        default_factory=list,
        description="From addresses a report may come from (a mail from anyone else is neither read "
        "nor kept: IMAP marks it with ignored_keyword); empty: the template's senders; both empty: "
        "any sender",
    )

    @field_validator("processed_keyword", "ignored_keyword")
    @classmethod
    def _keyword(cls, value: str) -> str:
        if not _KEYWORD.fullmatch(value):
            raise ValueError("must be 1 to 64 letters, digits, '_', '.' or '-' (an IMAP keyword)")
        return value

    @field_validator("mailbox")
    @classmethod
    def _mailbox(cls, value: str) -> str:
        if problem := text_problem(value, TextKind.IDENTIFIER):
            raise ValueError(problem[1])
        return value

    @field_validator("allowed_senders")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        return [check_email(v) for v in value]

    @model_validator(mode="after")
    def _clear_text_only_on_loopback(self) -> InboundMailSection:
        if self.security == "none" and not is_loopback(self.host):
            raise ValueError(
                'security = "none" sends the IMAP password in clear text: only with a loopback host '
                '(127.0.0.1, ::1, localhost); use "tls" or "starttls"'
            )
        if self.ignored_keyword.casefold() == self.processed_keyword.casefold():
            raise ValueError("ignored_keyword must differ from processed_keyword")
        return self


def is_loopback(host: str) -> bool:
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
