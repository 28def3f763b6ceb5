"""A Redis consumer keeps the entries it is still handling: their idle time is reset while it runs.

XAUTOCLAIM hands an entry to another member once it has been pending `claim_idle_ms` without being
touched: that is how the entries of a member that died come back. A live member whose handler runs
longer than that (or whose record waits out its retries) would lose the entry to another member,
which would handle it a second time, concurrently. So each consume() keeps a list of what it has
read (from the moment Redis hands it over) and not settled, and a task re-claims the older ones
for itself every third of `claim_idle_ms` (XCLAIM ... JUSTID: the delivery count stays; only entries
it still owns). A member whose event loop is stuck cannot do that, and its entries go to another
member as before. A delivery must therefore be settled (ack or nack) for its member to let it go.

    held = HeldEntries(client, topic, group, me, claim_idle_ms, call)
    held.add_all(ids_just_read) / held.discard(delivery.record_id)
    task = asyncio.create_task(held.keep())          # until cancelled
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import redis.asyncio as aioredis

from brokers.errors import BrokerError

__all__ = ["HeldEntries"]

log = logging.getLogger("brokers.redis_streams")

# KEYS: the stream. ARGV: group, consumer, then the ids. Re-claims each id the consumer still owns.
_KEEP = """
local kept = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    kept = kept + 1
  end
end
return kept
"""


class HeldEntries:
    def __init__(self, client: aioredis.Redis, topic: str, group: str, me: str, claim_idle_ms: int,
                 call: Callable[..., Awaitable[Any]]) -> None:
        self._script = client.register_script(_KEEP)
        self._topic, self._group, self._me = topic, group, me
        self._every_s = max(claim_idle_ms / 3000, 0.02)
        self._call = call
        self._since: dict[str, float] = {}  # record id -> when it was delivered or last kept

    def add_all(self, record_ids: Iterable[str]) -> None:
        self._since.update(dict.fromkeys(record_ids, time.monotonic()))

    def discard(self, record_id: str) -> None:
        self._since.pop(record_id, None)

    async def keep(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            now = time.monotonic()
            due = [rid for rid, since in self._since.items() if now - since >= self._every_s]
            if not due:
                continue
            try:
                await self._call(self._script, f"keep entries of {self._topic}", keys=[self._topic],
                                 args=[self._group, self._me, *due])
            except BrokerError as exc:  # the broker is away: XAUTOCLAIM is not happening either
                log.warning("could not keep %d entries of %s in flight: %s", len(due), self._topic, exc)
                continue
            for rid in due:
                if rid in self._since:
                    self._since[rid] = now
