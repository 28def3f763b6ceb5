"""Writes schemas/vectors/content_hash.json: inputs, their JCS canonical JSON and content hash.

The expected values come from the `rfc8785` reference encoder (not from our fast path), so the
vectors check our implementation rather than restate it. Re-run after changing the inputs:
    .venv/bin/python scripts/gen_hash_vectors.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import rfc8785

from schemas.content_hash import VOLATILE_PAYLOAD_KEYS

OUT = Path(__file__).resolve().parent.parent / "schemas" / "vectors" / "content_hash.json"

CASES: list[tuple[str, str, dict]] = [
    ("empty payload", "TRAINING_COMPLETED", {}),
    ("typical training event", "TRAINING_COMPLETED",
     {"config": "hex8_2p", "success": True, "epochs": 50, "model_path": "models/canonical_hex8_2p.pth"}),
    ("volatile keys are ignored", "DATA_SYNC_COMPLETED",
     {"games_synced": 150, "timestamp": 1767225600.5, "created_at": "2026-01-01T00:00:00Z",
      "node_name": "gpu-3", "source": "sync_daemon", "routed": True}),
    ("floats as JavaScript prints them", "EVALUATION_COMPLETED",
     {"win_rate": 0.1, "elo": 1.0, "huge": 1e21, "big": 1e20, "tiny": 1e-7, "small": 1.5e-5,
      "neg_zero": -0.0, "max": 1.7976931348623157e308, "min": 5e-324, "third": 1 / 3, "neg": -2.5e-10}),
    ("nesting and key order", "MODEL_PROMOTED",
     {"z": {"b": [3, {"y": 1, "x": 2}], "a": None}, "a": [True, False, None, [], {}], "m": {"": 0}}),
    ("unicode and escapes", "HOST_OFFLINE",
     {"node": "nœud-é", "emoji": "\U0001f600", "ctrl": "a\u0000b\u001fc\n\t\"\\/", "line_sep": "\u2028",
      "\ue000": "private use key", "\U0001f600": "astral key sorts before U+E000 in UTF-16"}),
    ("integers at the safe limit", "NEW_GAMES_AVAILABLE",
     {"count": 9007199254740991, "neg": -9007199254740991, "zero": 0}),
]


def main() -> None:
    vectors = []
    for name, event_type, payload in CASES:
        kept = {k: v for k, v in payload.items() if k not in VOLATILE_PAYLOAD_KEYS}
        canonical = rfc8785.dumps({"event_type": event_type, "payload": kept})
        vectors.append({"name": name, "event_type": event_type, "payload": payload,
                        "canonical_json": canonical.decode(),
                        "content_hash": hashlib.sha256(canonical).hexdigest()})
    doc = {"description": "content_hash = sha256(JCS({event_type, payload without "
                          + ", ".join(VOLATILE_PAYLOAD_KEYS) + "})), lowercase hex",
           "volatile_payload_keys": list(VOLATILE_PAYLOAD_KEYS), "vectors": vectors}
    OUT.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
