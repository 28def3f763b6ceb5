"""Coalescing: calls from many tasks share one round trip to the broker.

Callers queue their item; one background task flushes whatever is queued, and whatever arrives while
a flush is in flight goes together in the next one. Batches therefore grow with the load by
themselves, the way a competent user's pipeline would be sized, without a timer. The flush never
runs in a caller's task, so cancelling a caller (a consumer being stopped) only abandons its wait:
it cannot interrupt a round trip half-way, which the redis client does not always survive.

    result = await coalescer.submit(item)   # waits for this item's result
    coalescer.post(item)                    # does not wait: a failure goes to `on_error`
    await coalescer.drained(timeout_s)      # everything queued so far is flushed
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
    def __init__(self, flush: Flush[T, R], abort_error: Callable[[], Exception], max_batch: int = 1000,
                 on_error: Callable[[list[T], BaseException], None] | None = None) -> None:
        self._flush = flush
        self._abort_error = abort_error  # what the others in a batch get when its flusher is cancelled
        self._on_error = on_error  # posted items that failed (None: they fail silently)
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R] | None]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    def post(self, item: T) -> None:
        """Queue `item` for the next flush without waiting for it."""
        self._queue.append((item, None))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def drained(self, timeout_s: float) -> None:
        """Wait until what is queued has been flushed; after `timeout_s` the flush is cancelled and
        everything still queued fails (its waiters hear of it, posted items go to `on_error`)."""
        drainer = self._drainer
        if drainer is None:
            return
        _, pending = await asyncio.wait([drainer], timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)  # the cancelled flush has let go of its connection

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._flush_some()
        except BaseException:  # cancelled: what is still queued will not be flushed by this drainer
            left, self._queue = self._queue, []
            self._fail(left, self._abort_error)
            raise
        finally:
            if self._drainer is asyncio.current_task():
                self._drainer = None

    async def _flush_some(self) -> None:
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        try:
            results = await self._flush([item for item, _ in batch])
        except Exception as exc:
            self._fail(batch, lambda error=exc: error)
            return
        except BaseException:
            self._fail(batch, self._abort_error)
            raise
        failed: list[T] = []
        error: BaseException | None = None
        for (item, future), result in zip(batch, results, strict=True):
            if future is None:
                if isinstance(result, BaseException):
                    failed.append(item)
                    error = result
            elif future.done():
                continue
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if error is not None and self._on_error is not None:
            self._on_error(failed, error)

    def _fail(self, batch: list[tuple[T, asyncio.Future[R] | None]], error: Callable[[], BaseException]) -> None:
        posted = [item for item, future in batch if future is None]
        for _, future in batch:
            if future is not None and not future.done():
                future.set_exception(error())
        if posted and self._on_error is not None:
            self._on_error(posted, error())
