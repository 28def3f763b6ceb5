"""The content hash: SHA-256 of the RFC 8785 (JCS) canonical JSON of an event's type and payload.

    content_hash(event_type, payload) = sha256(JCS({"event_type": <canonical name>,
                                                    "payload": <payload minus volatile keys>})).hexdigest()

The volatile top-level payload keys (`timestamp`, `created_at`, `node_name`, `source`, `routed`) are
left out, so the same fact published twice at different times hashes the same.

JCS is what a JavaScript program gets from `JSON.stringify` on recursively key-sorted data, so any
language can compute the hash (`schemas/vectors/content_hash.json` pins it). msgspec's sorted-key
encoder already produces JCS bytes for strings, integers, booleans and null. Two things it cannot do:
print floats the way JavaScript does (`1.0` -> `1`, `1e21` -> `1e+21`), and sort keys with characters
at or above U+E000 by UTF-16 code units. Floats are found by a cheap probe (msgpack marks every
float with the byte 0xCB; a false alarm only costs a walk) and replaced by their JavaScript text before
encoding; non-BMP-sorting keys are rare enough to go through the exact `rfc8785` encoder. Integers
beyond +-2**53 are hashed by their exact digits (a JavaScript number cannot hold them).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec
import rfc8785

__all__ = ["VOLATILE_PAYLOAD_KEYS", "canonical_json", "content_hash", "js_number"]

VOLATILE_PAYLOAD_KEYS = ("timestamp", "created_at", "node_name", "source", "routed")

_encode_sorted = msgspec.json.Encoder(order="sorted").encode
_msgpack_probe = msgspec.msgpack.Encoder().encode
_utf16_order_differs = re.compile(rb"[\xee-\xf4]").search  # UTF-8 lead bytes of U+E000 and above
_sha256 = hashlib.sha256


_VOLATILE = frozenset(VOLATILE_PAYLOAD_KEYS)
_heads: dict[str, bytes] = {}  # event type -> the canonical JSON up to its payload


def _strip_volatile(payload: dict[str, Any]) -> dict[str, Any]:
    if _VOLATILE.isdisjoint(payload):
        return payload
    return {k: v for k, v in payload.items() if k not in _VOLATILE}


def js_number(value: float) -> str:
    """A float as JavaScript's Number.prototype.toString (ECMA-262 Number::toString) prints it."""
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} has no JSON form")
    if value == 0:
        return "0"
    sign, text = ("-", repr(-value)) if value < 0 else ("", repr(value))
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    # value = 0.<digits> x 10**n, with the shortest round-trip digits that Python's repr chose
    n = len(whole) + int(exp or 0) - (len(whole) + len(frac) - len(digits))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        out = "0." + "0" * -n + digits
    else:
        e = n - 1
        out = (digits if k == 1 else digits[0] + "." + digits[1:]) + ("e+" if e >= 0 else "e-") + str(abs(e))
    return sign + out


def _floats_as_js(value: Any) -> Any:
    if type(value) is float:
        return msgspec.Raw(js_number(value).encode())
    if isinstance(value, dict):
        return {k: _floats_as_js(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_floats_as_js(v) for v in value]
    return value


def canonical_json(event_type: str, payload: dict[str, Any]) -> bytes:
    """The JCS bytes that `content_hash` hashes (event_type must already be the canonical name)."""
    payload = _strip_volatile(payload)
    body = _encode_sorted(_floats_as_js(payload) if b"\xcb" in _msgpack_probe(payload) else payload)
    if not body.isascii() and _utf16_order_differs(body) is not None:
        body = rfc8785.dumps(payload)
    # "event_type" sorts before "payload", so the outer object is built by hand.
    head = _heads.get(event_type)
    if head is None:
        head = b'{"event_type":' + _encode_sorted(event_type) + b',"payload":'
        if len(_heads) < 4096:  # the catalog's types and a few more; unknown types are not all kept
            _heads[event_type] = head
    return head + body + b"}"


def content_hash(event_type: str, payload: dict[str, Any] | None) -> str:
    """SHA-256, lowercase hex (64 chars), of the canonical JSON of `event_type` and `payload`."""
    return _sha256(canonical_json(event_type, payload or {})).hexdigest()
