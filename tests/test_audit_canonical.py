"""The audit content's canonical form (casewatch.audit.chain.canonical_json): the fast path gives
exactly the RFC 8785 bytes the rfc8785 library gives, for any JSON value; integers beyond the
RFC's safe range hash (as text) instead of failing the audited action."""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from casewatch.audit.chain import SAFE_INTEGER, _safe_integers, canonical_json

# Every kind of text JSON may carry: controls, quotes, backslashes, U+2028, the private use area
# (U+E000-U+F8FF, where UTF-16 and code point orders part), astral characters; no lone surrogates
# (a database cannot store them).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
SCALARS = (
    st.none() | st.booleans() | TEXT
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_the_fast_path_gives_the_rfc8785_bytes(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(_safe_integers(value))


def test_rows_that_part_the_two_orders() -> None:
    """Keys RFC 8785 orders by UTF-16 code units: an astral key sorts before U+E000-U+FFFF there,
    after them by code point; the result must be the RFC's."""
    value = {"\U0001f600": 1, "\ue000": 2, "a": 3}
    assert canonical_json(value) == '{"a":3,"\U0001f600":1,"\ue000":2}'.encode()
    assert canonical_json({"x": "\u2028\x00\x1f\"\\"}) == b'{"x":"\xe2\x80\xa8\\u0000\\u001f\\"\\\\"}'
    assert canonical_json([1.0, 1e21, -0.0]) == b"[1,1e+21,0]"


def test_an_integer_beyond_the_safe_range_hashes_as_text() -> None:
    assert canonical_json({"n": SAFE_INTEGER}) == b'{"n":9007199254740991}'
    assert canonical_json({"n": SAFE_INTEGER + 1}) == b'{"n":"9007199254740992"}'
    assert canonical_json([-(2**70)]) == b'["-1180591620717411303424"]'
