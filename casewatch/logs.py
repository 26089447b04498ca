"""Logging set-up for every command: one line per record, whatever the input.

- `SafeFormatter` escapes every character that is not printable (CR, LF, tab and other
  controls, C1 controls such as U+0085, format characters such as U+202E, line and paragraph
  separators U+2028/9) in the whole formatted record (message, arguments, traceback), so no
  value can split a line or forge one, and bounds the line's length.
- `LibraryDetailsFilter` stands between third-party libraries that format request content into
  their messages (Slack's Bolt logs the whole body of a request that fails verification) and the
  log: such a record keeps its opening words and loses its details and traceback.

Neither knows casewatch's data: the rule is that no request body, query text or personal data is
logged by casewatch's own code; these make that hold for what casewatch does not write itself.
"""

from __future__ import annotations

import logging
import re
import sys

MAX_LINE = 4096
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    """`text` with every non-printable character (controls, format characters, separators other
    than the ASCII space, unassigned and private-use code points) written as an escape."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape_char(char) for char in text)


def bounded(text: str, limit: int = MAX_LINE) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} characters cut]"


class SafeFormatter(logging.Formatter):
    """A Formatter whose every record is one bounded line with controls escaped."""

    def __init__(self, fmt: str = LINE_FORMAT, *, limit: int = MAX_LINE) -> None:
        super().__init__(fmt)
        self.limit = limit

    def format(self, record: logging.LogRecord) -> str:
        return bounded(escape(super().format(record)), self.limit)


# The opening words of a library message, before the first bracket, colon or quote: what happened,
# never what it happened to.
_OPENING = re.compile(r"[^(\[{:'\"<=%]*")
_OPENING_WORDS = 100
WITHHELD = "[details withheld]"


def opening_words(text: str) -> str:
    """The words of `text` before its first bracket, colon, quote or placeholder (bounded)."""
    opening = _OPENING.match(text)
    return (opening.group(0) if opening else "")[:_OPENING_WORDS].strip()


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


class LibraryDetailsFilter(logging.Filter):
    """Rewrites records of the named loggers (and their children) to their opening words, without
    arguments or traceback. `fixed` maps a message's start to the whole line to log instead.

    Install it on a handler to catch records propagated from any child logger, and on the
    library's loggers themselves so that every handler (a test's capture too) sees the
    rewritten record."""

    def __init__(self, prefixes: tuple[str, ...], fixed: dict[str, str] | None = None) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.fixed = dict(fixed or {})

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "details_withheld", False) or not _matches(record.name, self.prefixes):
            return True
        text = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        replacement = next((line for start, line in self.fixed.items() if text.startswith(start)), None)
        if replacement is None:
            words = opening_words(text)
            replacement = words if words == text.strip() else f"{words} {WITHHELD}"
        if record.exc_info and record.exc_info[0] is not None:
            replacement += f" ({record.exc_info[0].__name__})"
        record.msg, record.args = replacement, ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.details_withheld = True
        return True


# Libraries whose messages can carry request content: Slack's Bolt and SDK, and the logger
# casewatch hands them (bot.app.SLACK_LOGGER).
SLACK_LOGGERS = ("slack_bolt", "slack_sdk", "casewatch.bot.slack")
SLACK_FIXED = {
    "Invalid request signature detected":
        "Slack request refused: signature or timestamp not valid (nothing of the request is logged)",
}


def slack_filter() -> LibraryDetailsFilter:
    return LibraryDetailsFilter(SLACK_LOGGERS, SLACK_FIXED)


def configure(level: int | str = logging.INFO) -> logging.Handler | None:
    """Log to stderr through SafeFormatter and the Slack filter, at `level`; return the handler.
    Like logging.basicConfig, it adds nothing when the root logger already has a handler (the
    host configured logging, e.g. a test runner), and then returns None."""
    root = logging.getLogger()
    root.setLevel(level)
    if root.handlers:
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter())
    handler.addFilter(slack_filter())
    root.addHandler(handler)
    return handler
