"""Reading what an officer typed after /flags: a ViSOR reference, a PNC ID, or a surname with an
optional date of birth, then optionally `reason: <why they need it>` (need to know: required to see
another team's nominal). Case, spacing, punctuation and accents in names are forgiven (the one
folding, casewatch.model.names)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from typing import Literal

from casewatch.model.names import name_key
from casewatch.model.text_rules import TextKind, ascii_digits, text_problem

QueryKind = Literal["identifier", "surname"]

_MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
            ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
            ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
            ("dec", "december"),
        ],
        start=1,
    )
    for name in names
}
# Matched whole (fullmatch), ASCII digits only: "\d" also takes "\u0663" and the like, and
# str.isdigit() takes "\u00b2", which int() then refuses.
_ISO = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")
_DMY = re.compile(r"([0-9]{1,2})[/.\-]([0-9]{1,2})[/.\-]([0-9]{2,4})")
_PNC = re.compile(r"([0-9]{2}|[0-9]{4})/?0*([0-9]{1,7})([A-Z])")
# The first `reason:` as a word of its own (any case): the query before it, the reason after it.
_REASON = re.compile(r"(?<!\w)reason:", re.IGNORECASE)
REASON_MIN_LENGTH = 3
REASON_MAX_LENGTH = 200
REASON_HOW = "/flags <query> reason: <why you need it>"


class QueryError(ValueError):
    """The text cannot be read as a lookup; the message says how to write it."""


@dataclass(frozen=True)
class Query:
    kind: QueryKind
    text: str  # as typed, whitespace tidied: what the audit log records as asked
    identifier: str = ""  # upper-cased, no spaces (kind "identifier")
    name_key: str = ""  # see name_key() (kind "surname")
    date_of_birth: date | None = None
    reason: str | None = None  # why the requester needs it (validated, whitespace tidied)


def clean_text(raw: str) -> str:
    """What was typed, without control and format characters (NUL, bidi overrides, ...), which
    PostgreSQL refuses in text and which can disguise what is shown; white space tidied."""
    kept = "".join(ch if ch.isspace() or not unicodedata.category(ch).startswith("C") else "" for ch in raw)
    return " ".join(kept.split())


def split_reason(raw: str) -> tuple[str, str | None]:
    """(the query, the reason as typed or None): everything after the first `reason:` keyword."""
    match = _REASON.search(raw)
    if match is None:
        return raw, None
    return raw[: match.start()], raw[match.end() :]


def clean_reason(raw: str) -> str:
    """The reason as stored: runs of white space as one space. QueryError for one too short or too
    long, or holding control or invisible format characters (which could disguise what a reviewer
    reads); the message never repeats the reason."""
    problem = text_problem(raw, TextKind.TEXT)
    if problem is not None:
        raise QueryError(f"the reason {problem[1]}; write it as plain text")
    reason = " ".join(raw.split())
    # Words, not only marks: a reason of dots or dashes reads as none to whoever reviews it.
    if not REASON_MIN_LENGTH <= len(reason) <= REASON_MAX_LENGTH or not any(ch.isalpha() for ch in reason):
        raise QueryError(
            # Quotes, not backticks: the answer escapes the message (it may hold what was typed),
            # which shows a backtick as a look-alike, not as code.
            f"give a reason in words, {REASON_MIN_LENGTH} to {REASON_MAX_LENGTH} characters, "
            f'after "reason:" ({REASON_HOW})'
        )
    return reason


def pnc_key(text: str) -> str | None:
    """A PNC ID in one canonical short form ("98/1234X") whether written long ("1998/0001234X")
    or short, with or without the slash; None if it is not shaped like one."""
    match = _PNC.fullmatch(text.upper().replace(" ", ""))
    if match is None:
        return None
    year, serial, check = match.groups()
    return f"{year[-2:]}/{int(serial)}{check}"


def _four_digit_year(year: str, typed: str) -> int:
    if len(year) != 4:
        raise QueryError(f"'{typed}': write the year with four digits, for example 14/03/1980")
    return int(year)


def _make_date(year: int, month: int, day: int, typed: str) -> date:
    try:
        return date(year, month, day)
    except ValueError:
        raise QueryError(f"'{typed}' is not a real date") from None


def _numeric_date(token: str) -> date | None:
    if m := _ISO.fullmatch(token):
        return _make_date(int(m[1]), int(m[2]), int(m[3]), token)
    if m := _DMY.fullmatch(token):
        return _make_date(_four_digit_year(m[3], token), int(m[2]), int(m[1]), token)
    return None


def _split_date_of_birth(tokens: list[str]) -> tuple[list[str], date | None]:
    """Take a date of birth off the end: 14/03/1980, 14-03-1980, 14.03.1980, 1980-03-14 or
    14 Mar 1980."""
    if tokens:
        found = _numeric_date(tokens[-1])
        if found is not None:
            return tokens[:-1], found
    if len(tokens) >= 3 and tokens[-2].lower().rstrip(".") in _MONTHS:
        day, month, year = tokens[-3], tokens[-2].lower().rstrip("."), tokens[-1]
        typed = " ".join(tokens[-3:])
        if ascii_digits(day) and ascii_digits(year):
            return tokens[:-3], _make_date(
                _four_digit_year(year, typed), _MONTHS[month], int(day), typed
            )
    return tokens, None


def parse_query(raw: str) -> Query | None:
    """None for an empty query (the caller shows usage help); QueryError for one it cannot read,
    or for a `reason:` whose reason is refused (clean_reason)."""
    typed, typed_reason = split_reason(raw)
    reason = clean_reason(typed_reason) if typed_reason is not None else None
    query = _parse_lookup(typed)
    if query is None or reason is None:
        return query
    return Query(query.kind, query.text, query.identifier, query.name_key, query.date_of_birth, reason)


def _parse_lookup(raw: str) -> Query | None:
    text = clean_text(raw)
    if not text:
        return None
    tokens = text.split(" ")
    rest, dob = _split_date_of_birth(tokens)
    rest_text = " ".join(rest)
    if dob is None and any(ch.isdigit() for ch in text):
        return Query("identifier", text, identifier="".join(tokens).upper())
    if not rest:
        raise QueryError("give the surname as well as the date of birth, for example: smith 14/03/1980")
    if any(ch.isdigit() for ch in rest_text):
        raise QueryError(
            "a surname has no digits; for a date of birth after it write 14/03/1980 or 1980-03-14"
        )
    key = name_key(rest_text)
    if not key:
        raise QueryError("give a ViSOR reference, a PNC ID, or a surname")
    return Query("surname", text, name_key=key, date_of_birth=dob)
