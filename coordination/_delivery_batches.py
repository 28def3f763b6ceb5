"""Deliveries in batches: what a broker handed over and is waiting, up to a limit, as one list.

The router claims and commits the dedup marks of a batch in one round trip each, instead of two
per delivery. A reader task pulls from the broker's iterator into a bounded queue; the consumer
takes the first delivery it waits for plus whatever else is already queued:

    async for batch in delivery_batches(broker.consume(topic, group), limit=32):
        ...                          # a list of 1..limit deliveries, in the broker's order

The broker's iterator runs in the reader task and is closed when the batches end (or are closed).
An error in the broker's iterator ends the batches with it, after the deliveries read before it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from brokers.base import Delivery

__all__ = ["delivery_batches"]

_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def delivery_batches(deliveries: AsyncIterator[Delivery], limit: int) -> AsyncIterator[list[Delivery]]:
    if limit <= 1:
        async for delivery in deliveries:
            yield [delivery]
        return
    queue: asyncio.Queue[object] = asyncio.Queue(limit)

    async def read() -> None:
        try:
            async for delivery in deliveries:
                await queue.put(delivery)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which raises it
            await queue.put(_Failed(exc))
        else:
            await queue.put(_END)

    reader = asyncio.create_task(read(), name="delivery-batches")
    try:
        while True:
            item = await queue.get()
            batch: list[Delivery] = []
            while True:
                if item is _END or isinstance(item, _Failed):
                    if batch:
                        yield batch
                    if isinstance(item, _Failed):
                        raise item.error
                    return
                batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= limit or queue.empty():
                    break
                item = queue.get_nowait()
            yield batch
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
