"""A bus's deliveries in batches, each batch's dedup claim made while the batch before it is handled.

The dedup claim of a batch is one round trip to the group's store. Made when the batch comes up, it
would hold the consumer up for that round trip on every batch; here a reader task pulls the broker's
reads, cuts them to `limit`, starts each batch's claim and hands the batch over, at most `ahead`
batches claimed and not yet taken:

    async with ClaimedBatches(broker.consume_batches(...), claim, let_go, limit=128) as batches:
        async for batch in batches:        # a ClaimedBatch, in the broker's order
            verdicts = await batch.claim   # one per delivery of batch.claimable (no claim: None)

`claim(deliveries)` picks the deliveries whose claims may be made ahead and starts their claim.
When the batches end (the consumer stops or fails), the batches claimed and never taken are given to
`let_go`, which releases their claims: their records come back and are claimed anew, instead of
looking like the takeover of a handling that died with its process.
An error of the broker's reads ends the batches with it, after the batches read before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType

from brokers.base import Delivery
from brokers.dedup import Verdict

__all__ = ["ClaimedBatch", "ClaimedBatches"]

_END = object()


@dataclass(slots=True)
class ClaimedBatch:
    deliveries: list[Delivery]
    claimable: list[Delivery]  # the deliveries `claim` covers, in order
    claim: asyncio.Future[list[Verdict]] | None  # their verdicts; None when none could be claimed ahead

    def claimed_new(self) -> list[Delivery]:
        """The deliveries whose claim landed as NEW (this member holds their marks); [] while in flight."""
        claim = self.claim
        if claim is None or not claim.done() or claim.cancelled() or claim.exception() is not None:
            return []
        return [d for d, verdict in zip(self.claimable, claim.result(), strict=True) if verdict is Verdict.NEW]


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class ClaimedBatches:
    def __init__(self, reads: AsyncIterator[list[Delivery]], claim: Callable[[list[Delivery]], ClaimedBatch],
                 let_go: Callable[[list[ClaimedBatch]], None], *, limit: int, ahead: int = 1) -> None:
        self._reads, self._claim, self._let_go, self._limit = reads, claim, let_go, max(1, limit)
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._room = asyncio.Semaphore(ahead)  # claimed batches not yet taken
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ClaimedBatches:
        self._reader = asyncio.create_task(self._read(), name="claimed-batches")
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        untaken = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, ClaimedBatch):
                untaken.append(item)
        if untaken:
            self._let_go(untaken)

    def __aiter__(self) -> ClaimedBatches:
        return self

    async def __anext__(self) -> ClaimedBatch:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # asked again: still the end
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            raise item.error
        self._room.release()
        return item  # type: ignore[return-value]

    async def _read(self) -> None:
        limit = self._limit
        try:
            async with contextlib.aclosing(self._reads):  # type: ignore[type-var]
                async for read in self._reads:
                    for lo in range(0, len(read), limit):
                        await self._room.acquire()
                        self._queue.put_nowait(self._claim(read[lo:lo + limit]))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which raises it
            self._queue.put_nowait(_Failed(exc))
        else:
            self._queue.put_nowait(_END)
