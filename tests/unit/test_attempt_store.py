"""The in-process attempt store (brokers.attempts.MemoryAttemptStore): what `Delivery.attempt` a
Kafka member gets for first deliveries, redeliveries, acknowledged records and a rewound group."""

from __future__ import annotations

from brokers.attempts import AttemptStore, MemoryAttemptStore


async def test_first_deliveries_are_attempt_one_and_redeliveries_count_up() -> None:
    store = MemoryAttemptStore()
    assert isinstance(store, AttemptStore)
    assert await store.count("g", [("t:0", 0), ("t:0", 1), ("t:1", 0)]) == [1, 1, 1]
    assert await store.count("g", [("t:1", 0), ("t:0", 1), ("t:0", 2)]) == [2, 2, 1]
    assert await store.count("g", [("t:0", 1)]) == [3]
    assert await store.count("other", [("t:0", 1)]) == [1]  # groups count apart


async def test_an_acknowledged_record_leaves_no_counter_and_forget_starts_afresh() -> None:
    store = MemoryAttemptStore()
    await store.count("g", [("t:0", 0), ("t:0", 1)])
    await store.count("g", [("t:0", 0)])
    await store.clear_many("g", [("t:0", 0)])
    assert await store.count("g", [("t:0", 0)]) == [2]  # handed out before: a redelivery, counted afresh
    await store.count("g", [("t:0", 1)])
    await store.forget("g", ["t:0"])
    assert await store.count("g", [("t:0", 0), ("t:0", 1)]) == [1, 1]
