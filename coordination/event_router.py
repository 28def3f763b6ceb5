"""The unified event router: one publish, three buses, each event once per subscriber.

    router = get_router()                              # from RouterConfig.from_env()
    router.subscribe("TRAINING_COMPLETED", on_done)    # sync or async; None = every event
    await router.start()                               # one consumer per bus
    event = await router.publish("TRAINING_COMPLETED", {"config_key": "hex8_2p"}, source="trainer")

Publish builds ONE `RouterEvent` and writes it, concurrently, to the data stream `<ns>:data`, the stage
stream `<ns>:stage` (only for types with a stage mapping) and the cross-process topic `<ns>.events`
(keyed by `key`, else the payload's config_key/config, else the type); it returns once every bus
acknowledged. Consumption: each bus is consumed in the group `<node_id>.<service_name>` by
coordination._delivery_handling: decode -> strict validation -> dedup claim -> handlers (global
first, then typed; a failed first attempt retried beside the stream, then dead-lettered) -> dedup
settle -> ack. Because all three buses share one group and therefore one dedup scope, the copies of one
publish that ride several buses reach each handler once. `publish(..., dedup=False)` opts out of
content dedup: the event id then starts with `nodedup-` (see NO_CONTENT_DEDUP_PREFIX).

Broker outages: each bus's write retries (with back-off, inside the broker) for at most
`publish_retry_budget_s`, the router's deadline, which the brokers are connected with as well. A bus
that is still down then makes publish raise `BrokerUnavailable` naming it, unless a spool directory is
configured: then that bus's part (only the buses that failed) is appended durably to the spool
(coordination.spool), publish returns normally, and a drainer sends the spool in order once the bus is
back. While a bus has records in the spool, new publishes to it go to the spool too (order per bus).
The spool is opened (and flock'd) by start() or the first publish, whichever comes first, so a
restarted process drains what its predecessor left.

This module is over 400 lines because it is the router's one public class, and the spool's glue
(which bus a record goes to, probing it, dead-lettering what it refuses) needs the router's brokers;
the parts that stand alone live in config, dlq, handlers, spool, _delivery_handling and _loop_bridge;
the dedup marks in brokers.dedup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

import brokers
from brokers.base import Broker
from brokers.dedup import connect_dedup
from brokers.errors import BrokerError, BrokerUnavailable
from coordination._deadlines import Deadlines
from coordination._delivery_handling import NO_CONTENT_DEDUP_PREFIX, ORIGIN, DeliveryHandling
from coordination._loop_bridge import LoopBridge
from coordination.config import RouterConfig
from coordination.dlq import DeadLetter, DeadLetterQueue
from coordination.handlers import (
    Handler,
    Subscriber,
    current_event,
)
from coordination.spool import Spool, SpoolDrainer, SpooledRecord, new_record
from schemas.envelope import DecodeError, EventSource, RouterEvent, decode, encode
from schemas.events import EventTypeLike, stage_event_for, validate_event_type

__all__ = ["NO_CONTENT_DEDUP_PREFIX", "EventSource", "RouterEvent", "UnifiedEventRouter", "get_router",
           "has_subscribers", "publish", "publish_sync", "reset_router", "subscribe", "unsubscribe"]

log = logging.getLogger(__name__)


class UnifiedEventRouter:
    def __init__(self, config: RouterConfig | None = None) -> None:
        self.config = config or RouterConfig.from_env()
        c = self.config
        self._global: list[Handler] = []
        self._typed: dict[str, list[Handler]] = {}
        self._event_history: deque[RouterEvent] = deque(maxlen=c.history_size)
        self._bridge = LoopBridge(f"router-{c.group}")
        self._lock = asyncio.Lock()
        self._local: Broker | None = None
        self._cross: Broker | None = None
        self._closeables: list[Any] = []
        self._dedup: Any = None
        self.dlq: DeadLetterQueue | None = None
        self._consumers: list[asyncio.Task[None]] = []
        self._subscribers: dict[str, tuple[Subscriber, ...]] = {}  # event type -> who runs, in order
        # (published | consumed | deduplicated | dead_lettered, bus, event type) -> count
        self._flow: Counter[tuple[str, str, str]] = Counter()
        self._counts: Counter[str] = Counter()
        self._handling = DeliveryHandling(c, self._subscribers_for, history=self._event_history, flow=self._flow,
                                          counts=self._counts)
        self._spool: Spool | None = None
        self._deadlines = Deadlines(c.publish_retry_budget_s)
        self._drainer: SpoolDrainer | None = None

    # -- subscriptions ---------------------------------------------------------------------------

    def _type_key(self, event_type: EventTypeLike) -> str:
        return validate_event_type(event_type, strict=self.config.strict_validation)

    def subscribe(self, event_type: EventTypeLike | None, handler: Handler) -> None:
        """Call `handler(event)` for each event of `event_type` (None: every event). Idempotent."""
        handlers = self._global if event_type is None else self._typed.setdefault(self._type_key(event_type), [])
        if handler not in handlers:
            handlers.append(handler)
            self._subscribers.clear()

    def unsubscribe(self, event_type: EventTypeLike | None, handler: Handler) -> bool:
        handlers = self._global if event_type is None else self._typed.get(self._type_key(event_type), [])
        if handler in handlers:
            handlers.remove(handler)
            self._subscribers.clear()
            return True
        return False

    def _subscribers_for(self, event_type: str) -> tuple[Subscriber, ...]:
        """Global handlers first, then typed ones; worked out once per type until subscriptions change."""
        subscribers = self._subscribers.get(event_type)
        if subscribers is None:
            subscribers = tuple(Subscriber(h) for h in [*self._global, *self._typed.get(event_type, ())])
            self._subscribers[event_type] = subscribers
        return subscribers

    def has_subscribers(self, event_type: EventTypeLike) -> bool:
        """True when an event of this type would reach a handler (typed or global)."""
        return bool(self._global or self._typed.get(self._type_key(event_type)))

    # -- connection and lifecycle --------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return bool(self._consumers)

    async def _connect(self) -> None:
        async with self._lock:
            if self._local is not None:
                return
            self._closeables = []
            try:
                await self._connect_brokers()
            except BaseException:  # a half-made connection is closed, not leaked
                closeables, self._closeables = self._closeables, []
                for item in reversed(closeables):
                    with contextlib.suppress(Exception):
                        await item.close()
                raise

    async def _connect_brokers(self) -> None:
        """Start the brokers, ensure the topics, make the dedup store and the DLQ (under _lock)."""
        c = self.config
        local = brokers.connect(c.redis_url, **{"retry_budget_s": c.publish_retry_budget_s, **c.redis_options})
        self._closeables.append(local)
        await local.start()
        cross = None
        if c.kafka_url is not None:
            options = {"retry_budget_s": c.publish_retry_budget_s, **c.kafka_options}
            if c.kafka_url.startswith("kafka://") and "attempt_store" not in options \
                    and not c.redis_url.startswith("memory://"):
                from brokers.attempts import RedisAttemptStore

                options["attempt_store"] = RedisAttemptStore(c.redis_url, namespace=c.namespace)
                self._closeables.append(options["attempt_store"])
            cross = brokers.connect(c.kafka_url, **options)
            self._closeables.append(cross)
            await cross.start()
            await cross.ensure_topic(c.cross_topic, partitions=c.cross_process_partitions)
        for topic in (c.data_topic, c.stage_topic):
            await local.ensure_topic(topic)
        await (cross or local).ensure_topic(c.dlq_topic)
        lease = min(c.dedup_id_ttl_s, (c.handler_timeout_s + c.retry_max_s) * c.max_attempts + 60)
        # A record is delivered once, then once more per process its handling killed: the delivery
        # that would exceed max_deliveries is the (max_deliveries)th takeover of its claim.
        self._dedup = connect_dedup(c.redis_url, c.namespace, c.group, window_s=c.dedup_window_s,
                                    id_ttl_s=c.dedup_id_ttl_s, lease_s=lease, max_takeovers=c.max_deliveries,
                                    cache_size=c.dedup_cache_size)
        self._closeables.append(self._dedup)
        self.dlq = DeadLetterQueue(cross or local, c.dlq_topic)
        self._handling.attach(self._dedup, self.dlq)
        self._local, self._cross = local, cross
        self._bridge.adopt(asyncio.get_running_loop())

    async def connect(self) -> None:
        """Connect to the brokers without starting the bus readers (publish does it by itself). Idempotent."""
        await self._bridge.run(self._connect())

    async def start(self) -> None:
        """Connect and start one consumer per bus (data, stage, cross). Idempotent."""
        await self._bridge.run(self._start())

    async def _start(self) -> None:
        self._open_spool()  # first: a spool dir held by another process fails start() at once
        await self._connect()
        if self._drainer is not None:
            self._drainer.wake()
        if self._consumers:
            return
        self._consumers = [asyncio.create_task(self._handling.consume(bus, broker, topic), name=f"router-{bus}")
                           for bus, broker, topic in self._read_targets()]

    def _read_targets(self) -> list[tuple[str, Broker, str]]:
        """(bus, broker, topic) of each bus this router reads."""
        c = self.config
        assert self._local is not None
        buses = [("data", self._local, c.data_topic), ("stage", self._local, c.stage_topic)]
        if self._cross is not None:
            buses.append(("cross", self._cross, c.cross_topic))
        return [b for b in buses if b[0] in c.read_buses]

    async def stop(self) -> None:
        """Stop the consumers and disconnect. Idempotent; the router can be started again."""
        if self._bridge.usable_home() is not None:
            await self._bridge.run(self._stop())
        elif self._spool is not None:  # never connected, yet it spooled: its drainer runs on this loop
            await self._stop()

    async def _stop(self) -> None:
        spool, drainer, self._spool, self._drainer = self._spool, self._drainer, None, None
        if drainer is not None:  # before the brokers close under it; its records stay in the spool
            await drainer.stop()
            self._counts["spool_drained"] += drainer.drained
        if spool is not None:
            spool.close()
        consumers, self._consumers = self._consumers, []
        for task in consumers:
            task.cancel()
        if consumers:  # a broker read that ignores cancellation must not hang stop(): closing ends it
            _, stuck = await asyncio.wait(consumers, timeout=2.0)
            if stuck:
                log.warning("%d router consumer(s) did not stop within 2 s; closing their brokers", len(stuck))
        await self._handling.stop()
        closeables, self._closeables = self._closeables, []
        for item in reversed(closeables):
            with contextlib.suppress(Exception):
                await item.close()
        self._local = self._cross = self._dedup = self.dlq = None

    def stop_sync(self) -> None:
        """stop() from a thread without a running loop (ends a publish_sync private loop too)."""
        if self._bridge.usable_home() is not None:
            self._bridge.run_blocking(self._stop(), timeout=30)
        self._bridge.stop_private_loop()

    # -- publishing -------------------------------------------------------------------------------

    def _build(self, event_type: EventTypeLike, payload: Mapping[str, Any] | None, source: str,
               correlation_id: str | None, dedup: bool, *, parent_event_id: str | None = None,
               trace_id: str | None = None, event_id: str | None = None,
               target_group: str | None = None) -> RouterEvent:
        if target_group is not None and not target_group:
            raise ValueError("target_group must name a consumer group (None: every group)")
        name = self._type_key(event_type)
        parent = current_event()
        if parent is None and dedup and correlation_id is parent_event_id is trace_id is event_id is target_group \
                is None:  # the common case: nothing to carry over
            return RouterEvent.new(name, payload, source)
        fields: dict[str, Any] = {}
        if parent is not None:
            fields.update(trace_id=parent.trace_id, correlation_id=parent.correlation_id,
                          parent_event_id=parent.event_id)
        given = {"correlation_id": correlation_id, "parent_event_id": parent_event_id, "trace_id": trace_id,
                 "event_id": event_id, "target_group": target_group}
        fields.update({field: value for field, value in given.items() if value is not None})
        if not dedup:
            fields["event_id"] = f"{NO_CONTENT_DEDUP_PREFIX}{event_id or uuid.uuid4()}"
        return RouterEvent.new(name, payload, source, **fields)

    async def publish(self, event_type: EventTypeLike, payload: Mapping[str, Any] | None = None,
                      source: str = "", *, route_to_data_bus: bool = True, route_to_stage_bus: bool = True,
                      route_to_cross_process: bool = True, key: str | None = None,
                      correlation_id: str | None = None, dedup: bool = True, parent_event_id: str | None = None,
                      trace_id: str | None = None, event_id: str | None = None,
                      target_group: str | None = None) -> RouterEvent:
        """Publish one event to the chosen buses; returns it once every bus acknowledged.

        Lineage, for re-publishing (a dead-letter re-drive): `parent_event_id`, `trace_id` and
        `correlation_id` override what the running handler's event gives (see handlers.current_event);
        `event_id` replaces the random id, so that repeating an interrupted re-publish with the same id
        is dropped by dedup; `target_group` makes every other consumer group acknowledge and skip it."""
        event = self._build(event_type, payload, source, correlation_id, dedup, parent_event_id=parent_event_id,
                            trace_id=trace_id, event_id=event_id, target_group=target_group)
        routes = (route_to_data_bus, route_to_stage_bus, route_to_cross_process)
        await self._bridge.run(self._send(event, routes, key))
        return event

    def publish_sync(self, event_type: EventTypeLike, payload: Mapping[str, Any] | None = None,
                     source: str = "", **options: Any) -> RouterEvent:
        """`publish` for sync code. From a thread without a running loop it blocks until the buses
        acknowledged; from sync code running *on* an event loop (which must not block) the writes
        are scheduled and the event is returned at once."""
        event = self._build(event_type, payload, source, options.pop("correlation_id", None),
                            options.pop("dedup", True), parent_event_id=options.pop("parent_event_id", None),
                            trace_id=options.pop("trace_id", None), event_id=options.pop("event_id", None),
                            target_group=options.pop("target_group", None))
        key = options.pop("key", None)
        routes = (options.pop("route_to_data_bus", True), options.pop("route_to_stage_bus", True),
                  options.pop("route_to_cross_process", True))
        if options:
            raise TypeError(f"unexpected option(s): {', '.join(sorted(options))}")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._bridge.run_blocking(self._send(event, routes, key))
        else:
            self._bridge.schedule(self._send(event, routes, key))
        return event

    def _partition_key(self, event: RouterEvent, key: str | None) -> str:
        if key is not None:
            return key
        chosen = event.payload.get("config_key") or event.payload.get("config")
        return str(chosen) if chosen else event.event_type

    def _targets(self, event: RouterEvent, routes: tuple[bool, bool, bool],
                 key: str | None) -> list[tuple[str, str, str | None]]:
        """(bus, topic, key) for each bus this publish goes to."""
        c, (to_data, to_stage, to_cross) = self.config, routes
        targets: list[tuple[str, str, str | None]] = []
        if to_data:
            targets.append(("data", c.data_topic, key))
        if to_stage and stage_event_for(event.event_type) is not None:
            targets.append(("stage", c.stage_topic, key))
        if to_cross and c.kafka_url is not None:
            targets.append(("cross", c.cross_topic, self._partition_key(event, key)))
        return targets

    def _broker_for(self, bus: str) -> Broker:
        broker = self._cross if bus == "cross" else self._local
        if broker is None:
            raise BrokerUnavailable(f"the {bus} bus is not connected")
        return broker

    async def _publish_one(self, bus: str, topic: str, key: str | None, value: bytes) -> None:
        """One bus's write, bounded by the router's budget (a broker's own retries can outlast it by
        an attempt; an aiokafka send can outlast it altogether)."""
        budget = self.config.publish_retry_budget_s
        if budget <= 0:
            await self._broker_for(bus).publish_raw(topic, value, key)
            return
        try:
            await self._deadlines.bound(self._broker_for(bus).publish_raw(topic, value, key))
        except TimeoutError:
            raise BrokerUnavailable(f"no acknowledgement from {topic!r} within {budget:g} s") from None

    async def _send(self, event: RouterEvent, routes: tuple[bool, bool, bool], key: str | None) -> None:
        spool = self._open_spool()
        targets = self._targets(event, routes, key)
        if spool is None and len(targets) == 1 and self._local is not None:  # the common case, kept short
            bus, topic, part_key = targets[0]
            try:
                await self._publish_one(bus, topic, part_key, encode(event))
            except BrokerError as exc:
                if exc.retriable:
                    raise _unavailable(event, {bus: exc}) from exc
                raise
            self._flow["published", bus, event.event_type] += 1
            return
        # a bus with records waiting in the spool gets this one behind them (order per bus)
        direct = [t for t in targets if spool is None or not spool.depth(t[0])]
        failed: dict[str, BaseException] = {}
        if (direct or not targets) and self._local is None:
            try:
                await self._connect()
            except BrokerError as exc:  # not even connected: with a spool, every part waits there
                if spool is None or not exc.retriable:
                    raise
                failed = {bus: exc for bus, _, _ in direct}
                direct = []
        value = encode(event)
        if len(direct) == 1:  # the common case: no task per bus
            try:
                results: list[Any] = [await self._publish_one(*direct[0], value)]
            except Exception as exc:
                results = [exc]
        else:
            results = await asyncio.gather(*(self._publish_one(*t, value) for t in direct), return_exceptions=True)
        for (bus, _, _), result in zip(direct, results, strict=True):
            if isinstance(result, BaseException):
                failed[bus] = result
            else:
                self._flow["published", bus, event.event_type] += 1
        for exc in failed.values():
            if not isinstance(exc, BrokerError) or not exc.retriable:
                raise exc
        if failed and spool is None:
            raise _unavailable(event, failed) from next(iter(failed.values()))
        for bus, topic, part_key in targets:
            if spool is not None and (bus in failed or (bus, topic, part_key) not in direct):
                await asyncio.to_thread(spool.append, new_record(bus, topic, value, part_key, event.event_id))
                self._counts["spooled"] += 1
                assert self._drainer is not None
                self._drainer.wake(bus)

    # -- the spool --------------------------------------------------------------------------------

    def _open_spool(self) -> Spool | None:
        """The spool (opened and locked on first use, its drainer woken), or None when not configured."""
        c = self.config
        if c.spool_dir is None or self._spool is not None:
            return self._spool
        self._spool = Spool(c.spool_dir)
        self._drainer = SpoolDrainer(self._spool, self._drain_send, self._drain_probe, self._drain_dead_letter,
                                     send_timeout_s=c.publish_retry_budget_s,
                                     probe_timeout_s=c.spool_probe_timeout_s, backoff_max_s=c.spool_backoff_max_s)
        self._drainer.wake()
        return self._spool

    async def _drain_send(self, record: SpooledRecord) -> None:
        await self._connect()
        await self._broker_for(record.bus).publish_raw(record.topic, record.value, record.key)

    async def _drain_probe(self, bus: str) -> None:
        await self._connect()
        c = self.config
        topic = {"data": c.data_topic, "stage": c.stage_topic}.get(bus, c.cross_topic)
        await self._broker_for(bus).ensure_topic(topic, partitions=c.cross_process_partitions if bus == "cross"
                                                 else 1)

    async def _drain_dead_letter(self, record: SpooledRecord, exc: BaseException) -> None:
        """A spooled record the broker refuses for good: a dead letter (stage "publish", handler
        "spool-drain"), so that it neither blocks its bus nor is lost."""
        await self._connect()
        assert self.dlq is not None
        try:
            event, raw = decode(record.value), None
        except DecodeError:
            event, raw = None, record.value
        letter = DeadLetter(
            dead_letter_id=str(uuid.uuid4()), stage="publish", event=event, raw=raw, bus=record.bus,
            topic=record.topic, handler="spool-drain", exception_type=type(exc).__name__,
            message=f"spooled publish refused by the broker: {exc}", attempts=1,
            first_failure_at=record.spooled_at, last_failure_at=time.time(), node_id=self.config.node_id)
        await self.dlq.put(letter)
        self._flow["dead_lettered", record.bus, event.event_type if event else "(undecodable)"] += 1

    # -- observability ----------------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        dup, content = self._counts["duplicates_prevented"], self._counts["content_duplicates_prevented"]
        routed: Counter[str] = Counter()
        by_source: Counter[str] = Counter()
        published: Counter[str] = Counter()
        dead_lettered = 0
        for (what, bus, event_type), count in self._flow.items():  # the counts below derive from the flow
            if what == "consumed":
                routed[event_type] += count
                by_source[ORIGIN[bus].value] += count
            elif what == "published":
                published[bus] += count
            elif what == "dead_lettered":
                dead_lettered += count
        return {
            "events_routed": dict(routed), "total_events_routed": sum(routed.values()),
            "events_by_source": dict(by_source), "duplicates_prevented": dup,
            "flow": [{"what": what, "bus": bus, "event_type": event_type, "count": count}
                     for (what, bus, event_type), count in sorted(self._flow.items())],
            "content_duplicates_prevented": content, "total_duplicates_prevented": dup + content,
            "handler_errors": self._counts["handler_errors"], "handler_timeouts": self._counts["handler_timeouts"],
            "dead_lettered": dead_lettered, "published": dict(published),
            "spooled": self._counts["spooled"], "spool_depth": self._spool_depth(),
            "spool_drained": self._counts["spool_drained"] + (self._drainer.drained if self._drainer else 0),
            "subscriber_count": sum(len(h) for h in self._typed.values()),
            "global_subscriber_count": len(self._global), "history_size": len(self._event_history),
            "running": self.is_running,
        }

    async def consumer_lag(self) -> dict[str, int]:
        """Per bus this router reads: records its group has not handled yet (not delivered, or
        delivered and not acknowledged), from the brokers. Empty before start()."""
        if not self._consumers:
            return {}
        return {bus: (await broker.group_lag(topic, self.config.group)).behind
                for bus, broker, topic in self._read_targets()}

    def _spool_depth(self) -> dict[str, int]:
        """Records waiting in the spool per bus, and "total"."""
        if self._spool is None:
            return {"total": 0}
        return {**self._spool.depths(), "total": self._spool.depth()}

    def history(self, limit: int = 100, event_type: EventTypeLike | None = None) -> list[RouterEvent]:
        """The last `limit` dispatched events (oldest first), optionally of one type."""
        wanted = None if event_type is None else self._type_key(event_type)
        events = [e for e in self._event_history if wanted is None or e.event_type == wanted]
        return events[-limit:] if limit > 0 else []


_router: UnifiedEventRouter | None = None


def _unavailable(event: RouterEvent, failed: Mapping[str, BaseException]) -> BrokerUnavailable:
    """The error of a publish that no bus took and no spool kept."""
    buses = " and ".join(failed) + (" buses are" if len(failed) > 1 else " bus is")
    return BrokerUnavailable(f"publish of {event.event_type} {event.event_id} failed: the {buses} "
                             f"unavailable ({next(iter(failed.values()))})")


def get_router() -> UnifiedEventRouter:
    """The process's router, built from the environment on first use (not started)."""
    global _router
    if _router is None:
        _router = UnifiedEventRouter(RouterConfig.from_env())
    return _router


def reset_router() -> None:
    """Forget the process's router (tests). Stop it first if it runs on a live loop elsewhere."""
    global _router
    router, _router = _router, None
    home = router._bridge.usable_home() if router is not None else None
    if router is not None and home is not None and home.is_running():
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            router.stop_sync()


async def publish(event_type: EventTypeLike, payload: Mapping[str, Any] | None = None, source: str = "",
                  **options: Any) -> RouterEvent:
    return await get_router().publish(event_type, payload, source, **options)


def publish_sync(event_type: EventTypeLike, payload: Mapping[str, Any] | None = None, source: str = "",
                 **options: Any) -> RouterEvent:
    return get_router().publish_sync(event_type, payload, source, **options)


def subscribe(event_type: EventTypeLike | None, handler: Handler) -> None:
    get_router().subscribe(event_type, handler)


def unsubscribe(event_type: EventTypeLike | None, handler: Handler) -> bool:
    return get_router().unsubscribe(event_type, handler)


def has_subscribers(event_type: EventTypeLike) -> bool:
    return get_router().has_subscribers(event_type)

