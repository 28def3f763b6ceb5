"""Running one subscriber on one event: off-loop for sync handlers, a timeout, retries, the outcome.

    failures = await first_attempts(subscribers, event, deadlines)     # None: every handler succeeded
    outcome = await retry_handler(handler, event, policy, first_failure)   # after a failed first attempt
    outcome.ok / outcome.timed_out / outcome.error / outcome.attempts

The router's consumers run an event's first attempts with `first_attempts` (one timer for all their
attempts, coordination._deadlines; `Subscriber`s worked out at subscribe time) and hand a failure
to `retry_handler`, off their path.

A sync handler runs in a worker thread (`asyncio.to_thread`, so it never blocks the loop); an async
one is awaited. A first attempt is bounded by the deadlines' budget, a retry by
`asyncio.timeout(policy.timeout_s)`. A failed or timed-out
attempt is retried with exponential back-off and jitter (tenacity) up to `policy.max_attempts`.
A timed-out sync handler's thread cannot be killed: it keeps running to its end, its result ignored.
While a handler runs, `current_event()` is the event it handles (events it publishes inherit the
trace and correlation ids and name it as parent).

Observers (metrics): `add_handler_observer(fn)` has `fn(event_type, handler_name, duration_s, ok)` called
after each attempt (retries included); with none registered, an attempt costs a list check and a call.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from coordination._deadlines import Deadlines
from schemas.envelope import RouterEvent

__all__ = ["Failures", "Handler", "HandlerObserver", "HandlerOutcome", "HandlerTimeout", "RetryPolicy", "Subscriber",
           "add_handler_observer", "current_event", "first_attempts", "handler_name", "remove_handler_observer",
           "retry_handler"]

log = logging.getLogger(__name__)

Handler = Callable[[RouterEvent], Any] | Callable[[RouterEvent], Awaitable[Any]]
HandlerObserver = Callable[[str, str, float, bool], None]  # (event_type, handler name, duration_s, ok)
_observers: list[HandlerObserver] = []

_current: contextvars.ContextVar[RouterEvent | None] = contextvars.ContextVar("ringrift_current_event",
                                                                               default=None)


def current_event() -> RouterEvent | None:
    """The event whose handler is running in this context, if any."""
    return _current.get()


def add_handler_observer(observer: HandlerObserver) -> None:
    """Call `observer(event_type, handler_name, duration_s, ok)` after every handler attempt. Idempotent."""
    if observer not in _observers:
        _observers.append(observer)


def remove_handler_observer(observer: HandlerObserver) -> None:
    if observer in _observers:
        _observers.remove(observer)


def _observe(event: RouterEvent, handler: str, started: float, ok: bool) -> None:
    if not started:  # no observer when the attempt began
        return
    duration = time.perf_counter() - started
    for observer in list(_observers):
        try:
            observer(event.event_type, handler, duration, ok)
        except Exception:  # an observer must not fail a handling
            log.exception("handler observer %r failed", observer)


def handler_name(handler: Handler) -> str:
    """`module.qualname` of a handler (used in dead letters and logs)."""
    target = getattr(handler, "__func__", handler)
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or type(handler).__qualname__
    return f"{module}.{name}" if module else name


class Subscriber:
    """A subscribed handler with what dispatch needs to know about it, worked out once."""

    __slots__ = ("handler", "is_async", "name")

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.is_async = _is_async(handler)
        self.name = handler_name(handler)


class HandlerTimeout(TimeoutError):
    """A handler attempt ran longer than the handler timeout."""


@dataclass(frozen=True)
class RetryPolicy:
    timeout_s: float = 600.0
    max_attempts: int = 3
    initial_s: float = 0.5
    max_wait_s: float = 30.0


@dataclass
class HandlerOutcome:
    handler: str
    attempts: int = 0
    error: BaseException | None = None
    first_failure_at: float = 0.0
    failures: int = 0
    timeouts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def timed_out(self) -> bool:
        return isinstance(self.error, HandlerTimeout)


_async_handlers: dict[Handler, bool] = {}  # inspect is slow; handlers are few and long-lived


def _is_async(handler: Handler) -> bool:
    known = _async_handlers.get(handler)
    if known is None:
        known = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None))  # noqa: B004 - an object with an async __call__
        if len(_async_handlers) >= 4096:
            _async_handlers.clear()
        _async_handlers[handler] = known
    return known


async def _attempt(handler: Handler, event: RouterEvent, timeout_s: float) -> None:
    token = _current.set(event)
    scope = asyncio.timeout(timeout_s)
    try:
        async with scope:
            if _is_async(handler):
                result = await handler(event)  # type: ignore[misc]
            else:  # to_thread copies the context: the thread sees current_event() too
                result = await asyncio.to_thread(handler, event)
            if inspect.isawaitable(result):  # a sync callable that returned a coroutine
                await result
    except TimeoutError as exc:
        if scope.expired():
            raise HandlerTimeout(f"handler ran longer than {timeout_s:g} s") from exc
        raise
    finally:
        _current.reset(token)


Failures = list[tuple[Subscriber, Exception]]


async def first_attempts(subscribers: Sequence[Subscriber], event: RouterEvent,
                         deadlines: Deadlines) -> Failures | None:
    """Each subscriber's first attempt on `event`, in order, each bounded by `deadlines` (whose budget
    is the handler timeout); the ones that failed, with their errors (None: none failed). The router's
    consumers run events through this: no coroutine layer, timer or outcome per handler, so an extra
    handler costs little more than its call. An attempt over the budget fails with HandlerTimeout."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    cancelling, timed, failures = task.cancelling(), bool(_observers), None
    token = _current.set(event)
    try:
        for subscriber in subscribers:
            started = time.perf_counter() if timed else 0.0
            deadlines.start(task, loop)
            try:
                if subscriber.is_async:
                    await subscriber.handler(event)  # type: ignore[misc]
                else:  # to_thread copies the context: the thread sees current_event() too
                    result = await asyncio.to_thread(subscriber.handler, event)
                    if inspect.isawaitable(result):  # a sync callable that returned a coroutine
                        await result
            except asyncio.CancelledError:
                if not deadlines.timed_out(task, cancelling):
                    raise
                error: Exception = HandlerTimeout(f"handler ran longer than {deadlines.budget_s:g} s")
            except Exception as exc:
                error = exc
            else:
                _observe(event, subscriber.name, started, True)
                continue
            finally:
                deadlines.stop(task)
            _observe(event, subscriber.name, started, False)
            failures = failures or []
            failures.append((subscriber, error))
    finally:
        _current.reset(token)
    return failures


