"""ClaimedBatches: reads cut to the limit, in order; one batch claimed ahead of the one being handled,
no more; the batches claimed and never taken are let go when the consumer stops; a read error ends
the batches after what was read before it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from brokers.base import Delivery
from brokers.dedup import Verdict
from coordination._claimed_batches import ClaimedBatch, ClaimedBatches


async def _no_settle(delivery: Delivery, ok: bool) -> None:
    return None


def _deliveries(lo: int, hi: int) -> list[Delivery]:
    return [Delivery(event=None, record_id=str(n), topic="t", settle=_no_settle) for n in range(lo, hi)]


async def _reads(*sizes: int, fail: Exception | None = None) -> AsyncIterator[list[Delivery]]:
    lo = 0
    for size in sizes:
        yield _deliveries(lo, lo + size)
        lo += size
    if fail is not None:
        raise fail
    await asyncio.Event().wait()  # a broker read waiting for more


class _Claims:
    def __init__(self) -> None:
        self.claimed: list[list[str]] = []
        self.let_go: list[list[str]] = []

    def claim(self, deliveries: list[Delivery]) -> ClaimedBatch:
        self.claimed.append([d.record_id for d in deliveries])
        verdicts = asyncio.get_running_loop().create_future()
        verdicts.set_result([Verdict.NEW] * len(deliveries))
        return ClaimedBatch(deliveries, deliveries, verdicts)

    def release(self, batches: list[ClaimedBatch]) -> None:
        self.let_go += [[d.record_id for d in b.claimed_new()] for b in batches]


async def test_reads_are_cut_to_the_limit_and_claimed_one_batch_ahead() -> None:
    claims = _Claims()
    taken: list[list[str]] = []
    async with ClaimedBatches(_reads(5, 2), claims.claim, claims.release, limit=2) as batches:
        async for batch in batches:
            taken.append([d.record_id for d in batch.deliveries])
            await asyncio.sleep(0.01)  # the reader runs meanwhile
            assert len(claims.claimed) <= len(taken) + 1  # the one handled and at most one ahead
            if len(taken) == 4:
                break
    assert taken == [["0", "1"], ["2", "3"], ["4"], ["5", "6"]]
    assert claims.let_go == []


async def test_batches_claimed_and_never_taken_are_let_go() -> None:
    claims = _Claims()
    async with ClaimedBatches(_reads(6), claims.claim, claims.release, limit=2) as batches:
        first = await anext(batches)
        await asyncio.sleep(0.01)  # the next batch is claimed while the first is handled
    assert [d.record_id for d in first.deliveries] == ["0", "1"]
    assert claims.let_go == [["2", "3"]]  # "4", "5" were never claimed: nothing to release


async def test_a_read_error_ends_the_batches_after_those_read_before_it() -> None:
    claims = _Claims()
    taken: list[str] = []
    with pytest.raises(ConnectionError, match="broker went away"):
        async with ClaimedBatches(_reads(3, fail=ConnectionError("broker went away")), claims.claim,
                                  claims.release, limit=2) as batches:
            async for batch in batches:
                taken += [d.record_id for d in batch.deliveries]
    assert taken == ["0", "1", "2"]
