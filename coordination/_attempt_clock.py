"""Handler attempts of one consumer task, each under the handler timeout, with a single timer.

`asyncio.timeout()` per attempt arms and cancels a loop timer every time (a heap push and a cancelled
handle per handler call), which on the consumer's hot path costs more than a fast handler. A consumer
runs one attempt at a time, so one timer per consumer task does: it fires at the earliest moment the
running attempt could be over its limit, and either expires it or re-arms itself for the attempt
running then. An attempt costs two clock reads and a few attribute writes.

    clock = AttemptClock(timeout_s=600)
    await clock.attempt(handler, event, is_async=True)   # raises HandlerTimeout when over the limit

An expired attempt is cancelled like `asyncio.timeout` does it (the task is cancelled, the
cancellation is taken back and `HandlerTimeout` raised in its place); a cancellation from outside
(stop) still propagates. A timed-out sync handler's thread cannot be killed: it runs to its end,
its result ignored.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from coordination.handlers import Handler, HandlerTimeout
from schemas.envelope import RouterEvent

__all__ = ["AttemptClock"]


class AttemptClock:
    """Times the attempts of the task that calls `attempt` (one at a time)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._started = 0.0  # loop time the running attempt began; 0.0: none running
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    async def attempt(self, handler: Handler, event: RouterEvent, *, is_async: bool) -> None:
        loop = asyncio.get_running_loop()
        task = self._task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._expired = False
        self._started = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(self._started + self.timeout_s, self._check)
        try:
            if is_async:
                await handler(event)  # type: ignore[misc]
            else:  # to_thread copies the context: the thread sees current_event() too
                result = await asyncio.to_thread(handler, event)
                if inspect.isawaitable(result):  # a sync callable that returned a coroutine
                    await result
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if task.uncancel() <= cancelling:
                    raise HandlerTimeout(f"handler ran longer than {self.timeout_s:g} s") from None
            raise
        finally:
            self._started = 0.0
            if self._expired:  # the handler swallowed our cancellation: take it back all the same
                self._expired = False
                task.uncancel()

    def _check(self) -> None:
        self._timer = None
        if not self._started or self._task is None or self._task.done():
            return  # nothing running: the next attempt arms the timer again
        loop = self._task.get_loop()
        deadline = self._started + self.timeout_s
        if loop.time() >= deadline:
            self._expired = True
            self._task.cancel()
        else:  # a later attempt than the one that armed it: wait for this one's deadline
            self._timer = loop.call_at(deadline, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
