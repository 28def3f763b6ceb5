"""The first attempts of an event's handlers, each under the handler timeout, with a single timer.

`asyncio.timeout()` per attempt arms and cancels a loop timer every time (a heap push and a cancelled
handle per handler call), which on the consumer's hot path costs more than a fast handler. A consumer
runs one attempt at a time, so one timer per consumer task does: it fires at the earliest moment the
running attempt could be over its limit, and either expires it or re-arms itself for the attempt
running then. The handlers of an event run in one loop here, so that an extra handler costs little
more than its own call: a clock read and a few attribute writes.

    clock = AttemptClock(timeout_s=600)
    failures = await clock.first_attempts(subscribers, event)   # [(subscriber, error), ...] or None

An expired attempt is cancelled like `asyncio.timeout` does it (the task is cancelled, the
cancellation is taken back) and recorded as a `HandlerTimeout`; a cancellation from outside (stop)
propagates. A timed-out sync handler's thread cannot be killed: it runs to its end, its result ignored.
While the handlers run, `current_event()` is the event (events they publish inherit its lineage).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Sequence
from typing import Any

from coordination.handlers import (
    HandlerTimeout,
    Subscriber,
    observe_attempt,
    observing,
    reset_current_event,
    set_current_event,
)
from schemas.envelope import RouterEvent

__all__ = ["AttemptClock", "Failures"]

Failures = list[tuple[Subscriber, Exception]]


class AttemptClock:
    """Times the attempts of the task that calls `first_attempts` (one attempt at a time)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._started = 0.0  # loop time the running attempt began; 0.0: none running
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    async def first_attempts(self, subscribers: Sequence[Subscriber], event: RouterEvent) -> Failures | None:
        """Each subscriber's first attempt, in order; the ones that failed, with their errors."""
        loop = asyncio.get_running_loop()
        task = self._task = asyncio.current_task()
        assert task is not None
        cancelling, timed, failures = task.cancelling(), observing(), None
        token = set_current_event(event)
        try:
            for subscriber in subscribers:
                self._expired = False
                started = self._started = loop.time()
                if self._timer is None:
                    self._timer = loop.call_at(started + self.timeout_s, self._check)
                try:
                    if subscriber.is_async:
                        await subscriber.handler(event)  # type: ignore[misc]
                    else:  # to_thread copies the context: the thread sees current_event() too
                        result = await asyncio.to_thread(subscriber.handler, event)
                        if inspect.isawaitable(result):  # a sync callable that returned a coroutine
                            await result
                except asyncio.CancelledError:
                    if not self._expired:
                        raise
                    self._expired = False
                    if task.uncancel() > cancelling:  # cancelled from outside as well
                        raise
                    error: Exception = HandlerTimeout(f"handler ran longer than {self.timeout_s:g} s")
                except Exception as exc:
                    error = exc
                else:
                    if timed:
                        observe_attempt(event, subscriber.name, _perf_start(loop, started), True)
                    continue
                finally:
                    self._started = 0.0
                    if self._expired:  # the handler swallowed our cancellation: take it back all the same
                        self._expired = False
                        task.uncancel()
                if timed:
                    observe_attempt(event, subscriber.name, _perf_start(loop, started), False)
                failures = failures or []
                failures.append((subscriber, error))
        finally:
            reset_current_event(token)
        return failures

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


def _perf_start(loop: asyncio.AbstractEventLoop, started: float) -> float:
    """The attempt's start on the perf_counter clock that observe_attempt measures durations with."""
    return time.perf_counter() - (loop.time() - started)
