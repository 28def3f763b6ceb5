"""Coalescing: calls from many tasks share one round trip to the broker.

Callers queue their item and wait for its result; one background task flushes whatever is queued,
and whatever arrives while a flush is in flight goes together in the next one. Batches therefore
grow with the load by themselves, the way a competent user's pipeline would be sized, without a
timer. The flush never runs in a caller's task, so cancelling a caller (a consumer being stopped)
only abandons its wait: it cannot interrupt a round trip half-way, which the redis client does not
always survive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")

# flush(items) returns one result per item, in order; a result that is an exception fails that item.
Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class Coalescer(Generic[T, R]):
    def __init__(self, flush: Flush[T, R], abort_error: Callable[[], Exception],
                 max_batch: int = 1000) -> None:
        self._flush = flush
        self._abort_error = abort_error  # what the others in a batch get when its flusher is cancelled
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if not self._busy:
            self._busy = True
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._flush_some()
        finally:
            self._busy = False

    async def _flush_some(self) -> None:
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        try:
            results = await self._flush([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in batch:
                if not future.done():
                    future.set_exception(self._abort_error())
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
