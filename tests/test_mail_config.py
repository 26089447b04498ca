"""[inbound_mail] checks at load: no clear-text IMAP password off loopback, distinct keywords,
a mailbox name without control characters."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from casewatch.config import ConfigError, load_config
from casewatch.config.inbound_mail import InboundMailSection


@pytest.mark.parametrize("host", ["imap.force.example", "10.0.0.5", "::ffff:10.0.0.5", "0.0.0.0"])  # noqa: S104
def test_security_none_off_loopback_is_refused_at_load(tmp_path: Path, host: str) -> None:
    config = tmp_path / "casewatch.toml"
    config.write_text(
        f'[inbound_mail]\nmode = "imap"\nhost = "{host}"\nport = 143\nsecurity = "none"\n'
        'username = "spoc"\npassword = "s3cret-Testpassword"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="clear text") as refused:
        load_config(str(config))
    assert "s3cret-Testpassword" not in str(refused.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_security_none_on_loopback_is_allowed(host: str) -> None:
    assert InboundMailSection(host=host, security="none").host == host


def test_tls_anywhere_is_allowed() -> None:
    for security in ("tls", "starttls"):
        assert InboundMailSection(host="imap.force.example", security=security).security == security


def test_the_keywords_must_differ_and_the_mailbox_be_plain_text() -> None:
    with pytest.raises(ValidationError, match="ignored_keyword must differ"):
        InboundMailSection(ignored_keyword="Casewatch-Processed")
    with pytest.raises(ValidationError, match="control characters"):
        InboundMailSection(mailbox="Border\r\nalerts")
    with pytest.raises(ValidationError, match="format characters|invisible|bidi"):
        InboundMailSection(mailbox="Border\u202ealerts")
    assert InboundMailSection(mailbox="Grenzmeldungen Ü & Co").mailbox == "Grenzmeldungen Ü & Co"
