"""How names are compared: a surname or alias as typed after /flags and as stored (ingest keeps
the folded keys, lookup folds the query the same way)."""

from __future__ import annotations

import re

_NOT_NAME = re.compile(r"[^\w]|_", re.UNICODE)


def name_key(text: str) -> str:
    """A surname as compared: lower case, without spaces, hyphens, apostrophes or dots, so that
    "O'Brien", "o brien" and "OBRIEN" are one key."""
    return _NOT_NAME.sub("", text.lower())


def alias_keys(alias: str) -> list[str]:
    """The keys an alias is found by: the whole alias folded ("Jon Smythe" -> "jonsmythe", as
    a person may type it all) and each run of its last words ("smythe"; "van dyke" in "John
    Van Dyke"), since /flags is asked for a surname and an alias is often a full name."""
    words = alias.split()
    keys = [name_key("".join(words[start:])) for start in range(len(words))] or [name_key(alias)]
    return list(dict.fromkeys(k for k in keys if k))
