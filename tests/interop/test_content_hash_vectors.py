"""The content-hash vectors hold in Python (our fast path) and in JavaScript (an independent program)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from schemas.envelope import content_hash

VECTORS = Path(__file__).resolve().parents[2] / "schemas" / "vectors" / "content_hash.json"
CHECKER = Path(__file__).with_name("content_hash_check.mjs")
CASES = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("vector", CASES, ids=[v["name"] for v in CASES])
def test_python_matches_the_vectors(vector: dict) -> None:
    assert content_hash(vector["event_type"], vector["payload"]) == vector["content_hash"]


def test_javascript_computes_the_same_hashes() -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed for the interop tests (scripts/test installs it with apt-get)"
    result = subprocess.run([node, str(CHECKER), str(VECTORS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CASES)} passed, 0 failed" in result.stdout
