"""Retries off the consumer's path: a failed handling waits out its back-off beside the stream.

A handler that raised (or timed out) on its first attempt is retried with back-off, up to the policy's
attempts, and then dead-lettered. Waiting out that back-off in the consumer would stall every event
behind the failing one (1 % failures with a 0.5 s back-off would cut a consumer's throughput to a
fraction), so the router hands the rest of that event's handling to `Retries`, a set of tasks, and
reads on. The record is acknowledged only when its retries end (handled, or dead-lettered): a crash
in between loses nothing, the record comes back. Events after a failing one are thus handled before
its retries end (non-blocking retries, as Kafka users know them from retry topics).

    retries = Retries(limit=512)
    await retries.submit(coro)        # waits while `limit` handlings are in retry (back-pressure)
    await retries.cancel_all()        # stop(): each cancelled coroutine releases its own claim
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Retries"]

log = logging.getLogger(__name__)


class Retries:
    """At most `limit` events in retry at once; a consumer that submits more waits for room."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the retry limit must be at least 1")
        self.limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, retry: Coroutine[Any, Any, None]) -> None:
        while len(self._tasks) >= self.limit:
            await asyncio.wait(list(self._tasks), return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(retry, name="router-retry")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # an infrastructure error (dedup store, DLQ): the record stays unacknowledged and comes back
            log.warning("a retried handling did not settle (its record will be delivered again): %s",
                        task.exception())

    async def cancel_all(self, timeout_s: float = 5.0) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
