"""Retry within a budget: the first try runs bare (no cost on the hot path), later ones back off.

Only errors whose `retriable` flag is set are retried (see brokers.errors); when the budget is spent
the last error is raised as `BrokerUnavailable` naming what was being done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_delay, wait_exponential_jitter

from brokers.errors import BrokerError, BrokerUnavailable

__all__ = ["retry_within_budget"]

T = TypeVar("T")


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, BrokerError) and exc.retriable


async def retry_within_budget(operation: Callable[[], Awaitable[T]], budget_s: float, what: str) -> T:
    """Run `operation`; on a retriable BrokerError retry with jittered back-off for `budget_s` seconds."""
    try:
        return await operation()
    except BrokerError as exc:
        if not exc.retriable:
            raise
        if budget_s <= 0:
            raise BrokerUnavailable(f"{what}: {exc}") from exc
    retrying = AsyncRetrying(
        retry=retry_if_exception(_retriable),
        wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.1),
        stop=stop_after_delay(budget_s),
        reraise=False,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await operation()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise BrokerUnavailable(f"{what}: still failing after {budget_s:g} s: {last}") from last
    raise AssertionError("unreachable")  # pragma: no cover
