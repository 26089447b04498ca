"""Which response URLs an answer may be posted to.

A slash command or a button press carries a `response_url`, and an answer posted there holds
personal data (a nominal's flags). The request is signed, but the URL is still a value from
outside: an answer goes only to Slack's own hooks host over HTTPS (Slack documents response URLs
as https://hooks.slack.com/commands/..., /actions/..., /app/...; GovSlack's is
hooks.slack-gov.com), or to the origin of the configured `slack.api_url` (the Slack an operator
chose: a local stand-in in tests). Anything else (another host, plain HTTP, a user part, an
unusual port, odd characters) is refused, and the answer goes another way or not at all.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

SLACK_HOOK_HOSTS = frozenset({"hooks.slack.com", "hooks.slack-gov.com"})
MAX_LENGTH = 2048


def _parts(url: str) -> SplitResult | None:
    if not url or len(url) > MAX_LENGTH or not url.isascii() or not url.isprintable():
        return None
    if any(c.isspace() or c in "\\<>\"'`{}|^" for c in url):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        return None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.password:
        return None
    if "@" in parts.netloc or parts.fragment:
        return None
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def trusted_response_url(url: object, api_url: str) -> str | None:
    """`url` if an answer may be posted to it (see the module's docstring), else None."""
    if not isinstance(url, str):
        return None
    parts = _parts(url)
    if parts is None:
        return None
    origin = _origin(parts)
    if origin[0] == "https" and origin[1] in SLACK_HOOK_HOSTS and origin[2] == 443:
        return url
    api = _parts(api_url)
    if api is not None and origin == _origin(api):
        return url
    return None
