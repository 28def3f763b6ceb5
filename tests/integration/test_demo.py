"""The README's main job (`scripts/demo` -> examples/demo.py) runs end to end on the real services.

Node B's Redis is a private one here, so that the demo never touches another test's data. The demo
exits non-zero if any of its steps did not do what it printed; the test checks that and the story.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import KAFKA_BOOTSTRAP, KAFKA_URL, REDIS_URL, ROOT, private_redis, require_service

pytestmark = pytest.mark.integration


def test_the_demo_runs_every_step_and_says_so() -> None:
    require_service(REDIS_URL)
    require_service(KAFKA_URL)
    with private_redis(6397) as (redis_b,):
        done = subprocess.run([sys.executable, "-m", "examples.demo", "--redis-a", REDIS_URL, "--redis-b", redis_b,
                               "--kafka", KAFKA_BOOTSTRAP], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = done.stdout
    for heading in ("1. Two nodes start", "5. Each event arrived once", "6. A poison event", "7. `coord status`",
                    "8. A clean stop", "9. Replay"):
        assert heading in out
    assert "handlings, each exactly once" in out and "1 re-driven" in out and "already redriven" in out
    assert "node-a" in out and "node-b" in out and "each handled exactly once more" in out
    assert "every step did what it said" in out
