"""How big and how long each workload runs (`--quick` or full), and where the services are.

Only `Settings.build` reads the environment (RINGRIFT_REDIS_URL, RINGRIFT_KAFKA_BOOTSTRAP, as the
product does). The full run is sized to finish within 20 minutes on a 2-core machine, ten of them
being W7's soak; `--quick` within 3 minutes, with one repetition and short windows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    quick: bool
    redis_url: str
    kafka_bootstrap: str
    reps: int  # repetitions of each throughput cell (W1, W2, W5, W6), interleaved across contenders
    warmup_s: float  # untimed run before each timed window
    window_s: float  # one timed window of a throughput cell
    publishers: int  # W1 concurrent publishers
    batch: int  # W1 batch size; W2 raw read/ack batch
    backlog: int  # records pre-filled for W2 (the timed window ends earlier when a consumer is fast)
    latency_s: float  # W3: the open-loop run of one contender at one rate
    rates: tuple[int, ...]  # W3 events/s
    router_path_events: int  # W4 events per repetition
    fanout_events: int  # W5 records in the backlog each of the 4 groups reads
    fanout_handlers: tuple[int, ...]  # W5 handler counts for our router
    failure_events: int  # W6 records per run of our router (1 % of them fail every attempt)
    by_hand_events: int  # W6 records per run of the retry loops by hand (raw, FastStream: each failure sleeps)
    idle_s: float  # W7 idle measurement
    soak_s: float  # W7 run under load
    soak_rate: int  # W7 events/s
    child_timeout_s: float  # a child process taking longer is killed and its cell reports the error

    @classmethod
    def build(cls, quick: bool, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        common: dict[str, Any] = {
            "quick": quick,
            "redis_url": env.get("RINGRIFT_REDIS_URL", "redis://127.0.0.1:6379/0"),
            "kafka_bootstrap": env.get("RINGRIFT_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            "publishers": 64, "batch": 500, "rates": (1000, 5000), "fanout_handlers": (1, 10, 20),
            "soak_rate": 5000,
        }
        if quick:
            return cls(**common, reps=1, warmup_s=0.2, window_s=0.5, backlog=40_000, latency_s=1.5,
                       router_path_events=5_000, fanout_events=20_000, failure_events=4_000, by_hand_events=200,
                       idle_s=4.0, soak_s=10.0, child_timeout_s=90.0)
        return cls(**common, reps=3, warmup_s=0.3, window_s=0.8, backlog=120_000, latency_s=5.0,
                   router_path_events=30_000, fanout_events=60_000, failure_events=40_000, by_hand_events=2_000,
                   idle_s=10.0, soak_s=600.0, child_timeout_s=180.0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
