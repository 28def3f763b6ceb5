"""How far a daemon's consumer group is behind, sampled from the brokers for health and readiness.

Health checks are synchronous and cheap; asking Kafka or Redis for a group's lag is neither, so a
daemon runs a `LagSampler` next to its router and its `health_check()` reports the last sample:

    sampler = LagSampler(router)
    async with sampler.sampling():                     # samples every `interval_s` inside the block
        ...
    details.update(sampler.details())                  # `consumer_lag`, which readiness_probe reads

`total` is None until the first sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from brokers.errors import BrokerError
from coordination.event_router import UnifiedEventRouter

__all__ = ["LagSampler"]



class LagSampler:
    def __init__(self, router: UnifiedEventRouter, interval_s: float = 10.0) -> None:
        self.router = router
        self.interval_s = interval_s
        self.by_bus: dict[str, int] = {}
        self.sampled_at: float | None = None  # time.time() of the last sample
        self.error: str | None = None  # why the last sample failed, if it did

    @property
    def total(self) -> int | None:
        return sum(self.by_bus.values()) if self.sampled_at is not None else None

    async def sample(self) -> dict[str, int]:
        try:
            self.by_bus = await self.router.consumer_lag()
        except BrokerError as exc:  # the consumers report the broker's trouble themselves
            self.error = str(exc)
        else:
            self.error = None
            self.sampled_at = time.time()
        return self.by_bus

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[None]:
        """`run()` in a task for the duration of the block."""
        task = asyncio.create_task(self.run(), name=f"lag-{self.router.config.group}")
        try:
            yield
        finally:
            task.cancel()

    def details(self) -> dict[str, object]:
        """What health_check() adds: `consumer_lag` (total) and the lag per bus."""
        found: dict[str, object] = {"consumer_lag": self.total, "consumer_lag_by_bus": dict(self.by_bus)}
        if self.error:
            found["consumer_lag_error"] = self.error
        return found
