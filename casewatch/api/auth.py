"""Request signing for the events and alerts APIs (shared/contract.md, "Events API").

    X-Casewatch-Timestamp: <unix seconds>
    X-Casewatch-Signature: v1=<hex HMAC-SHA256 over "v1:<timestamp>:<raw body>" keyed by ingest.secret>

Used by the HTTP API, and by the CLI, tests and benchmarks to sign what they send.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime

SCHEME = "v1"
TIMESTAMP_HEADER = "X-Casewatch-Timestamp"
SIGNATURE_HEADER = "X-Casewatch-Signature"

_TIMESTAMP = re.compile(r"^\d{1,12}$")


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: str | bytes, timestamp: str | int, body: bytes) -> str:
    """The X-Casewatch-Signature header value ("v1=<hex>") for this timestamp and raw body."""
    message = f"{SCHEME}:{timestamp}:".encode() + body
    return f"{SCHEME}=" + hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def check(
    secret: str | bytes,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: datetime,
    max_skew_seconds: int,
) -> str | None:
    """Why the request is not authentic, or None when it is. The reasons name no secret."""
    if not _key(secret):
        return "the events API is disabled: no ingest secret is configured"
    if not timestamp or not signature:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
    if not _TIMESTAMP.match(timestamp.strip()):
        return f"{TIMESTAMP_HEADER} must be unix seconds"
    if abs(now.timestamp() - int(timestamp)) > max_skew_seconds:
        return f"{TIMESTAMP_HEADER} is more than {max_skew_seconds} s from the server's clock"
    if not signature.strip().startswith(f"{SCHEME}="):
        return f"{SIGNATURE_HEADER} must use the {SCHEME}= scheme"
    expected = sign(secret, timestamp.strip(), body).encode("ascii")
    given = signature.strip().encode("utf-8", "replace")
    if not hmac.compare_digest(expected, given):
        return "signature does not match"
    return None


def verify(
    secret: str | bytes,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: datetime,
    max_skew_seconds: int = 300,
) -> bool:
    """True when the signature is right and the timestamp within the window."""
    return check(secret, timestamp, signature, body, now=now, max_skew_seconds=max_skew_seconds) is None
