"""safe_text.printable's fast path (text str.isprintable accepts comes out as it is, line breaks
aside) gives exactly what the character-by-character rule gives."""

from __future__ import annotations

import sys
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from casewatch.safe_text import _HIDDEN, REPLACEMENT, printable


def _by_character(value: str, keep_lines: bool) -> str:
    """The rule printable implements, one character at a time (its slow path)."""
    for brk in ("\r\n", "\r", "\n"):
        value = value.replace(brk, "\n")
    out = []
    for ch in value:
        if ch == "\n":
            out.append("\n" if keep_lines else " ")
        elif ch == "\t" or unicodedata.category(ch) in _HIDDEN:
            out.append(" " if ch == "\t" else REPLACEMENT)
        else:
            out.append(ch)
    return "".join(out)


def test_no_hidden_character_is_printable_to_python() -> None:
    """The fast path's premise, for every code point: each character printable changes (tab and
    the _HIDDEN categories; line breaks are handled apart) is one str.isprintable refuses."""
    changed = [
        c for c in range(sys.maxunicode + 1)
        if (chr(c) == "\t" or unicodedata.category(chr(c)) in _HIDDEN) and chr(c).isprintable()
    ]
    assert changed == []


@settings(max_examples=500, deadline=None)
@given(st.text(), st.booleans())
def test_printable_matches_the_character_rule(value: str, keep_lines: bool) -> None:
    assert printable(value, keep_lines=keep_lines) == _by_character(value, keep_lines)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "Z", " ", "\n", "\r", "\r\n", "\t", "\u202e", "\u200b", "\x85",
                              "\u2028", "\u00a0", "\u00e9", "\U0001f600", "\ud800", "\x00"])),
    st.booleans(),
)
def test_printable_on_mixed_hostile_text(parts: list[str], keep_lines: bool) -> None:
    value = "".join(parts)
    assert printable(value, keep_lines=keep_lines) == _by_character(value, keep_lines)
    assert printable("plain digest line: 3 new", keep_lines=keep_lines) == "plain digest line: 3 new"
