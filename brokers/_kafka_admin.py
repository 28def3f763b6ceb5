"""A Kafka consumer group seen from outside, for brokers/kafka.py: its lag, and moving its offsets back.

    members  DescribeGroups: the members the group coordinator knows now
    lag      the group's committed offsets (OffsetFetch) against the end offsets, per partition; Kafka
             cannot tell delivered from unacknowledged, so `pending` is 0 and the lag counts both (a
             member commits up to its first unacknowledged record)
    rewind   the first offset at or after `since` per partition (ListOffsets by timestamp), committed
             for the group by a consumer that names the group without joining it (generation -1)

Kafka accepts a commit from outside the group only while the group is empty; with members it answers
UNKNOWN_MEMBER_ID. So a rewind with members is refused (GroupActive), whatever `force` says, and a
member that joins between the check and the commit makes the commit fail with GroupActive too.
A partition where the group never committed an offset gets the offset of `since` as its first one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient

from brokers._kafka_errors import CLIENT_ERRORS, translate
from brokers._retry import retry_within_budget
from brokers.base import GroupLag, PartitionLag
from brokers.errors import GroupActive, GroupNotFound

__all__ = ["KafkaGroupAdmin"]

T = TypeVar("T")
OpenConsumer = Callable[[str | None], Awaitable[AIOKafkaConsumer]]
EndOffsets = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]


class KafkaGroupAdmin:
    """`open_consumer(group_id)` starts a consumer (group_id None: outside any group) within the budget;
    `end_offsets(tps)` answers from a reader the broker keeps open."""

    def __init__(self, admin: AIOKafkaAdminClient, open_consumer: OpenConsumer, end_offsets: EndOffsets,
                 budget_s: float) -> None:
        self._admin = admin
        self._open = open_consumer
        self._end_offsets = end_offsets
        self._budget_s = budget_s

    async def _retrying(self, operation: Callable[[], Awaitable[T]], what: str) -> T:
        async def once() -> T:
            try:
                return await operation()
            except CLIENT_ERRORS as exc:
                raise translate(exc, what) from exc
        return await retry_within_budget(once, self._budget_s, what)

    async def members(self, group: str) -> int:
        async def describe() -> int:
            [response] = await self._admin.describe_consumer_groups([group])
            error_code, *_, members = response.groups[0][:6]
            if error_code:
                raise kafka_errors.for_code(error_code)(f"describe group {group!r}")
            return len(members)
        return await self._retrying(describe, f"describe consumer group {group!r}")

    async def committed(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        async def fetch() -> dict[TopicPartition, int | None]:
            found = await self._admin.list_consumer_group_offsets(group, partitions=tps)
            return {tp: found[tp].offset if tp in found and found[tp].offset >= 0 else None for tp in tps}
        return await self._retrying(fetch, f"committed offsets of group {group!r}")

    async def _range(self, tps: list[TopicPartition], since: datetime,
                     until: datetime | None) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """Per partition: the first offset at or after `since`, and the first one after `until` (or the end)."""
        async def read() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
            reader = await self._open(None)
            try:
                ends = await reader.end_offsets(tps)

                async def first_at(moment: datetime) -> dict[TopicPartition, int]:
                    found = await reader.offsets_for_times({tp: int(moment.timestamp() * 1000) for tp in tps})
                    return {tp: found[tp].offset if found.get(tp) is not None else ends[tp] for tp in tps}

                stops = ends if until is None else await first_at(until + timedelta(milliseconds=1))
                return await first_at(since), stops
            finally:
                await reader.stop()
        return await self._retrying(read, "offsets by time")

    async def lag(self, topic: str, tps: list[TopicPartition], group: str) -> GroupLag:
        members = await self.members(group)
        committed = await self.committed(group, tps)
        ends = await self._retrying(lambda: self._end_offsets(tps), f"end offsets of {topic!r}")
        partitions = tuple(
            PartitionLag(tp.partition, None if committed[tp] is None else str(committed[tp]), str(ends[tp]),
                         None if committed[tp] is None else max(0, ends[tp] - committed[tp]))
            for tp in tps)
        return GroupLag(topic, group, partitions, members=members)

    async def rewind(self, topic: str, tps: list[TopicPartition], group: str, since: datetime,
                     until: datetime | None, *, dry_run: bool) -> dict[int | None, int]:
        members = await self.members(group)
        committed = await self.committed(group, tps)
        if not members and all(offset is None for offset in committed.values()):
            raise GroupNotFound(f"consumer group {group!r} has never read Kafka topic {topic!r}")
        if members and not dry_run:
            raise GroupActive(
                f"consumer group {group!r} has {members} member(s): Kafka moves a group's offsets only while "
                "it is empty; stop them first (a member that died leaves after its session timeout)", members)
        starts, stops = await self._range(tps, since, until)
        counts: dict[int | None, int] = {tp.partition: max(0, stops[tp] - starts[tp]) for tp in tps}
        targets = {tp: starts[tp] if committed[tp] is None else min(committed[tp], starts[tp]) for tp in tps}
        moved = {tp: offset for tp, offset in targets.items() if offset != committed[tp]}
        if moved and not dry_run:
            await self._commit(group, moved)
        return counts

    async def _commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        what = f"move the offsets of group {group!r}"

        async def commit() -> None:
            committer = await self._open(group)
            try:
                committer.assign(list(offsets))  # assigned, not subscribed: it never joins the group
                await committer.commit(offsets)
            except kafka_errors.CommitFailedError as exc:
                raise GroupActive(f"{what}: a member joined the group meanwhile; stop its members first",
                                  members=1) from exc
            finally:
                await committer.stop()
        await self._retrying(commit, what)
