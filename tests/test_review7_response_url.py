"""Review (seventh session, issue 17): bot.response_url decides with urllib.parse, but the answer is
posted by slack_sdk's AsyncWebhookClient through aiohttp, which parses the URL with yarl. A URL
the check trusts must reach, by yarl's reading too, only Slack's hooks hosts on 443 or the
configured api_url's origin: no parsing trick (trailing dot, percent-encoding, IDNA, IPv6 and
numeric hosts, port spellings, user parts, backslashes, fragments) may make the two disagree.
Every URL real Slack sends (hooks.slack.com /commands, /actions, /app) stays trusted."""

from __future__ import annotations

import pytest
import yarl
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.response_url import trusted_response_url

API = "http://127.0.0.1:8123/api/"
ALLOWED = {
    ("https", "hooks.slack.com", 443), ("https", "hooks.slack-gov.com", 443), ("http", "127.0.0.1", 8123)
}

TRICKS = [
    "https://hooks.slack.com./commands/x", "https://hooks.slack.com%2eattacker.example/x",
    "https://hooks%2eslack%2ecom/x", "https://hooks.slack.com%00.attacker.example/x",
    "https://xn--hooks-slack.com/x", "https://hooks.slack.com:0443/x", "https://hooks.slack.com:00443/x",
    "https://hooks.slack.com:/x", "https://hooks.slack.com:+443/x", "https://hooks.slack.com: 443/x",
    "https://hooks.slack.com:443:443/x", "https://hooks.slack.com:443%2f@attacker.example/",
    "https://[::1]:8123/x", "http://[::ffff:127.0.0.1]:8123/x", "http://0x7f.0.0.1:8123/x",
    "http://2130706433:8123/x", "http://127.1:8123/x", "http://127.0.0.1.:8123/x",
    "https://[hooks.slack.com]/x", "https:hooks.slack.com/x", "https:/hooks.slack.com/x",
    "https://hooks.slack.com;.attacker.example/x", "https://hooks.slack.com,attacker.example/x",
    "https://hooks.slack.com#@attacker.example/x", "https://hooks.slack.com?@attacker.example/x",
    "https://attacker.example?.hooks.slack.com/x", "https://attacker.example#.hooks.slack.com",
    "https://hooks.slack.com\\.attacker.example/x", "https://hooks.slack.com/%2e%2e/%2e%2e/x",
    "HTTPS://HOOKS.SLACK.COM/commands/x", "https://hooks.slack.com:443?x", "https://hooks.slack.com/x#",
]


def _origin_by_yarl(url: str) -> tuple[str, str | None, int | None]:
    parsed = yarl.URL(url)
    return parsed.scheme, parsed.host, parsed.port


@pytest.mark.parametrize("url", TRICKS)
def test_a_trusted_url_goes_to_slack_by_aiohttps_reading_too(url: str) -> None:
    if trusted_response_url(url, API) is not None:
        assert _origin_by_yarl(url) in ALLOWED


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/commands/T0123ABCD/1234567890123/AbCdEfGhIjKlMnOpQrStUvWx",
        "https://hooks.slack.com/actions/T0123ABCD/1234567890123/AbCdEfGhIjKlMnOpQrStUvWx",
        "https://hooks.slack.com/app/T0123ABCD/1234567890123/AbCdEfGhIjKlMnOpQrStUvWx",
        "https://hooks.slack.com/app/E0123ABCD/1234567890123/AbCdEfGhIjKlMnOpQrStUvWx",
        "https://hooks.slack-gov.com/commands/T0123ABCD/1234567890123/AbCdEfGhIjKlMnOpQrStUvWx",
    ],
)
def test_what_slack_sends_is_trusted(url: str) -> None:
    assert trusted_response_url(url, API) == url
    assert _origin_by_yarl(url) in ALLOWED


_PIECES = st.sampled_from([
    "https://", "http://", "https:", "//", "hooks.slack.com", "hooks.slack-gov.com", "127.0.0.1",
    "attacker.example", ".", "..", "@", ":", ":443", ":8123", ":0443", "/", "\\", "%2e", "%40", "%2f",
    "?", "#", ";", ",", "[", "]", "::1", "xn--", "HOOKS", "user", "%00", "%", "commands/x", "0x7f", "=",
])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=9).map("".join))
def test_no_assembled_url_trusted_by_the_check_reaches_another_host(url: str) -> None:
    if trusted_response_url(url, API) is None:
        return
    try:
        origin = _origin_by_yarl(url)
    except ValueError:
        return  # aiohttp could not post to it at all
    assert origin in ALLOWED, url
