"""Request signing for the events and alerts APIs (shared/contract.md, "Events API" and the v2
additions).

    X-Casewatch-Timestamp: <unix seconds, ASCII digits>
    X-Casewatch-Signature: v2=<hex HMAC-SHA256 over "v2:<timestamp>:<METHOD>:<path?query>:<raw body>">

keyed by ingest.secret. `<path?query>` is the request target exactly as sent on the request line
(aiohttp's `request.raw_path`: no decoding, no re-encoding), so the signer must sign the very
bytes it sends; a client library that re-encodes the URL after signing breaks the signature.
v2 binds the method, path and query, so a captured read cannot be replayed for another alert or
list. The older scheme, v1=<hex HMAC-SHA256 over "v1:<timestamp>:<raw body>">, signs only the
body; it is accepted for POST /api/v1/events alone (the caller says so with `allow_v1`).

Used by the HTTP API, and by the CLI, tests and benchmarks to sign what they send.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import datetime

SCHEME = "v1"
SCHEME_V2 = "v2"
TIMESTAMP_HEADER = "X-Casewatch-Timestamp"
SIGNATURE_HEADER = "X-Casewatch-Signature"

# ASCII digits only, the whole value: "\u00b2" passes str.isdigit() and `$` lets a final "\n" in.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _hmac(secret: str | bytes, message: bytes) -> str:
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def _utf8(text: str) -> bytes:
    """UTF-8, with bytes the server could not decode (surrogate-escaped) given back as they came."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def sign(secret: str | bytes, timestamp: str | int, body: bytes) -> str:
    """The v1 X-Casewatch-Signature header value ("v1=<hex>") for this timestamp and raw body."""
    return f"{SCHEME}=" + _hmac(secret, f"{SCHEME}:{timestamp}:".encode() + body)


def sign_v2(secret: str | bytes, timestamp: str | int, method: str, target: str, body: bytes) -> str:
    """The v2 X-Casewatch-Signature header value ("v2=<hex>"): the timestamp, the method (in
    capitals), the request target exactly as sent ("/api/v1/alerts?state=open") and the raw body."""
    head = _utf8(f"{SCHEME_V2}:{timestamp}:{method.upper()}:{target}:")
    return f"{SCHEME_V2}=" + _hmac(secret, head + body)


def signed_post_headers(secret: str | bytes, target: str, body: bytes) -> dict[str, str]:
    """What a sender puts on a JSON POST of `body` to `target` (a bridge, the demo, the bench):
    the content type, the current timestamp and the v2 signature over them."""
    stamp = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign_v2(secret, stamp, "POST", target, body),
    }


def _timestamp_problem(timestamp: str, now: datetime, max_skew_seconds: int) -> str | None:
    if not _TIMESTAMP.fullmatch(timestamp):
        return f"{TIMESTAMP_HEADER} must be unix seconds (ASCII digits)"
    if abs(now.timestamp() - int(timestamp)) > max_skew_seconds:
        return f"{TIMESTAMP_HEADER} is more than {max_skew_seconds} s from the server's clock"
    return None


def _expected(
    secret: str | bytes, timestamp: str, signature: str, body: bytes,
    method: str, target: str, allow_v1: bool,
) -> tuple[str | None, str | None]:
    """(the signature this request should carry, None) or (None, why its scheme is refused)."""
    if signature.startswith(f"{SCHEME_V2}="):
        return sign_v2(secret, timestamp, method, target, body), None
    if signature.startswith(f"{SCHEME}="):
        if allow_v1:
            return sign(secret, timestamp, body), None
        return None, (
            f"{SIGNATURE_HEADER} must use the {SCHEME_V2}= scheme here (method, path and query "
            f"signed); {SCHEME}= is accepted only for POST /api/v1/events"
        )
    schemes = f"{SCHEME_V2}= or {SCHEME}=" if allow_v1 else f"{SCHEME_V2}="
    return None, f"{SIGNATURE_HEADER} must use the {schemes} scheme"


def check(
    secret: str | bytes,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: datetime,
    max_skew_seconds: int,
    method: str,
    target: str,
    allow_v1: bool = False,
) -> str | None:
    """Why the request is not authentic, or None when it is. The reasons name no secret and
    echo nothing the client sent. `method` and `target` are what v2 signs; `allow_v1` lets the
    body-only v1 scheme through (POST /api/v1/events only)."""
    if not _key(secret):
        return "the events API is disabled: no ingest secret is configured"
    if not timestamp or not signature:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header"
    problem = _timestamp_problem(timestamp, now, max_skew_seconds)
    if problem is not None:
        return problem
    expected, problem = _expected(secret, timestamp, signature, body, method, target, allow_v1)
    if expected is None:
        return problem
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace")):
        return "signature does not match"
    return None

