"""Making values safe to show: the one place that decides how a value reaches Slack, a chat log
line, an email header or an email body.

Values come from case systems and from people (names, summaries, officer ids, outcomes): they
must be shown as they are, never obeyed. Three layers, each built on the one before:

- `printable`: no control, format or separator character survives (bidi overrides such as
  U+202E, zero-width characters, C1 controls such as U+0085, U+2028/U+2029, lone surrogates);
  each becomes U+FFFD, so the reader sees that something was there. Line breaks and tabs become
  spaces, unless `keep_lines` (then a line break stays "\\n").
- `mrkdwn`: `printable`, then Slack's escaping (&, < and > as entities: no `<!channel>`,
  `<@U..>`, `<#C..>` or `<https://..|disguised>` link can be formed), and what else Slack
  would act on is swapped for its full-width look-alike: `@` starting a word (`@here`,
  `@channel`, `@everyone` and user names are linked when `link_names` is on), the formatting
  marks `* _ ~ `` ` where they could open or close a span, and `>` opening a line (a quote).
  Every value that reaches Slack goes through this function, in every renderer.
- `header`: `printable` on one line, runs of spaces collapsed, clipped: an email header that can
  neither be split nor refused by the email library.
"""

from __future__ import annotations

import re
import unicodedata

REPLACEMENT = "\ufffd"
ELLIPSIS = "\u2026"
# Categories that are never shown: controls, format characters (bidi, zero-width), line and
# paragraph separators, surrogates (not encodable on their own).
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_LINE_BREAKS = ("\r\n", "\r", "\n")
# Formatting marks of mrkdwn: inert between two letters or digits ("level_changed"), active
# next to a space, punctuation or the end of the value ("*bold*", "_italic_").
_MARKS = {"*": "\uff0a", "_": "\uff3f", "~": "\uff5e", "`": "\uff40"}
_AT = "\uff20"
_QUOTE = "\uff1e"
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def printable(value: object, *, keep_lines: bool = False) -> str:
    """`value` as text with nothing hidden in it; one line unless `keep_lines`."""
    text = str(value)
    for brk in _LINE_BREAKS:
        text = text.replace(brk, "\n")
    if text.replace("\n", "").isprintable():
        # str.isprintable is False for tabs and every character of _HIDDEN (checked for every
        # code point in tests/test_safe_text_fast.py): only the line breaks change, no loop.
        return text if keep_lines else text.replace("\n", " ")
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\n" if keep_lines else " ")
        elif ch == "\t":
            out.append(" ")
        elif unicodedata.category(ch) in _HIDDEN:
            out.append(REPLACEMENT)
        else:
            out.append(ch)
    return "".join(out)


def mrkdwn(value: object, *, keep_lines: bool = False) -> str:
    """`value` for Slack mrkdwn (message text, block text, context): shown, never obeyed."""
    lines = printable(value, keep_lines=keep_lines).split("\n")
    return "\n".join(_mrkdwn_line(line) for line in lines)


# Every character _mrkdwn_line may change, taken from its own tables (a mark added there is
# never skipped here): a line without any is shown as it is.
_ACTIVE = re.compile("[" + re.escape("".join(sorted({*_ENTITIES, *_MARKS, ">", "@"}))) + "]")


def _mrkdwn_line(line: str) -> str:
    if _ACTIVE.search(line) is None:
        return line  # most values (references, dates, plain summaries): no loop on the event loop
    out = []
    leading = True
    for i, ch in enumerate(line):
        before = line[i - 1] if i else ""
        after = line[i + 1] if i + 1 < len(line) else ""
        if leading and ch == ">":
            out.append(_QUOTE)
        elif ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in _MARKS and not (before.isalnum() and after.isalnum()):
            out.append(_MARKS[ch])
        elif ch == "@" and not before.isalnum():
            out.append(_AT)
        else:
            out.append(ch)
        leading = leading and ch == " "
    return "".join(out)


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters with an ellipsis, never inside an entity that
    `mrkdwn` wrote (a cut "&am" would show as litter)."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 1)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp < 5:
        cut = cut[:amp]
    return cut + ELLIPSIS


def header(value: object, limit: int = 250) -> str:
    """`value` as one email header line: printable, single spaces, at most `limit` characters."""
    return clip(" ".join(printable(value).split()), limit)
