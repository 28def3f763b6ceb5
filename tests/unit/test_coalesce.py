"""The coalescer behind Redis publishes and acks: many callers, one flush per round trip; posted
items (acks) that fail reach `on_error` instead of vanishing; `drained` waits for what is queued."""

from __future__ import annotations

import asyncio

import pytest

from brokers._coalesce import Coalescer


class _Store:
    def __init__(self, fail_on: set[int] | None = None, delay_s: float = 0.0) -> None:
        self.flushes: list[list[int]] = []
        self.fail_on = fail_on or set()
        self.delay_s = delay_s

    async def flush(self, items: list[int]) -> list[int | BaseException]:
        await asyncio.sleep(self.delay_s)
        self.flushes.append(items)
        return [RuntimeError(f"refused {i}") if i in self.fail_on else i * 10 for i in items]


async def test_concurrent_submits_share_flushes_and_each_gets_its_result() -> None:
    store = _Store(delay_s=0.01)
    coalescer: Coalescer[int, int] = Coalescer(store.flush, lambda: RuntimeError("aborted"))
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(50)))
    assert results == [i * 10 for i in range(50)]
    assert len(store.flushes) <= 2 and sorted(i for f in store.flushes for i in f) == list(range(50))


async def test_posted_items_are_flushed_without_waiting_and_failures_reach_on_error() -> None:
    store = _Store(fail_on={3})
    lost: list[tuple[list[int], str]] = []
    coalescer: Coalescer[int, int] = Coalescer(store.flush, lambda: RuntimeError("aborted"),
                                               on_error=lambda items, exc: lost.append((items, str(exc))))
    for i in range(5):
        coalescer.post(i)  # returns at once
    assert store.flushes == []
    await coalescer.drained(5.0)
    assert sorted(i for f in store.flushes for i in f) == [0, 1, 2, 3, 4]
    assert lost == [([3], "refused 3")]


async def test_a_failed_submit_raises_its_error() -> None:
    coalescer: Coalescer[int, int] = Coalescer(_Store(fail_on={7}).flush, lambda: RuntimeError("aborted"))
    with pytest.raises(RuntimeError, match="refused 7"):
        await coalescer.submit(7)


async def test_drained_gives_up_after_its_timeout_and_the_waiters_hear_of_it() -> None:
    store = _Store(delay_s=30)
    coalescer: Coalescer[int, int] = Coalescer(store.flush, lambda: RuntimeError("flush cancelled"))
    waiting = asyncio.create_task(coalescer.submit(1))
    await asyncio.sleep(0.01)
    await coalescer.drained(0.05)
    with pytest.raises(RuntimeError, match="flush cancelled"):
        await waiting


async def test_items_queued_behind_a_cancelled_flush_are_reported_not_dropped() -> None:
    store = _Store(delay_s=30)
    lost: list[int] = []
    coalescer: Coalescer[int, int] = Coalescer(store.flush, lambda: RuntimeError("flush cancelled"),
                                               on_error=lambda items, exc: lost.extend(items))
    coalescer.post(1)
    await asyncio.sleep(0.01)  # 1 is in flight
    coalescer.post(2)
    coalescer.post(3)  # queued behind it
    await coalescer.drained(0.05)
    assert sorted(lost) == [1, 2, 3]
