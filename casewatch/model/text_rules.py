"""Which characters a text value sent to casewatch may hold: one checker for every identifier,
name and free-text field (events, alerts API query values, configuration).

Refused everywhere (the pinned table in casewatch.model.unicode_table, Unicode 14.0.0): controls (C0,
DEL, C1), format characters (bidi controls, zero-width characters, soft hyphen, ...), line and
paragraph separators, spaces other than U+0020, private use, surrogates, unassigned code points
and noncharacters, the other default-ignorable code points (U+115F, U+3164, variation
selectors, ...), and the symbols every common font draws as blank (U+2800, U+1D159). They are
invisible or move text around, so they can disguise what an officer
reads, split a value across lines, or make two references that look the same differ.

Per kind of field:
- IDENTIFIER (ids, references, team and officer ids, codes): nothing more; no leading or trailing
  space either.
- NAME (surnames, labels, places): may also hold U+00A0 (no-break space). Case systems and word
  processors put it in names ("van\u00a0Dijk"); it shows as an ordinary space, lookups fold it
  away like any space (casewatch.model.names), and refusing it would bounce a whole nominal record for
  a harmless character.
- TEXT (summaries, rationales): as NAME, plus "\\n" and "\\t".

Messages name the class of character and its code point, never the value.
"""

from __future__ import annotations

import bisect
import sys
import unicodedata
from enum import Enum

from casewatch.model.unicode_table import FORBIDDEN, UNICODE_VERSION

_STARTS = [first for first, _ in FORBIDDEN]
NBSP = "\u00a0"

# The Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt, Unicode 14.0.0); those of
# category Cf or Cn are refused by category anyway.
DEFAULT_IGNORABLE: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)


# Visible characters by category (So) that every common font draws as nothing: a reason or name of
# them reads as blank to a reviewer, and "north" and "north\u2800" look the same. U+2800 BRAILLE
# PATTERN BLANK, U+1D159 MUSICAL SYMBOL NULL NOTEHEAD. (The Hangul fillers are default-ignorable.)
BLANK_GLYPHS: tuple[tuple[int, int], ...] = ((0x2800, 0x2800), (0x1D159, 0x1D159))


class TextKind(Enum):
    IDENTIFIER = "identifier"
    NAME = "name"
    TEXT = "text"


# Characters of the table a kind still accepts.
_EXTRA: dict[TextKind, frozenset[str]] = {
    TextKind.IDENTIFIER: frozenset(),
    TextKind.NAME: frozenset(NBSP),
    TextKind.TEXT: frozenset(NBSP + "\t\n"),
}


def is_forbidden(ch: str) -> bool:
    """True when the table refuses `ch` (whatever the kind of field)."""
    code = ord(ch)
    index = bisect.bisect_right(_STARTS, code) - 1
    return index >= 0 and code <= FORBIDDEN[index][1]


def _in(ranges: tuple[tuple[int, int], ...], code: int) -> bool:
    return any(first <= code <= last for first, last in ranges)


def character_class(ch: str, kind: TextKind = TextKind.IDENTIFIER) -> tuple[str, str]:
    """(error type, what is wrong) for a refused character; names its class and code point."""
    code = ord(ch)
    point = f"U+{code:04X}"
    category = unicodedata.category(ch)
    if category == "Cc":
        return "control_characters", f"must not contain control characters ({point})"
    if category == "Cs":
        return "encoding", f"contains an unpaired surrogate ({point}): not valid Unicode"
    if category == "Cf" or _in(DEFAULT_IGNORABLE, code):
        return "format_characters", (
            f"must not contain invisible format characters such as bidi controls, zero-width or "
            f"default-ignorable characters ({point})"
        )
    if category in ("Zl", "Zp"):
        return "separator_characters", f"must not contain line or paragraph separators ({point})"
    if category == "Zs":
        allowed = "U+0020" if kind is TextKind.IDENTIFIER else "U+0020 and U+00A0"
        return "space_characters", f"must not contain spaces other than {allowed} ({point})"
    if category == "Co":
        return "private_use", f"must not contain private-use characters ({point})"
    if _in(BLANK_GLYPHS, code):
        return "blank_characters", f"must not contain characters that show as blank ({point})"
    return "unassigned", (
        f"must not contain unassigned code points or noncharacters (Unicode {UNICODE_VERSION}) ({point})"
    )


def text_problem(value: str, kind: TextKind) -> tuple[str, str] | None:
    """Why `value` is refused for a field of `kind`, as (error type, message), or None."""
    # Nearly every value is printable ASCII, which holds no refused character (the table's ASCII
    # entries are the controls, which str.isprintable refuses): checked in C, not per character.
    if not (value.isascii() and value.isprintable()):
        extra = _EXTRA[kind]
        for ch in value:
            if ch not in extra and is_forbidden(ch):
                return character_class(ch, kind)
    if kind is TextKind.IDENTIFIER and value != value.strip(" "):
        return "edge_spaces", "must not begin or end with a space"
    return None


