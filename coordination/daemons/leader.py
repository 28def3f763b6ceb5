"""Cluster leadership for daemons: one leader among the processes of a namespace, elected on Kafka.

    leadership = Leadership(RouterConfig.from_env(), router=get_router())
    manager.register_factory("LEADER_ELECTION", leadership.factory())   # or start()/stop() it yourself
    daemon = MyPeriodic(leadership=leadership)                         # leader_only daemons wait on it

The election (brokers.leadership) is a group `<ns>.leader` on a one-partition topic `<ns>.leader`:
whoever holds the partition leads. A dead leader is dropped after `session_timeout_s` (default 6 s)
and a survivor takes over, which bounds the hand-over. Each settled change is announced through the
router: `LEADER_ELECTED` {node_id, member_id} when this process becomes leader, `LEADER_LOST` {node_id,
member_id} when it stops being one. `Leadership` also works without Kafka (`kafka_bootstrap` None):
then this single process is the leader, as there is nobody to share the cluster with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

from coordination.config import RouterConfig
from coordination.protocols import HealthCheckResult

__all__ = ["LeaderState", "Leadership", "StaticLeadership"]

log = logging.getLogger(__name__)


class Announcer(Protocol):
    async def publish(self, event_type: str, payload: dict[str, Any] | None = None, source: str = "",
                      **options: Any) -> Any: ...


class LeaderState(Protocol):
    """What a leader_only daemon reads: `is_leader` and a way to wait for a given state."""

    @property
    def is_leader(self) -> bool: ...

    async def start(self) -> None: ...

    async def wait(self, leader: bool = True) -> None: ...


class StaticLeadership:
    """A fixed answer (tests, single-process setups): `is_leader` is what it was built with."""

    def __init__(self, leader: bool = True) -> None:
        self._event = asyncio.Event()
        self.set(leader)

    @property
    def is_leader(self) -> bool:
        return self._event.is_set()

    def set(self, leader: bool) -> None:
        (self._event.set if leader else self._event.clear)()

    async def start(self) -> None:
        return None

    async def wait(self, leader: bool = True) -> None:
        while self.is_leader != leader:
            if leader:
                await self._event.wait()
            else:
                await asyncio.sleep(0.05)


class Leadership:
    """This process's candidacy. `start()` joins, `stop()` leaves (a successor takes over at once)."""

    def __init__(self, config: RouterConfig, *, router: Announcer | None = None, session_timeout_s: float = 6.0,
                 member_id: str | None = None) -> None:
        self.config = config
        self.node_id = config.node_id
        self.member_id = member_id or f"{config.node_id}.{os.getpid()}"
        self.topic = self.group = f"{config.namespace}.leader"
        self._router = router
        self._session_timeout_s = session_timeout_s
        self._election: Any = None
        self._static: StaticLeadership | None = None
        self._announcements: set[asyncio.Task[Any]] = set()
        self.changes = 0

    @property
    def is_leader(self) -> bool:
        if self._static is not None:
            return self._static.is_leader
        return self._election is not None and self._election.is_leader

    async def start(self) -> None:
        """Join the election. Idempotent."""
        if self._election is not None or self._static is not None:
            return
        if self.config.kafka_url is None or not self.config.kafka_url.startswith("kafka://"):
            self._static = StaticLeadership(True)
            self._on_change(True)
            return
        from brokers.leadership import elect  # aiokafka only where Kafka is used

        session_ms = int(self._session_timeout_s * 1000)
        options = {"session_timeout_ms": session_ms, "heartbeat_interval_ms": max(100, session_ms // 10),
                   **{k: v for k, v in self.config.kafka_options.items() if k != "attempt_store"}}
        election = elect(self.config.kafka_url, self.topic, self.group, self.member_id,
                         on_change=self._on_change, **options)
        await election.start()
        self._election = election

    async def stop(self) -> None:
        election, self._election = self._election, None
        if election is not None:
            await election.stop()
        elif self._static is not None:
            self._static = None
            self._on_change(False)
        if self._announcements:
            await asyncio.wait(list(self._announcements), timeout=5.0)

    async def wait(self, leader: bool = True) -> None:
        """Return once `is_leader == leader` (start() first)."""
        if self._static is not None:
            await self._static.wait(leader)
        elif self._election is not None:
            await self._election.wait(leader)
        elif leader:
            raise RuntimeError("Leadership.wait(leader=True) before start()")

    def _on_change(self, leader: bool) -> None:
        self.changes += 1
        if self._router is None:
            return
        event_type = "LEADER_ELECTED" if leader else "LEADER_LOST"
        payload = {"node_id": self.node_id, "member_id": self.member_id, "group": self.group}
        task = asyncio.get_running_loop().create_task(self._announce(event_type, payload))
        self._announcements.add(task)
        task.add_done_callback(self._announcements.discard)

    async def _announce(self, event_type: str, payload: dict[str, Any]) -> None:
        assert self._router is not None
        try:
            # dedup=False: the same member may legitimately lose and regain the lead with equal payloads
            await self._router.publish(event_type, payload, "leadership", dedup=False)
        except Exception as exc:  # an announcement must not take the election down
            log.warning("could not announce %s: %s", event_type, exc)

    # -- as a daemon -------------------------------------------------------------------------------------

    def health_check(self) -> HealthCheckResult:
        return HealthCheckResult.healthy("leader" if self.is_leader else "follower", is_leader=self.is_leader,
                                         member_id=self.member_id, changes=self.changes)

    def factory(self) -> Callable[[], _LeadershipDaemon]:
        """A DaemonManager factory running this candidacy until the daemon is stopped."""
        return lambda: _LeadershipDaemon(self)


class _LeadershipDaemon:
    def __init__(self, leadership: Leadership) -> None:
        self.leadership = leadership
        self._stop = asyncio.Event()

    async def run(self) -> None:
        try:
            await self.leadership.start()
            await self._stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await self.leadership.stop()

    async def stop(self) -> None:
        self._stop.set()

    def health_check(self) -> HealthCheckResult:
        return self.leadership.health_check()
