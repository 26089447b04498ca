"""text_problem skips the per-character loop for printable ASCII; it must refuse exactly what the
per-character rule (`is_forbidden` and the kind's extra characters) refuses, and name the same
character."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casewatch.model.text_rules import _EXTRA, TextKind, character_class, is_forbidden, text_problem


def _by_character(value: str, kind: TextKind) -> tuple[str, str] | None:
    """The rule, one character at a time (the loop text_problem always ran before)."""
    for ch in value:
        if ch not in _EXTRA[kind] and is_forbidden(ch):
            return character_class(ch, kind)
    if kind is TextKind.IDENTIFIER and value != value.strip(" "):
        return "edge_spaces", "must not begin or end with a space"
    return None


def test_printable_ascii_holds_no_refused_character() -> None:
    """The fast path's premise, for every ASCII character."""
    assert [c for c in range(128) if chr(c).isprintable() and is_forbidden(chr(c))] == []


@pytest.mark.parametrize("kind", list(TextKind))
@pytest.mark.parametrize("code", range(128))
def test_every_ascii_character_is_judged_as_the_table_says(kind: TextKind, code: int) -> None:
    value = "a" + chr(code) + "a"
    assert text_problem(value, kind) == _by_character(value, kind)


def test_the_kinds_extra_characters_pass_only_where_allowed() -> None:
    assert text_problem("van\u00a0Dijk", TextKind.NAME) is None
    assert text_problem("van\u00a0Dijk", TextKind.IDENTIFIER) is not None
    assert text_problem("line one\n\tline two", TextKind.TEXT) is None
    assert text_problem("line one\nline two", TextKind.NAME) is not None
    assert text_problem(" VS-1", TextKind.IDENTIFIER) == ("edge_spaces", "must not begin or end with a space")
    # The first refused character is the one named: a bidi control before a control character.
    assert text_problem("ok\u202eno\x00", TextKind.TEXT) == character_class("\u202e", TextKind.TEXT)


_HOSTILE = st.sampled_from(
    ["\x00", "\x1b", "\x7f", "\x85", "\u00a0", "\u00ad", "\u200b", "\u202e", "\u2028", "\u3000",
     "\ue000", "\ufeff", "\ufffe", "\U000e0001", "\U0010ffff", "\ud800", "\t", "\n", " "]
)


@settings(max_examples=1500, deadline=None)
@given(
    value=st.lists(
        st.one_of(st.characters(max_codepoint=127), st.characters(), _HOSTILE), max_size=40
    ).map("".join),
    kind=st.sampled_from(list(TextKind)),
)
def test_same_answer_as_the_per_character_rule(value: str, kind: TextKind) -> None:
    assert text_problem(value, kind) == _by_character(value, kind)
