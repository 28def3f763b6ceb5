"""Signed data-plane requests: HMAC-SHA256 with the cluster secret (RINGRIFT_CLUSTER_SECRET).

A request carries two headers:

    X-Ringrift-Timestamp: 1717171717                    Unix seconds when it was signed
    X-Ringrift-Signature: <hex HMAC-SHA256>             over "METHOD\\npath?query\\ntimestamp"

The path is the request target exactly as sent on the wire (percent-encoding included, query string
included), so the server checks what it received, before any decoding. A signature older or newer
than `max_skew_s` (60 s) is refused; within that window a captured request could be replayed, which
the data plane accepts because every signed route only reads. Comparison is constant-time.

    headers = auth_headers(secret, "GET", "/sync/manifest")
    verify(secret, "GET", "/sync/manifest", headers, now=time.time())    # raises AuthError(reason)
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "AuthError", "auth_headers", "require_secret", "sign", "verify"]

TIMESTAMP_HEADER = "X-Ringrift-Timestamp"
SIGNATURE_HEADER = "X-Ringrift-Signature"


class AuthError(Exception):
    """A request whose signature is missing, malformed, stale or wrong; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def require_secret(secret: str | bytes | None) -> bytes:
    """The secret as bytes; ValueError when it is missing or empty (nothing may be served unsigned)."""
    if not secret:
        raise ValueError("the cluster secret is empty: set RINGRIFT_CLUSTER_SECRET (the same value on every node)")
    return secret.encode() if isinstance(secret, str) else secret


def sign(secret: str | bytes, method: str, path_with_query: str, timestamp: int) -> str:
    message = f"{method.upper()}\n{path_with_query}\n{int(timestamp)}".encode()
    return hmac.new(require_secret(secret), message, hashlib.sha256).hexdigest()


def auth_headers(secret: str | bytes, method: str, path: str) -> dict[str, str]:
    """The headers signing `method path` now."""
    timestamp = int(time.time())
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, method, path, timestamp)}


def verify(secret: str | bytes, method: str, path: str, headers: Mapping[str, str], now: float,
           max_skew_s: float = 60) -> None:
    """Return when `headers` sign `method path` within `max_skew_s` of `now`; AuthError otherwise.
    `headers` must look names up case-insensitively (an aiohttp/multidict mapping does)."""
    stamp = headers.get(TIMESTAMP_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if not stamp or not signature:
        raise AuthError(f"unsigned request: {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise AuthError(f"malformed {TIMESTAMP_HEADER}: {stamp[:40]!r} is not Unix seconds") from None
    if abs(now - timestamp) > max_skew_s:
        raise AuthError(f"stale signature: signed {now - timestamp:+.0f} s from now, more than {max_skew_s:g} s")
    expected = sign(secret, method, path, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode("utf-8", "replace")):
        raise AuthError("wrong signature (different cluster secret, or the request was altered)")
