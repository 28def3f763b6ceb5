"""The fast content-hash path agrees with the reference JCS encoder on everything we can throw at it."""

from __future__ import annotations

import random
import struct

import rfc8785

from schemas.content_hash import canonical_json, content_hash, js_number
from schemas.envelope import content_hash as envelope_content_hash


def _reference(event_type: str, payload: dict) -> bytes:
    return rfc8785.dumps({"event_type": event_type, "payload": payload})


def _random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.randint(-(2**53) + 1, 2**53 - 1)
    if kind == 1:
        return struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
    if kind == 2:
        return round(rng.uniform(-1e6, 1e6), rng.randint(0, 8))
    if kind == 3:
        return "".join(chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0, 0x1F), rng.randint(0xA0, 0xD7FF),
                                       rng.randint(0xE000, 0xFFFF), rng.randint(0x10000, 0x10FFFF)]))
                       for _ in range(rng.randint(0, 6)))
    if kind == 4:
        return rng.choice([True, False, None])
    if kind in (5, 6):
        return {str(_random_value(rng, 3)): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]


def test_fast_path_equals_reference_jcs_on_random_payloads() -> None:
    rng = random.Random(8785)
    checked = 0
    while checked < 3000:
        payload = _random_value(rng)
        if not isinstance(payload, dict):
            continue
        try:
            expected = _reference("X", payload)
        except Exception:  # NaN/inf nested deeper: not JSON at all
            continue
        assert canonical_json("X", payload) == expected, payload
        checked += 1


def test_js_number_formats_like_ecmascript() -> None:
    cases = {1.0: "1", 0.1: "0.1", 1e21: "1e+21", 1e20: "100000000000000000000", 1e-7: "1e-7",
             1.5e-5: "0.000015", -0.0: "0", 123456789012345680000.0: "123456789012345680000",
             5e-324: "5e-324", -2.5e-10: "-2.5e-10", 1e-6: "0.000001", 33.0: "33"}
    for value, text in cases.items():
        assert js_number(value) == text, value


def test_volatile_keys_do_not_change_the_hash() -> None:
    base = {"config_key": "hex8_2p", "games": 3}
    noisy = {**base, "timestamp": 1.5, "created_at": "now", "node_name": "n1", "source": "x", "routed": True}
    assert content_hash("NEW_GAMES_AVAILABLE", base) == content_hash("NEW_GAMES_AVAILABLE", noisy)
    assert content_hash("NEW_GAMES_AVAILABLE", base) != content_hash("NEW_GAMES_AVAILABLE", {**base, "games": 4})


def test_hash_uses_the_canonical_event_name() -> None:
    payload = {"games_synced": 1}
    assert envelope_content_hash("sync_completed", payload) == envelope_content_hash("DATA_SYNC_COMPLETED", payload)
    assert len(envelope_content_hash("DATA_SYNC_COMPLETED", payload)) == 64