def ascii_digits(text: str) -> bool:
    """True for a non-empty run of ASCII digits only ("\u00b2" and "\u0663" pass str.isdigit())."""
    return bool(text) and text.isascii() and text.isdigit()


# --- the same rules as ECMA-262 patterns, for docs/openapi.yaml ---------------------------------


def _escape(code: int) -> str:
    # BMP code points as \\uXXXX; astral ones as the character itself (ECMA-262 has no
    # \\UXXXXXXXX escape; with the "u" flag a literal astral character is one code point).
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


def _ranges(kind: TextKind) -> list[tuple[int, int]]:
    """The table minus what `kind` accepts, split at the BMP boundary."""
    keep = sorted(ord(ch) for ch in _EXTRA[kind])
    out: list[tuple[int, int]] = []
    for first, last in FORBIDDEN:
        cuts = [first]
        for code in keep:
            if first <= code <= last:
                if cuts[-1] <= code - 1:
                    out.append((cuts[-1], code - 1))
                cuts.append(code + 1)
        if cuts[-1] <= last:
            out.append((cuts[-1], last))
    split: list[tuple[int, int]] = []
    for first, last in out:
        if first <= 0xFFFF < last:
            split.extend([(first, 0xFFFF), (0x10000, last)])
        else:
            split.append((first, last))
    return split


def forbidden_class(kind: TextKind) -> str:
    """A negated character class of what `kind` refuses: "[^\\u0000-\\u001f...]"."""
    parts = [_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in _ranges(kind)]
    return "[^" + "".join(parts) + "]"


def characters_pattern(kind: TextKind) -> str:
    """An ECMA-262 pattern (also read alike by Python's re) for a value of allowed characters."""
    return "^" + forbidden_class(kind) + "*$"


# --- regenerating the table ------------------------------------------------------------------------


def _refused_by_category(code: int) -> bool:
    category = unicodedata.category(chr(code))
    if category[0] == "C" or category in ("Zl", "Zp") or (category == "Zs" and code != 0x20):
        return True
    return (
        _in(DEFAULT_IGNORABLE, code) or _in(BLANK_GLYPHS, code)
        or 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE
    )


def forbidden_from_unicodedata() -> list[tuple[int, int]]:
    """The table as this Python's unicodedata gives it (for regenerating and checking it)."""
    ranges: list[tuple[int, int]] = []
    start: int | None = None
    for code in range(sys.maxunicode + 1):
        if _refused_by_category(code):
            start = code if start is None else start
        elif start is not None:
            ranges.append((start, code - 1))
            start = None
    if start is not None:
        ranges.append((start, sys.maxunicode))
    return ranges


_TABLE_DOC = '''"""Code points refused in every identifier, name and text field (casewatch.model.text_rules),
as sorted ranges (first, last): controls (Cc), format characters (Cf), line and paragraph
separators (Zl, Zp), spaces other than U+0020 (Zs), private use (Co), surrogates (Cs), unassigned
code points and noncharacters (Cn), the other Default_Ignorable_Code_Points (U+115F, U+3164,
variation selectors, ...), and the symbols drawn as blank (U+2800, U+1D159), as of Unicode
UNICODE_VERSION.

Generated by `python -m casewatch.model.text_rules --table > casewatch/model/unicode_table.py`
on a Python whose unicodedata has that version, and pinned: what is refused, and the patterns in
docs/openapi.yaml, do not change with the Python version. Do not edit by hand.
"""
'''


def _table_source() -> str:
    items = [f"(0x{a:04X}, 0x{b:04X})," for a, b in forbidden_from_unicodedata()]
    lines, line = [], ""
    for item in items:
        if len(line) + len(item) + 1 > 96:
            lines.append("    " + line)
            line = ""
        line = f"{line} {item}" if line else item
    lines.append("    " + line)
    body = "\n".join(lines)
    version = unicodedata.unidata_version
    head = f'{_TABLE_DOC}\nUNICODE_VERSION = "{version}"\n\n'
    return f"{head}FORBIDDEN: tuple[tuple[int, int], ...] = (\n{body}\n)\n"


if __name__ == "__main__":  # python -m casewatch.model.text_rules --table > casewatch/model/unicode_table.py
    if sys.argv[1:] != ["--table"]:
        sys.exit("usage: python -m casewatch.model.text_rules --table > casewatch/model/unicode_table.py")
    sys.stdout.write(_table_source())
