"""Request signing: what the HMAC covers, and each way a request is refused (unsigned, malformed,
stale, wrong secret, altered method or path), plus the empty-secret refusal."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
from multidict import CIMultiDict

from coordination.sync_auth import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AuthError,
    auth_headers,
    require_secret,
    sign,
    verify,
)

SECRET = "cluster-secret"
NOW = 1_700_000_000


def signed(method: str = "GET", path: str = "/sync/manifest", timestamp: int = NOW,
           secret: str = SECRET) -> CIMultiDict[str]:
    return CIMultiDict({TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, method, path, timestamp)})


def test_the_signature_is_an_hmac_over_method_path_and_time() -> None:
    expected = hmac.new(SECRET.encode(), f"GET\n/sync/file/games/a.db?x=1\n{NOW}".encode(), hashlib.sha256)
    assert sign(SECRET, "get", "/sync/file/games/a.db?x=1", NOW) == expected.hexdigest()
    assert sign(SECRET.encode(), "GET", "/p", NOW) == sign(SECRET, "GET", "/p", NOW)


def test_a_correctly_signed_request_passes_within_the_skew() -> None:
    verify(SECRET, "GET", "/sync/manifest", signed(), now=NOW)
    verify(SECRET, "GET", "/sync/manifest", signed(), now=NOW + 60)
    verify(SECRET, "GET", "/sync/manifest", signed(), now=NOW - 60)
    lower = {TIMESTAMP_HEADER.lower(): str(NOW), SIGNATURE_HEADER.lower(): sign(SECRET, "GET", "/m", NOW)}
    verify(SECRET, "GET", "/m", CIMultiDict(lower), now=NOW)


def test_auth_headers_sign_the_request_now() -> None:
    headers = auth_headers(SECRET, "HEAD", "/sync/file/games/a.db")
    verify(SECRET, "HEAD", "/sync/file/games/a.db", headers, now=time.time())


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "unsigned request"),
    ({TIMESTAMP_HEADER: str(NOW)}, "unsigned request"),
    ({SIGNATURE_HEADER: "ab" * 32}, "unsigned request"),
    ({TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: "ab" * 32}, "malformed X-Ringrift-Timestamp"),
    ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "ab" * 32}, "wrong signature"),
    ({TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "é"}, "wrong signature"),
])
def test_unsigned_or_malformed_requests_are_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(AuthError, match=reason) as info:
        verify(SECRET, "GET", "/sync/manifest", CIMultiDict(headers), now=NOW)
    assert info.value.reason.startswith(reason)


@pytest.mark.parametrize("offset", [61, -61, 3600])
def test_stale_or_future_signatures_are_refused(offset: int) -> None:
    with pytest.raises(AuthError, match="stale signature"):
        verify(SECRET, "GET", "/sync/manifest", signed(), now=NOW + offset)


def test_a_wider_skew_can_be_allowed() -> None:
    verify(SECRET, "GET", "/sync/manifest", signed(), now=NOW + 100, max_skew_s=120)


@pytest.mark.parametrize(("method", "path", "secret"), [
    ("GET", "/sync/manifest", "another-secret"),
    ("HEAD", "/sync/manifest", SECRET),
    ("GET", "/sync/file/games/a.db", SECRET),
    ("GET", "/sync/manifest?x=1", SECRET),
])
def test_a_signature_for_another_secret_method_or_path_is_wrong(method: str, path: str, secret: str) -> None:
    with pytest.raises(AuthError, match="wrong signature"):
        verify(secret, method, path, signed(), now=NOW)


def test_an_empty_secret_is_refused_with_the_variable_to_set() -> None:
    for empty in ("", b"", None):
        with pytest.raises(ValueError, match="RINGRIFT_CLUSTER_SECRET"):
            require_secret(empty)
    with pytest.raises(ValueError, match="RINGRIFT_CLUSTER_SECRET"):
        sign("", "GET", "/", NOW)
