"""The broker contract, written once and run against memory, real Redis and real Kafka.

A backend is done when it passes this suite. Each test uses its own topic and group names.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from brokers import RecordTooLarge
from brokers.base import Broker, Delivery
from brokers.errors import GroupActive, GroupNotFound
from schemas.envelope import RouterEvent
from tests.support import make_broker, unique


def _event(n: int, **payload: object) -> RouterEvent:
    return RouterEvent.new("TRAINING_COMPLETED", {"n": n, **payload}, source="conformance")


async def _take(broker: Broker, topic: str, group: str, count: int, *, ack: bool = True,
                timeout: float = 20.0, **options: object) -> list[Delivery]:
    """Consume `count` deliveries as one member of `group`, then leave."""
    got: list[Delivery] = []
    stream = broker.consume(topic, group, **options)  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(timeout):
            async for delivery in stream:
                got.append(delivery)
                if ack:
                    await delivery.ack()
                if len(got) >= count:
                    break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return got


@contextlib.asynccontextmanager
async def _member(broker: Broker, topic: str, group: str, sink: list[Delivery], *, ack: bool = True,
                  **options: object) -> AsyncIterator[asyncio.Task[None]]:
    """A group member running in the background until the block ends (or it is cancelled: it 'dies')."""
    async def run() -> None:
        async for delivery in broker.consume(topic, group, **options):  # type: ignore[arg-type]
            sink.append(delivery)
            if ack:
                await delivery.ack()

    task = asyncio.create_task(run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _settle(broker: Broker) -> None:
    """Kafka members need a moment to join and be assigned partitions."""
    if broker.capabilities.partitions:
        await asyncio.sleep(4)


async def _until(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_publish_then_consume_returns_the_same_event(broker: Broker) -> None:
    topic = unique("conf")
    await broker.ensure_topic(topic)
    sent = _event(1, config_key="hex8_2p")
    record_id = await broker.publish(topic, sent, key="hex8_2p")
    [got] = await _take(broker, topic, unique("g"), 1)
    assert got.event == sent
    assert got.record_id == record_id
    assert got.key == "hex8_2p"
    assert got.attempt == 1


async def test_acked_records_are_not_delivered_again_to_the_group(broker: Broker) -> None:
    topic, group = unique("conf"), unique("g")
    await broker.ensure_topic(topic)
    await broker.publish_batch(topic, [_event(i) for i in range(3)])
    first = await _take(broker, topic, group, 3)
    await broker.publish(topic, _event(3))
    [later] = await _take(broker, topic, group, 1)
    assert [d.event.payload["n"] for d in first] == [0, 1, 2]
    assert later.event.payload["n"] == 3


async def test_batch_ids_are_in_order_and_per_key_order_holds(broker: Broker) -> None:
    topic = unique("conf")
    await broker.ensure_topic(topic, partitions=2)
    ids = await broker.publish_batch(topic, [_event(i) for i in range(30)], key="one-key")
    assert len(ids) == 30 and len(set(ids)) == 30
    for i in range(30, 50):
        await broker.publish(topic, _event(i), key="one-key")
    got = await _take(broker, topic, unique("g"), 50)
    assert [d.event.payload["n"] for d in got] == list(range(50))
    assert [d.record_id for d in got[:30]] == ids


async def test_two_members_share_the_work_nothing_lost_or_doubled(broker: Broker) -> None:
    topic, group = unique("conf"), unique("g")
    await broker.ensure_topic(topic, partitions=2)
    a: list[Delivery] = []
    b: list[Delivery] = []
    async with _member(broker, topic, group, a, batch_size=5), _member(broker, topic, group, b, batch_size=5):
        await _settle(broker)
        for i in range(100):
            await broker.publish(topic, _event(i), key=f"k{i % 10}")
            await asyncio.sleep(0.002)
        await _until(lambda: len(a) + len(b) >= 100)
        await asyncio.sleep(0.3)  # anything doubled would show up now
    seen = sorted(d.event.payload["n"] for d in a + b)
    assert seen == list(range(100))
    assert a and b, f"one member did all the work: a={len(a)} b={len(b)}"


async def test_a_dead_members_unacked_deliveries_go_to_another_member(broker: Broker) -> None:
    topic, group = unique("conf"), unique("g")
    await broker.ensure_topic(topic)
    await broker.publish_batch(topic, [_event(i) for i in range(3)])
    dead: list[Delivery] = []
    async with _member(broker, topic, group, dead, ack=False, consumer="member-a"):
        await _until(lambda: len(dead) == 3)
    # member-a died holding 3 unacknowledged deliveries
    got = await _take(broker, topic, group, 3, consumer="member-b", claim_idle_ms=300)
    assert sorted(d.event.payload["n"] for d in got) == [0, 1, 2]
    assert all(d.attempt >= 2 for d in got), [d.attempt for d in got]


async def test_a_live_member_keeps_what_it_is_still_handling(broker: Broker) -> None:
    """A member that holds a delivery longer than claim_idle_ms (a long handler) but is alive keeps
    it: another member does not take it over and handle it a second time."""
    topic, group = unique("conf"), unique("g")
    await broker.ensure_topic(topic)
    await broker.publish(topic, _event(1))
    holder = broker.consume(topic, group, "member-a", start="earliest", claim_idle_ms=300)
    try:
        async with asyncio.timeout(20):
            held = await anext(holder)  # and handled slowly: neither acked nor nacked for a while
        other: list[Delivery] = []
        async with _member(broker, topic, group, other, consumer="member-b", claim_idle_ms=300):
            await asyncio.sleep(1.5)  # five times claim_idle_ms
        assert other == [], f"taken over from a live member: {other}"
        await held.ack()
    finally:
        await holder.aclose()


async def test_batches_come_in_order_within_the_size_and_nacked_ones_come_again(broker: Broker) -> None:
    topic = unique("conf")
    await broker.ensure_topic(topic)
    await broker.publish_batch(topic, [_event(i) for i in range(25)], key="one-key")
    sizes: list[int] = []
    firsts: list[Delivery] = []
    again: list[Delivery] = []
    batches = broker.consume_batches(topic, unique("g"), batch_size=10)
    async with asyncio.timeout(20):
        async for batch in batches:
            sizes.append(len(batch))
            for delivery in batch:
                if delivery.attempt > 1:
                    again.append(delivery)
                    await delivery.ack()
                else:
                    firsts.append(delivery)
                    await (delivery.nack() if delivery.event.payload["n"] % 10 == 3 else delivery.ack())
            if len(firsts) == 25 and len(again) == 3:
                break
    await batches.aclose()  # type: ignore[attr-defined]
    assert [d.event.payload["n"] for d in firsts] == list(range(25))
    assert all(1 <= size <= 10 for size in sizes), sizes
    assert sorted(d.event.payload["n"] for d in again) == [3, 13, 23]
    assert {d.attempt for d in again} == {2}


async def test_nack_redelivers_with_a_higher_attempt(broker: Broker) -> None:
    topic = unique("conf")
    await broker.ensure_topic(topic)
    await broker.publish(topic, _event(7))
    seen: list[Delivery] = []
    stream = broker.consume(topic, unique("g"))
    async with asyncio.timeout(20):
        async for delivery in stream:
            seen.append(delivery)
            if len(seen) == 1:
                await delivery.nack()
            else:
                await delivery.ack()
                break
    await stream.aclose()
    assert [d.event.payload["n"] for d in seen] == [7, 7]
    assert [d.attempt for d in seen] == [1, 2]


async def test_start_positions_earliest_and_latest(broker: Broker) -> None:
    topic = unique("conf")
    await broker.ensure_topic(topic)
    await broker.publish(topic, _event(0))
    late: list[Delivery] = []
    async with _member(broker, topic, unique("late"), late, start="latest"):
        await _settle(broker)
        await asyncio.sleep(0.3)
        await broker.publish(topic, _event(1))
        await _until(lambda: len(late) == 1)
    early = await _take(broker, topic, unique("early"), 2, start="earliest")
    assert [d.event.payload["n"] for d in late] == [1]
    assert [d.event.payload["n"] for d in early] == [0, 1]


async def test_read_by_time_and_by_id(broker: Broker) -> None:
    topic = unique("conf")
    await broker.ensure_topic(topic)
    ids = [await broker.publish(topic, _event(i)) for i in range(3)]
    await asyncio.sleep(0.05)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.05)
    ids += [await broker.publish(topic, _event(i)) for i in range(3, 6)]
    after = [r.event.payload["n"] async for r in broker.read(topic, since=middle)]
    before = [r.event.payload["n"] async for r in broker.read(topic, until=middle)]
    by_id = [r.event.payload["n"] async for r in broker.read(topic, start_id=ids[1], end_id=ids[3])]
    limited = [r.record_id async for r in broker.read(topic, limit=2)]
    assert after == [3, 4, 5]
    assert before == [0, 1, 2]
    assert by_id == [1, 2, 3]
    assert limited == ids[:2]


async def test_an_undecodable_record_surfaces_with_its_reason(broker: Broker) -> None:
    topic = unique("conf")
    await broker.ensure_topic(topic)
    await broker.publish_raw(topic, b"this is not json")
    await broker.publish_raw(topic, b'{"payload": {}}')
    await broker.publish(topic, _event(1))
    bad1, bad2, good = await _take(broker, topic, unique("g"), 3)
    assert bad1.event is None and bad1.raw == b"this is not json" and "not JSON" in bad1.error
    assert bad2.event is None and "event_type" in bad2.error
    assert good.event is not None and good.event.payload["n"] == 1
    records = [r async for r in broker.read(topic)]
    assert records[0].event is None and records[0].raw == b"this is not json"


async def test_a_foreign_minimal_record_gets_a_stable_id(broker: Broker) -> None:
    topic = unique("conf")
    await broker.ensure_topic(topic)
    await broker.publish_raw(topic, b'{"event_type": "new_games", "payload": {"count": 3}}')
    [first] = await _take(broker, topic, unique("g"), 1)
    [again] = await _take(broker, topic, unique("g"), 1)
    assert first.event.event_type == "NEW_GAMES_AVAILABLE"
    assert first.event.event_id == again.event.event_id
    assert len(first.event.content_hash) == 64


async def test_records_over_the_size_limit_are_refused(broker_kind: str) -> None:
    async with make_broker(broker_kind, max_record_bytes=2048) as small:
        topic = unique("conf")
        await small.ensure_topic(topic)
        with pytest.raises(RecordTooLarge, match="exceeds the limit of 2048 bytes"):
            await small.publish(topic, _event(1, blob="x" * 4096))
        with pytest.raises(RecordTooLarge):
            await small.publish_raw_batch(topic, [b"{}", b"y" * 4096])
        assert [r async for r in small.read(topic)] == []


# -- a group seen from outside: lag, members, rewind for replay ------------------------------------------


async def _publish_phases(broker: Broker, topic: str) -> tuple[datetime, datetime]:
    """Records 0-2 before `since`, 3-6 in [since, until], 7-8 after `until`, spread over partitions."""
    for n in range(9):
        if n == 3:
            await asyncio.sleep(0.05)
            since = datetime.now(UTC)
            await asyncio.sleep(0.01)
        if n == 7:
            await asyncio.sleep(0.02)
            until = datetime.now(UTC)
            await asyncio.sleep(0.05)
        await broker.publish(topic, _event(n), key=f"k{n}")
    return since, until


async def test_group_lag_counts_what_the_group_has_not_finished(broker: Broker) -> None:
    topic, group = unique("conf"), unique("g")
    await broker.ensure_topic(topic, partitions=2)
    await broker.publish_batch(topic, [_event(i) for i in range(5)], key="one-key")
    await _take(broker, topic, group, 2)
    await _until_no_members(broker, topic, group)
    lag = await broker.group_lag(topic, group)
    assert (lag.topic, lag.group) == (topic, group)
    assert lag.behind == 3
    assert len(lag.partitions) == (2 if broker.capabilities.partitions else 1)
    assert all(p.end for p in lag.partitions)

    stranger = await broker.group_lag(topic, unique("never"))
    assert stranger.members == 0 and all(p.position is None for p in stranger.partitions)
    with pytest.raises(GroupNotFound):
        await broker.rewind_group(topic, unique("never"), since=datetime.now(UTC))


async def test_rewind_redelivers_the_range_and_a_dry_run_changes_nothing(broker: Broker) -> None:
    topic, group = unique("conf"), unique("g")
    await broker.ensure_topic(topic, partitions=2)
    since, until = await _publish_phases(broker, topic)
    await _take(broker, topic, group, 9)
    await _until_no_members(broker, topic, group)
    assert (await broker.group_lag(topic, group)).behind == 0

    counted = await broker.rewind_group(topic, group, since=since, until=until, dry_run=True)
    assert sum(counted.values()) == 4
    assert (await broker.group_lag(topic, group)).behind == 0
    moved = await broker.rewind_group(topic, group, since=since, until=until)
    assert moved == counted
    # the broker hands over everything from the new position: the range and what follows it
    assert (await broker.group_lag(topic, group)).behind == 6
    again = await _take(broker, topic, group, 6)
    assert sorted(d.event.payload["n"] for d in again) == [3, 4, 5, 6, 7, 8]
    assert (await broker.group_lag(topic, group)).behind == 0


async def test_rewind_hands_unacknowledged_records_over_once(broker: Broker, broker_kind: str) -> None:
    topic, group = unique("conf"), unique("g")
    await broker.ensure_topic(topic)
    since, _ = await _publish_phases(broker, topic)
    await _take(broker, topic, group, 3, consumer="m1")
    held: list[Delivery] = []
    async with _member(broker, topic, group, held, ack=False, consumer="m1"):
        await _until(lambda: len(held) == 6)  # delivered, never acknowledged: the member "dies"
    await _until_no_members(broker, topic, group)
    assert await broker.rewind_group(topic, group, since=since) == {(0 if broker.capabilities.partitions
                                                                      else None): 6}
    got: list[Delivery] = []
    async with _member(broker, topic, group, got, consumer="m1"):
        await _until(lambda: len(got) >= 6)
        await asyncio.sleep(0.5)  # a second copy of a held record would show up now
    assert sorted(d.event.payload["n"] for d in got) == [3, 4, 5, 6, 7, 8]
    if broker_kind != "kafka":  # Kafka counts attempts per offset in its attempt store
        assert {d.attempt for d in got} == {1}


async def test_rewind_is_refused_while_the_group_has_members(broker: Broker) -> None:
    topic, group = unique("conf"), unique("g")
    await broker.ensure_topic(topic)
    since, _ = await _publish_phases(broker, topic)
    seen: list[Delivery] = []
    async with _member(broker, topic, group, seen):
        await _until(lambda: len(seen) == 9)
        assert (await broker.group_lag(topic, group)).members == 1
        with pytest.raises(GroupActive, match="stop them first"):
            await broker.rewind_group(topic, group, since=since)
        assert sum((await broker.rewind_group(topic, group, since=since, dry_run=True)).values()) == 6
        if broker.capabilities.partitions:  # Kafka moves the offsets of an empty group only
            with pytest.raises(GroupActive, match="only while it is empty"):
                await broker.rewind_group(topic, group, since=since, force=True)
        else:
            assert sum((await broker.rewind_group(topic, group, since=since, force=True)).values()) == 6
            await _until(lambda: len(seen) == 15)  # the running member got the range again
    await _until_no_members(broker, topic, group)


async def _until_no_members(broker: Broker, topic: str, group: str) -> None:
    """A Redis member counts as active for a few seconds after its last read."""
    deadline = time.monotonic() + 20
    while (await broker.group_lag(topic, group)).members:
        assert time.monotonic() < deadline, "the group still has members"
        await asyncio.sleep(0.2)
