"""Cluster-wide leader election on Kafka: the member of a group holding a one-partition topic leads.

    election = elect("kafka://127.0.0.1:9092", "ringrift.leader", "ringrift.leader", "node-1",
                     session_timeout_ms=6000)
    await election.start()
    await election.wait(leader=True)     # or read election.is_leader, or watch election.changed
    ...
    await election.stop()                # leaves the group: another member leads at once

Kafka's group coordinator gives the topic's only partition to exactly one live member. A member
that dies (no heartbeat) is dropped after `session_timeout_ms`, and the partition goes to a survivor:
that bounds the hand-over. The sticky assignor keeps the partition where it is when members join,
so a new member does not take the lead from a healthy leader. During a rebalance nobody leads
(`is_leader` is False from revocation until the new assignment), so two members never both
believe they lead within one group generation.

Nothing is ever written to the topic; the consumer polls it only so that the group keeps it as a
live member (`max_poll_interval_ms`). This module lives in `brokers/` because it speaks aiokafka;
`coordination/` reaches it through `elect()` and sees only `brokers.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

from brokers._kafka_errors import CLIENT_ERRORS, stop_client
from brokers.kafka import KafkaBroker

__all__ = ["LeaderElection", "elect"]

log = logging.getLogger("brokers.leadership")
_POLL_MS = 1000

OnChange = Callable[[bool], None]


class LeaderElection(ConsumerRebalanceListener):
    """One candidate. `is_leader` follows the partition (False during every rebalance); `changed` is
    set (clear it after reading) and `on_change(is_leader)` called, from the consumer's task, when
    the leadership changed across a settled rebalance or at stop()."""

    def __init__(self, url: str, topic: str, group: str, member_id: str, *,
                 on_change: OnChange | None = None, **options: Any) -> None:
        self.topic = topic
        self.group = group
        self.member_id = member_id
        self.changed = asyncio.Event()
        self._on_change = on_change
        self._broker = KafkaBroker(url, **options)
        self._consumer: AIOKafkaConsumer | None = None
        self._poller: asyncio.Task[None] | None = None
        self._leader = False
        self._announced = False  # the state last reported through `changed` / `on_change`
        self._states: dict[bool, asyncio.Event] = {True: asyncio.Event(), False: asyncio.Event()}
        self._states[False].set()

    @property
    def is_leader(self) -> bool:
        return self._leader

    @property
    def kafka_member_id(self) -> str | None:
        """The id the group coordinator gave this member (None before it joined)."""
        if self._consumer is None:
            return None
        coordinator = getattr(self._consumer, "_coordinator", None)
        member = getattr(coordinator, "member_id", None)
        return member or None

    async def start(self) -> None:
        """Create the topic if missing and join the group. Idempotent."""
        if self._consumer is not None:
            return
        await self._broker.start()
        try:
            await self._broker.ensure_topic(self.topic, partitions=1)
            s = self._broker.settings

            def make() -> AIOKafkaConsumer:
                consumer = self._broker._new_consumer(
                    group_id=self.group, client_id=self.member_id, auto_offset_reset="latest",
                    session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=s.heartbeat_interval_ms,
                    partition_assignment_strategy=(StickyPartitionAssignor,))
                consumer.subscribe([self.topic], listener=self)
                return consumer

            self._consumer = await self._broker._start_client(make, f"join leader group {self.group!r}")
        except BaseException:
            await self._broker.close()
            raise
        self._poller = asyncio.get_running_loop().create_task(self._poll(), name=f"leader-{self.group}")

    async def stop(self) -> None:
        """Leave the group (the partition goes to another member without waiting for a timeout)."""
        poller, consumer, self._poller, self._consumer = self._poller, self._consumer, None, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller
        if consumer is not None:
            with contextlib.suppress(*CLIENT_ERRORS):
                await stop_client(consumer)
        await self._broker.close()
        self._set(False)
        self._announce()

    async def wait(self, leader: bool = True) -> None:
        """Return once `is_leader == leader`."""
        await self._states[leader].wait()

    async def _poll(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                await self._consumer.getmany(timeout_ms=_POLL_MS)
            except kafka_errors.ConsumerStoppedError:
                return
            except CLIENT_ERRORS as exc:  # the coordinator rejoins by itself; keep polling
                log.warning("leader group %r: %s", self.group, exc)
                await asyncio.sleep(1.0)

    def _set(self, leader: bool) -> None:
        self._leader = leader
        self._states[leader].set()
        self._states[not leader].clear()

    def _announce(self) -> None:
        """Report a flip once the rebalance settled: a leader that gets its partition back after a
        rebalance (a member joined) paused meanwhile but never lost the lead, so nothing is said."""
        if self._leader == self._announced:
            return
        self._announced = self._leader
        self.changed.set()
        log.info("%s %s leadership of %r", self.member_id, "gained" if self._leader else "lost", self.group)
        if self._on_change is not None:
            try:
                self._on_change(self._leader)
            except Exception:
                log.exception("leadership on_change callback failed")

    # -- rebalance listener (called by aiokafka's coordinator task) ------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._set(False)  # at once: nobody leads while the group rebalances

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._set(any(tp.topic == self.topic for tp in assigned))
        self._announce()


def elect(url: str, topic: str, group: str, member_id: str, *, on_change: OnChange | None = None,
          **options: Any) -> LeaderElection:
    """A candidate for the leadership of `group` (not started: `await election.start()`).
    `options` are KafkaBroker options (session_timeout_ms, heartbeat_interval_ms, security, ...)."""
    return LeaderElection(url, topic, group, member_id, on_change=on_change, **options)
