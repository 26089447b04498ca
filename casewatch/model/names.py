"""How names are compared: the one folding of a surname, an alias and what is typed after /flags.
Ingest stores the keys in indexed columns (nominals.surname_key, nominal_aliases.alias_key) and a
lookup compares them with the folded query by equality."""

from __future__ import annotations

import unicodedata

KEY_LENGTH = 200  # the key columns' width; decomposition can lengthen a name ("ß" -> "ss")


def name_key(text: str) -> str:
    """A name as compared: compatibility-decomposed and case-folded (Unicode's compatibility
    caseless match), then only letters and digits kept. So "O'Brien", "o brien", "OBRIEN" and
    "O’Brien" are one key, as are "Smith-Jones", "Smith‐Jones" (U+2010), "Smith,Jones" and
    "Smith Jones", and "van Dijk" with a no-break space. Accents are dropped with the other
    marks ("Zoë" is "zoe"): a keyboard without them must still find the record, and an extra
    candidate, told apart by the date of birth, costs less than a nominal not found."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return "".join(ch for ch in decomposed if ch.isalnum())[:KEY_LENGTH]


def alias_keys(alias: str) -> list[str]:
    """The keys an alias is found by: the whole alias folded ("Jon Smythe" -> "jonsmythe", as
    a person may type it all) and each run of its last words ("smythe"; "van dyke" in "John
    Van Dyke"), since /flags is asked for a surname and an alias is often a full name."""
    words = alias.split()
    keys = [name_key("".join(words[start:])) for start in range(len(words))] or [name_key(alias)]
    return list(dict.fromkeys(k for k in keys if k))
