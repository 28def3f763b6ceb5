"""A Redis consumer group seen from outside, for brokers/redis_streams.py: its lag, and moving it back.

    lag      XINFO GROUPS (last-delivered-id, lag, pending) and XINFO CONSUMERS (idle times)
    rewind   XGROUP SETID to just before `since`, with ENTRIESREAD so that XINFO's lag stays right;
             the group's pending entries from `since` on are acknowledged, as they come again afresh

Redis keeps a consumer in its group until someone deletes it, whether its process runs or not, so a
member counts as active while it touched the group (XREADGROUP, XAUTOCLAIM) within the last
MEMBER_ACTIVE_WINDOW_MS. A running member blocks in XREADGROUP for block_ms (500 ms) at a time, so
it is seen; one busy in a handler for longer than the window is not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from brokers.base import GroupLag, PartitionLag
from brokers.errors import GroupActive, GroupNotFound, TopicNotFound

__all__ = ["MEMBER_ACTIVE_WINDOW_MS", "RedisGroupAdmin"]

MEMBER_ACTIVE_WINDOW_MS = 5_000
_MAX_SEQ = 18446744073709551615
_PAGE = 1000

Call = Callable[..., Awaitable[Any]]


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _first_id_at(moment: datetime) -> str:
    return f"{int(moment.timestamp() * 1000)}-0"


def _last_id_at(moment: datetime) -> str:
    return f"{int(moment.timestamp() * 1000)}-{_MAX_SEQ}"


def _id_before(entry_id: str) -> str:
    ms, seq = _id_key(entry_id)
    if seq:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{_MAX_SEQ}" if ms else "0-0"


class RedisGroupAdmin:
    """`call(op, what, *args)` runs one command with the broker's error translation and retry budget."""

    def __init__(self, client: aioredis.Redis, call: Call) -> None:
        self._client = client
        self._call = call

    async def _group(self, topic: str, group: str) -> dict[str, Any] | None:
        if not await self._call(self._client.exists, f"find {topic}", topic):
            raise TopicNotFound(f"Redis stream {topic!r} does not exist")
        groups = await self._call(self._client.xinfo_groups, f"groups of {topic}", topic)
        return next((g for g in groups if g["name"] == group.encode()), None)

    async def active_members(self, topic: str, group: str) -> int:
        consumers = await self._call(self._client.xinfo_consumers, f"members of {group}", topic, group)
        return sum(1 for c in consumers if c["idle"] < MEMBER_ACTIVE_WINDOW_MS)

    async def _count(self, topic: str, low: str, high: str) -> int:
        """Entries in [low, high] (XRANGE bounds: "(" excludes), paged."""
        total = 0
        while True:
            page = await self._call(self._client.xrange, f"count {topic}", topic, low, high, count=_PAGE)
            total += len(page)
            if len(page) < _PAGE:
                return total
            low = "(" + page[-1][0].decode()

    async def lag(self, topic: str, group: str) -> GroupLag:
        info = await self._group(topic, group)
        stream = await self._call(self._client.xinfo_stream, f"describe {topic}", topic)
        end = stream["last-generated-id"].decode()
        if info is None:
            return GroupLag(topic, group, (PartitionLag(None, None, end, None),), members=0)
        where = PartitionLag(None, info["last-delivered-id"].decode(), end, info["lag"], info["pending"])
        return GroupLag(topic, group, (where,), members=await self.active_members(topic, group))

    async def rewind(self, topic: str, group: str, since: datetime, until: datetime | None, *,
                     dry_run: bool, force: bool) -> dict[int | None, int]:
        info = await self._group(topic, group)
        if info is None:
            raise GroupNotFound(f"consumer group {group!r} has never read Redis stream {topic!r}")
        active = 0 if force or dry_run else await self.active_members(topic, group)
        if active:
            raise GroupActive(f"consumer group {group!r} has {active} member(s) that read {topic!r} within "
                              f"the last {MEMBER_ACTIVE_WINDOW_MS // 1000} s: stop them first", active)
        first = _first_id_at(since)
        in_range = await self._count(topic, first, _last_id_at(until) if until is not None else "+")
        if dry_run:
            return {None: in_range}
        target = _id_before(first)
        if _id_key(info["last-delivered-id"].decode()) > _id_key(target):
            after = await self._count(topic, "(" + target, "+")
            stream = await self._call(self._client.xinfo_stream, f"describe {topic}", topic)
            await self._call(self._client.xgroup_setid, f"move group {group}", topic, group, target,
                             entries_read=max(0, stream["entries-added"] - after))
        await self._ack_pending_from(topic, group, first)
        return {None: in_range}

    async def _ack_pending_from(self, topic: str, group: str, first: str) -> None:
        """Acknowledge the group's pending entries from `first` on: the group reads them again from its
        new position, as new deliveries, rather than once as a leftover and once more as a replay."""
        while True:
            pending = await self._call(self._client.xpending_range, f"pending of {group}", topic, group,
                                       min=first, max="+", count=_PAGE)
            if not pending:
                return
            await self._call(self._client.xack, f"ack on {topic}", topic, group,
                             *[p["message_id"] for p in pending])
