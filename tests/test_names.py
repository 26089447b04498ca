"""The one name folding (casewatch.model.names): what a surname, an alias and a typed /flags
query are compared by. All names are examples of shapes, not people."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casewatch.model.names import KEY_LENGTH, alias_keys, name_key

GREEK_UPPER = "\u03a0\u0391\u03a0\u0391\u0394\u038c\u03a0\u039f\u03a5\u039b\u039f\u03a3"  # with tonos
GREEK_LOWER = "\u03c0\u03b1\u03c0\u03b1\u03b4\u03cc\u03c0\u03bf\u03c5\u03bb\u03bf\u03c2"
GREEK_KEY = "\u03c0\u03b1\u03c0\u03b1\u03b4\u03bf\u03c0\u03bf\u03c5\u03bb\u03bf\u03c3"


@pytest.mark.parametrize(
    ("name", "key"),
    [
        # Case, spaces and punctuation, however written.
        ("O'Brien", "obrien"),
        ("o brien", "obrien"),
        ("OBRIEN", "obrien"),
        ("O\u2019Brien", "obrien"),  # right single quotation mark, as word processors write it
        ("Smith-Jones", "smithjones"),
        ("Smith\u2010Jones", "smithjones"),  # U+2010 hyphen
        ("Smith \u2013 Jones", "smithjones"),  # en dash
        ("Smith,Jones", "smithjones"),
        ("Smith_Jones", "smithjones"),
        ("D`Arcy", "darcy"),
        ("D'Arcy", "darcy"),
        ("St. John", "stjohn"),
        ("Smith (Jnr)", "smithjnr"),
        ("van\u00a0Dijk", "vandijk"),  # no-break space
        ("  Van   Der\tBerg ", "vanderberg"),
        # Compatibility forms and case folding beyond lower().
        ("\uff33\uff4d\uff49\uff54\uff48", "smith"),  # full-width letters
        ("Stra\u00dfe", "strasse"),
        ("STRASSE", "strasse"),
        (GREEK_UPPER, GREEK_KEY),
        (GREEK_LOWER, GREEK_KEY),  # a final sigma folds as any sigma
        ("\u0418\u0432\u0430\u043d\u043e\u0432", "\u0438\u0432\u0430\u043d\u043e\u0432"),
        # Accents go, whether composed (NFC) or not (NFD); letters that are not a base letter
        # with a mark stay what they are.
        ("Zo\u00eb", "zoe"),
        ("Zoe\u0308", "zoe"),
        ("ZO\u00cb", "zoe"),
        ("Zoe", "zoe"),
        ("S\u00f8ren", "s\u00f8ren"),
        # Nothing to compare.
        ("'''", ""),
        ("", ""),
        # As wide as the key columns, however much decomposition lengthens it.
        ("\u00df" * 150, "s" * KEY_LENGTH),
    ],
)
def test_name_key(name: str, key: str) -> None:
    assert name_key(name) == key


@pytest.mark.parametrize(
    ("alias", "keys"),
    [
        ("Jon Smythe", ["jonsmythe", "smythe"]),
        ("John Van Dyke", ["johnvandyke", "vandyke", "dyke"]),
        ("van\u00a0Dijk", ["vandijk", "dijk"]),  # a no-break space parts words too
        ("Smith (Jnr)", ["smithjnr", "jnr"]),
        ("Smith,Jones", ["smithjones"]),
        ("O'Oldname", ["ooldname"]),
        ("Sampleton SAMPLETON", ["sampletonsampleton", "sampleton"]),
        ("---", []),
        ("", []),
    ],
)
def test_alias_keys(alias: str, keys: list[str]) -> None:
    assert alias_keys(alias) == keys


@given(st.text(max_size=60))
def test_an_alias_is_found_by_the_key_the_same_surname_has(text: str) -> None:
    """So a name typed exactly as stored finds it whether it is stored as a surname or an alias."""
    assert alias_keys(text)[:1] == ([name_key(text)] if name_key(text) else [])