async def retry_handler(handler: Handler, event: RouterEvent, policy: RetryPolicy, first_failure: BaseException,
                        *, name: str | None = None) -> HandlerOutcome:
    """The attempts after a failed first one (`first_failure`), with back-off; the outcome of all."""
    outcome = HandlerOutcome(handler=name or handler_name(handler), attempts=1)

    def record_failure(exc: BaseException) -> None:
        outcome.first_failure_at = outcome.first_failure_at or time.time()
        if isinstance(exc, HandlerTimeout):
            outcome.timeouts += 1
        else:
            outcome.failures += 1

    async def observed_attempt() -> None:
        outcome.attempts += 1
        started = time.perf_counter() if _observers else 0.0
        try:
            await _attempt(handler, event, policy.timeout_s)
        except Exception as exc:
            record_failure(exc)
            _observe(event, outcome.handler, started, False)
            raise
        _observe(event, outcome.handler, started, True)

    record_failure(first_failure)
    pending: BaseException | None = first_failure
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=wait_exponential_jitter(multiplier=policy.initial_s, max=policy.max_wait_s,
                                     jitter=policy.initial_s),
        retry=retry_if_exception_type(Exception), reraise=True)
    try:
        async for attempt in retrying:
            with attempt:
                if pending is not None:  # tenacity's attempt 1 is the one that already failed
                    failure, pending = pending, None
                    raise failure
                await observed_attempt()
    except RetryError as exc:  # pragma: no cover - reraise=True hands us the last error instead
        outcome.error = exc.last_attempt.exception()
    except Exception as exc:
        outcome.error = exc
    return outcome
