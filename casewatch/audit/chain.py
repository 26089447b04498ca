"""The audit log's hash chain, as pure functions: what is hashed, and how.

An entry's content is canonicalised with RFC 8785 (JSON Canonicalization Scheme), so that SQLite
and PostgreSQL, which hand the same JSON back with keys in different orders, give the same hash.
The chain link of entry `seq` covers the previous link, the entry's place, its database id and its
content hash, so an edited, deleted, inserted or reordered entry breaks every link after it.

With a key ([audit] key) every hash is an HMAC-SHA256 under that key: someone who can write the
database but does not hold the key cannot recompute the chain after an edit. Without one they are
plain SHA-256, which shows an edit by anyone who does not also rebuild the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import rfc8785

# The link before the first entry, and the hash of an empty log.
GENESIS = "0" * 64
# Bumped if what is hashed ever changes: old entries keep verifying under the version they name.
VERSION = "casewatch-audit-1"
UNKEYED = "none"


@dataclass(frozen=True)
class Hasher:
    """SHA-256, or HMAC-SHA256 when the chain is keyed."""

    key: bytes = b""

    def digest(self, data: bytes) -> str:
        if self.key:
            return hmac.new(self.key, data, hashlib.sha256).hexdigest()
        return hashlib.sha256(data).hexdigest()

    @property
    def key_id(self) -> str:
        """What the chain's head records of the key: never the key, nor enough to find it."""
        if not self.key:
            return UNKEYED
        return self.digest(b"casewatch audit key id")[:16]


def canonical_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit times are aware UTC datetimes")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def content_bytes(
    *,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    purpose: str,
    details: Mapping[str, Any],
    nominals: Sequence[str],
) -> bytes:
    return canonical_json(
        [VERSION, canonical_time(at), actor, action, subject, purpose, dict(details), list(nominals)]
    )


# RFC 8785 numbers are IEEE doubles: integers beyond this are not exact in it.
SAFE_INTEGER = 2**53 - 1


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of `value`. For the usual audit content (strings, booleans, None, safe
    integers, keys within the Basic Multilingual Plane) Python's own sorted, compact json.dumps
    gives exactly those bytes (same escapes, same key order) at a third of the pure-Python
    rfc8785's cost; anything else (floats, astral-plane keys, where RFC 8785 orders by UTF-16
    code units) goes through rfc8785. An integer beyond the safe range or a NaN or infinity, which
    rfc8785 refuses, is hashed as its text, so that an audited action never fails on its entry."""
    if _plain(value):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return rfc8785.dumps(_safe_integers(value))


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return _well_formed(value)
    if isinstance(value, int):
        return -SAFE_INTEGER <= value <= SAFE_INTEGER
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and _well_formed(key) and (key.isascii() or max(key) <= "\uffff")
            and _plain(item)
            for key, item in value.items()
        )
    return False


def _well_formed(text: str) -> bool:
    """No lone surrogates (which have no UTF-8 form)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _safe_integers(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and not -SAFE_INTEGER <= value <= SAFE_INTEGER:
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list | tuple):
        return [_safe_integers(item) for item in value]
    if isinstance(value, dict):
        return {key: _safe_integers(item) for key, item in value.items()}
    return value


def content_of(row: Any) -> dict[str, Any]:
    """The hashed content of a stored entry (an audit_log row), as content_bytes() takes it. Total:
    a row edited by hand into a shape no writer makes still gives content (which then does not
    match its hash) rather than an error."""
    return dict(
        at=row.at, actor=row.actor, action=row.action, subject=row.subject, purpose=row.purpose,
        details=row.details if isinstance(row.details, dict) else {"": row.details},
        nominals=row.nominals if isinstance(row.nominals, list) else [row.nominals],
    )


def content_hash(hasher: Hasher, **content: Any) -> str:
    return hasher.digest(content_bytes(**content))


def content_hash_or_none(hasher: Hasher, **content: Any) -> str | None:
    """content_hash(), or None for content that cannot be canonicalised (put into a row by hand:
    a value no JSON writer of ours makes). Such an entry never verifies."""
    try:
        return content_hash(hasher, **content)
    except (TypeError, ValueError):  # rfc8785's errors are ValueErrors
        return None


def link_hash(hasher: Hasher, previous: str, seq: int, entry_id: int, content: str) -> str:
    return hasher.digest(f"{VERSION}:link:{previous}:{seq}:{entry_id}:{content}".encode())


def checkpoint_signature(hasher: Hasher, seq: int, chain: str, cut_at: datetime) -> str:
    """What a retention purge leaves behind: the link at the cut, signed when the chain is keyed."""
    return hasher.digest(f"{VERSION}:checkpoint:{seq}:{chain}:{canonical_time(cut_at)}".encode())
