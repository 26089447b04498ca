"""safe_text.mrkdwn's fast path (a line holding none of the characters the escaping may change is
returned as it is) gives exactly what the character-by-character rule gives, for any text and for
text made of the characters that matter (marks, entities, @, >, letters, spaces, line breaks)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from casewatch.safe_text import _AT, _ENTITIES, _MARKS, _QUOTE, mrkdwn, printable


def _by_character(line: str) -> str:
    """The rule _mrkdwn_line implements, one character at a time (as it was before the fast path)."""
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


def _reference(value: str, keep_lines: bool) -> str:
    return "\n".join(_by_character(line) for line in printable(value, keep_lines=keep_lines).split("\n"))


_MATTERS = st.text(alphabet=st.sampled_from(list("ab1 _*~`@&<>\n\r\t.-:éＡ\u202e")), max_size=40)


@settings(max_examples=600, deadline=None)
@given(value=st.one_of(st.text(max_size=60), _MATTERS), keep_lines=st.booleans())
def test_mrkdwn_is_the_character_rule(value: str, keep_lines: bool) -> None:
    assert mrkdwn(value, keep_lines=keep_lines) == _reference(value, keep_lines)


def test_the_values_of_an_alert_message() -> None:
    for value in ("VS-B0001234", "travel.record_fta", "end of 2026-12-01", "PC1234", "@here *now*",
                  "> quoted", "a_b_c", "<!channel>", "Border check at Benchport (outbound)", ""):
        assert mrkdwn(value) == _reference(value, False)
