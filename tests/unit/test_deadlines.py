"""One timer bounding many concurrent awaits (the router's publish deadline): each await over its
budget ends in TimeoutError at its own deadline, the others finish, outside cancellations pass."""

from __future__ import annotations

import asyncio
import time

import pytest

from coordination._deadlines import Deadlines


async def test_only_the_awaits_over_budget_time_out_each_at_its_own_deadline() -> None:
    deadlines = Deadlines(budget_s=0.5)

    async def takes(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async def bounded(delay_start: float, seconds: float) -> tuple[str, float]:
        await asyncio.sleep(delay_start)
        begun = time.monotonic()
        try:
            await deadlines.bound(takes(seconds))
        except TimeoutError:
            return "timed out", time.monotonic() - begun
        return "done", time.monotonic() - begun

    results = await asyncio.gather(bounded(0, 0.1), bounded(0, 5), bounded(0.25, 0.3), bounded(0.25, 5),
                                   *(bounded(0.01 * i, 0.01) for i in range(20)))
    assert [r[0] for r in results] == ["done", "timed out", "done", "timed out", *["done"] * 20]
    for outcome, took in (results[1], results[3]):  # the late starter is cut at its own 0.5 s, not earlier
        assert 0.49 <= took < 1.5, (outcome, took)
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0


async def test_a_cancellation_from_outside_is_not_taken_for_a_timeout() -> None:
    deadlines = Deadlines(budget_s=10)
    task = asyncio.create_task(deadlines.bound(asyncio.sleep(30)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_task_goes_on_after_a_timeout() -> None:
    deadlines = Deadlines(budget_s=0.05)
    with pytest.raises(TimeoutError):
        await deadlines.bound(asyncio.sleep(10))
    assert await deadlines.bound(asyncio.sleep(0.01, result="next")) == "next"
