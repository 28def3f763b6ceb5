"""Many concurrent awaits, each bounded by the same budget, watched by a single timer.

`asyncio.timeout()` arms a loop timer per call; with dozens of publishes in flight that is a heap of
timers pushed and cancelled on every publish, a fifth of the router's publish cost. A publish is
almost always over in milliseconds against a budget of seconds, so one timer will do: it fires at
the earliest deadline still running, cancels what is over its budget and re-arms for the next.

    deadlines = Deadlines(budget_s=30)
    await deadlines.bound(broker.publish_raw(topic, value, key))   # TimeoutError when over budget

An expired await is cancelled the way `asyncio.timeout` does it (the cancellation is taken back and
`TimeoutError` raised in its place); a cancellation from outside still propagates. One bounded await
per task at a time (a task awaiting two at once would share one entry). The router bounds publishes
with one and its consumers' handler attempts with another (coordination.handlers.first_attempts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["Deadlines"]

T = TypeVar("T")


class Deadlines:
    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self._running: dict[asyncio.Task[Any], float] = {}  # task -> its deadline (loop time)
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def bound(self, awaitable: Awaitable[T]) -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self.start(task, loop)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self.timed_out(task, cancelling):
                raise TimeoutError(f"not done within {self.budget_s:g} s") from None
            raise
        finally:
            self.stop(task)

    def start(self, task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> None:
        """`task` begins an await bounded by the budget; end it with `stop(task)`. For a caller that
        runs many bounded awaits in one loop without a coroutine layer each (the handlers of an event)."""
        deadline = loop.time() + self.budget_s
        self._running[task] = deadline
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._timer = loop.call_at(deadline, self._check)

    def timed_out(self, task: asyncio.Task[Any], cancelling: int) -> bool:
        """For `except CancelledError`: True when the cancellation was this budget's (it is taken back:
        raise a timeout instead); False when it came from outside (`cancelling`: the task's count before)."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() <= cancelling

    def stop(self, task: asyncio.Task[Any]) -> None:
        self._running.pop(task, None)
        if task in self._expired:  # the awaited code swallowed our cancellation: take it back anyway
            self._expired.discard(task)
            task.uncancel()

    def _check(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        now, earliest = loop.time(), None
        for task, deadline in list(self._running.items()):
            if deadline <= now:
                if task not in self._expired and not task.done():
                    self._expired.add(task)
                    task.cancel()
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._timer = loop.call_at(earliest, self._check)
