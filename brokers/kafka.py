"""Apache Kafka backend (aiokafka): the contract of brokers.base on topics, partitions and groups.

    publish      idempotent producer, acks=all; concurrent calls share producer batches
    consume      one AIOKafkaConsumer per member; offsets are committed only up to the lowest
                 delivered-but-unacked offset of each partition, by one committer per member that
                 coalesces many acks into one commit
    read         a group-less consumer positioned by time or id, stopping at the end seen at start
    ids          "<partition>:<offset>"

Kafka keeps no delivery count, so `Delivery.attempt` comes from an optional shared `AttemptStore`
(brokers/attempts.py); without one it counts local nacks only. aiokafka exceptions are translated
into brokers.errors in `_translate`, at the boundary. The module runs past the usual 400 lines
because the group member (`_GroupMember`: offset tracking, committer, rebalance listener) only makes
sense next to the broker that creates it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.helpers import create_ssl_context

from brokers._retry import retry_within_budget
from brokers.base import Broker, Capabilities, Delivery, Record, StartPosition, check_size, decode_record
from brokers.errors import (
    AuthenticationFailed,
    BrokerClosed,
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    RecordTooLarge,
    TopicNotFound,
)
from brokers.settings import KafkaSettings

if TYPE_CHECKING:
    from brokers.attempts import AttemptStore

__all__ = ["KafkaBroker"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_CLIENT_ERRORS = (kafka_errors.KafkaError, OSError)  # OSError covers TimeoutError and refused sockets
_AUTH_ERRORS = (
    kafka_errors.AuthenticationFailedError, kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.SaslAuthenticationFailed, kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.IllegalSaslStateError, kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError, kafka_errors.ClusterAuthorizationFailedError,
    ssl.SSLCertVerificationError,
)
_SIZE_ERRORS = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordTooLargeError,
                kafka_errors.RecordListTooLargeError)
_CONFIG_ERRORS = (
    kafka_errors.InvalidReplicationFactorError, kafka_errors.InvalidPartitionsError,
    kafka_errors.InvalidTopicError, kafka_errors.InvalidConfigurationError,
    kafka_errors.PolicyViolationError, kafka_errors.KafkaConfigurationError,
)
_UNAVAILABLE_ERRORS = (kafka_errors.KafkaConnectionError, kafka_errors.KafkaTimeoutError,
                       kafka_errors.NodeNotReadyError, kafka_errors.RequestTimedOutError,
                       kafka_errors.NoBrokersAvailable, OSError)
# The group moved on without us: our commit is refused and the records go to the new owner.
_REBALANCED_ERRORS = (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError)
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_FETCH_WAIT_MS = 200  # one getmany() waits this long, so a nack from another task is seen soon


def _translate(exc: BaseException, what: str) -> BrokerError:
    """The brokers.errors equivalent of an aiokafka (or socket) exception."""
    if isinstance(exc, BrokerError):
        return exc
    detail = f"{what}: {type(exc).__name__}: {exc}"
    if isinstance(exc, _AUTH_ERRORS):
        return AuthenticationFailed(detail)
    if isinstance(exc, kafka_errors.UnknownTopicOrPartitionError):
        return TopicNotFound(detail)
    if isinstance(exc, _CONFIG_ERRORS):
        return ConfigurationError(detail)
    if isinstance(exc, (kafka_errors.ProducerClosed, kafka_errors.ConsumerStoppedError)):
        return BrokerClosed(detail)
    if isinstance(exc, _UNAVAILABLE_ERRORS) or getattr(exc, "retriable", False):
        return BrokerUnavailable(detail)
    return BrokerError(detail)


def _too_large(exc: BaseException, size: int, topic: str) -> RecordTooLarge:
    """Kafka refused the record although it passed our own limit: say whose limit it was."""
    error = RecordTooLarge(size, size, topic)
    error.args = (f"record of {size} bytes for {topic!r} refused by Kafka ({type(exc).__name__}): "
                  "lower max_record_bytes to the broker's message.max.bytes",)
    return error


def _parse_id(record_id: str | None) -> tuple[int, int] | None:
    """'<partition>:<offset>' (or a bare offset, meaning partition 0)."""
    if record_id is None:
        return None
    partition, _, offset = record_id.rpartition(":")
    try:
        return int(partition or 0), int(offset)
    except ValueError:
        raise ConfigurationError(f"not a Kafka record id: {record_id!r} (want '<partition>:<offset>')") \
            from None


def _key_str(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", "replace")


@dataclass(slots=True, eq=False)
class _InFlight:
    record: ConsumerRecord
    attempt: int = 1
    acked: bool = False


@dataclass(eq=False)
class _Partition:
    """One assigned partition of a member: what was delivered, what was acked, what is committed.

    `pending` holds fetched records in offset order until every earlier one is acked, so the commit
    point (the offset the group resumes from) is the first pending offset, or the next one to fetch.
    A new object is made on each assignment; `revoked` marks the old one so late acks do nothing.
    """

    tp: TopicPartition
    pending: dict[int, _InFlight] = field(default_factory=dict)
    next_offset: int = -1
    committed: int = -1
    revoked: bool = False

    def commit_point(self) -> int:
        return next(iter(self.pending), self.next_offset)

    def ack(self, offset: int) -> bool:
        """Mark `offset` acked; True when the commit point moved beyond what is committed."""
        flight = self.pending.get(offset)
        if flight is None:
            return False
        flight.acked = True
        while self.pending:
            first = next(iter(self.pending))
            if not self.pending[first].acked:
                break
            del self.pending[first]
        return self.commit_point() > self.committed


class _GroupMember(ConsumerRebalanceListener):
    """One member of a consumer group: fetches, tracks offsets, commits, follows rebalances."""

    def __init__(self, topic: str, group: str, batch_size: int, settings: KafkaSettings) -> None:
        self.topic = topic
        self.group = group
        self.consumer: AIOKafkaConsumer | None = None
        self._batch_size = batch_size
        self._store: AttemptStore | None = settings.attempt_store
        self._commit_timeout_s = max(settings.retry_budget_s, settings.request_timeout_ms / 1000)
        self._states: dict[TopicPartition, _Partition] = {}
        self._buffer: deque[tuple[_Partition, _InFlight]] = deque()
        self._redeliver: deque[tuple[_Partition, int]] = deque()
        self._acked_keys: list[str] = []
        self._round: asyncio.Future[None] | None = None  # resolved by the next commit
        self._wake = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._committer: asyncio.Task[None] | None = None
        self._closed = False

    # -- delivering ---------------------------------------------------------------------------

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Nacked records first, then the fetched batch, then the next fetch."""
        self._committer = asyncio.get_running_loop().create_task(self._commit_loop())
        while not self._closed:
            if self._redeliver:
                state, offset = self._redeliver.popleft()
                flight = state.pending.get(offset)
                if state.revoked or flight is None or flight.acked:
                    continue
                flight.attempt = (await self._count([flight.record]))[0] if self._store else \
                    flight.attempt + 1
                yield self._delivery(state, flight)
            elif self._buffer:
                state, flight = self._buffer.popleft()
                if not state.revoked:
                    yield self._delivery(state, flight)
            elif not await self._fetch():
                return

    async def _fetch(self) -> bool:
        """One getmany() into the buffer; False once the consumer was stopped."""
        assert self.consumer is not None
        try:
            batch = await self.consumer.getmany(timeout_ms=_FETCH_WAIT_MS, max_records=self._batch_size)
        except kafka_errors.ConsumerStoppedError:
            return False
        except _CLIENT_ERRORS as exc:
            raise _translate(exc, f"consume {self.topic!r} in group {self.group!r}") from exc
        fetched: list[tuple[_Partition, _InFlight]] = []
        for tp, records in batch.items():
            state = self._states.get(tp)
            if state is None:  # normally made by on_partitions_assigned already
                state = self._states[tp] = _Partition(tp)
            for record in records:
                flight = _InFlight(record)
                state.pending[record.offset] = flight
                state.next_offset = record.offset + 1
                fetched.append((state, flight))
        if fetched and self._store is not None:
            attempts = await self._count([flight.record for _, flight in fetched])
            for (_, flight), attempt in zip(fetched, attempts, strict=True):
                flight.attempt = attempt
        self._buffer.extend(fetched)
        return True

    def _delivery(self, state: _Partition, flight: _InFlight) -> Delivery:
        record = flight.record
        value = record.value or b""
        timestamp = record.timestamp / 1000
        event, error = decode_record(value, topic=record.topic, partition=record.partition,
                                     offset=record.offset, timestamp=timestamp, headers=record.headers)
        return Delivery(event=event, record_id=f"{record.partition}:{record.offset}", topic=record.topic,
                        settle=partial(self._settle, state), key=_key_str(record.key),
                        attempt=flight.attempt, error=error, raw=value if event is None else None,
                        partition=record.partition, timestamp=timestamp, headers=record.headers)

    async def _count(self, records: Sequence[ConsumerRecord]) -> list[int]:
        """Shared attempt counters, one round trip; local counts if the store cannot be reached."""
        assert self._store is not None
        try:
            return await self._store.incr_many(self.group, [self._attempt_key(r) for r in records])
        except BrokerError as exc:
            log.warning("attempt store unavailable, counting attempts locally: %s", exc)
            return [1] * len(records)

    @staticmethod
    def _attempt_key(record: ConsumerRecord) -> str:
        return f"{record.topic}:{record.partition}:{record.offset}"

    # -- acknowledging and committing ---------------------------------------------------------

    async def _settle(self, state: _Partition, delivery: Delivery, ok: bool) -> None:
        if state.revoked:  # the partition went to another member, which delivers the record again
            return
        offset = int(delivery.record_id.rpartition(":")[2])
        if not ok:
            self._redeliver.append((state, offset))
            return
        if self._store is not None and offset in state.pending:
            self._acked_keys.append(self._attempt_key(state.pending[offset].record))
        # An ack behind an unacked record cannot be committed yet: it returns at once and is
        # covered by the commit that follows the earlier record's ack.
        if state.ack(offset):
            await asyncio.shield(self._next_round())

    def _next_round(self) -> asyncio.Future[None]:
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
            # Retrieve the outcome even when every waiter was cancelled (no "never retrieved").
            self._round.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._wake.set()
        return self._round

    async def _commit_loop(self) -> None:
        """Commit whenever acks arrived; acks made during one commit all ride on the next one."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.commit()

    async def commit(self) -> None:
        """Commit every partition's commit point that moved, in one request."""
        async with self._commit_lock:
            waiters, self._round = self._round, None
            keys, self._acked_keys = self._acked_keys, []
            moved = [(state, state.commit_point()) for state in self._states.values()]
            moved = [(state, point) for state, point in moved if point > state.committed]
            error: BrokerError | None = None
            if moved and self.consumer is not None:
                try:
                    await asyncio.wait_for(self.consumer.commit({s.tp: point for s, point in moved}),
                                           self._commit_timeout_s)
                    for state, point in moved:
                        state.committed = max(state.committed, point)
                except _REBALANCED_ERRORS as exc:
                    log.info("group %r rebalanced before a commit (%s); unacked records of the moved "
                             "partitions will be delivered again", self.group, exc)
                except Exception as exc:  # whatever it was, the ackers waiting must hear of it
                    error = _translate(exc, f"commit offsets of group {self.group!r}")
            if waiters is not None and not waiters.done():
                if error is None:
                    waiters.set_result(None)
                else:
                    waiters.set_exception(error)
        if keys and error is None and self._store is not None:
            try:
                await self._store.clear_many(self.group, keys)
            except BrokerError as exc:  # best effort: the counters expire anyway
                log.warning("could not clear attempt counters: %s", exc)

    # -- rebalancing (called by aiokafka's coordinator task) ----------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.commit()
        for tp in revoked:
            state = self._states.pop(tp, None)
            if state is not None:
                state.revoked = True

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:  # positions restart from the committed offsets: start afresh
            self._states[tp] = _Partition(tp)

    async def close(self) -> None:
        """Commit what is acked, then leave the group. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.commit()
        finally:
            for state in self._states.values():
                state.revoked = True
            if self._committer is not None:
                self._committer.cancel()
            if self.consumer is not None:
                await self.consumer.stop()


class _MergedRange:
    """Records of several partitions up to their stops, merged by timestamp (then partition)."""

    def __init__(self, reader: AIOKafkaConsumer, stops: dict[TopicPartition, int], until_ms: int | None):
        self._reader = reader
        self._stops = stops
        self._until_ms = until_ms
        self._buffers = {tp: deque[ConsumerRecord]() for tp in stops}
        self._open = set(stops)  # partitions that may have more records in range

    async def next(self) -> ConsumerRecord | None:
        # Every open partition needs a buffered head before the oldest head can be picked.
        while waiting := [tp for tp in self._open if not self._buffers[tp]]:
            await self._fetch(waiting)
        ready = [tp for tp, buffer in self._buffers.items() if buffer]
        if not ready:
            return None
        tp = min(ready, key=lambda t: (self._buffers[t][0].timestamp, t.partition))
        return self._buffers[tp].popleft()

    async def _fetch(self, waiting: list[TopicPartition]) -> None:
        for tp in waiting:
            if await self._reader.position(tp) >= self._stops[tp]:
                self._open.discard(tp)
        wanted = [tp for tp in waiting if tp in self._open]
        if not wanted:
            return
        batch = await self._reader.getmany(*wanted, timeout_ms=500, max_records=1000)
        for tp, records in batch.items():
            for record in records:
                if record.offset >= self._stops[tp] or \
                        (self._until_ms is not None and record.timestamp > self._until_ms):
                    self._open.discard(tp)
                    break
                self._buffers[tp].append(record)


class KafkaBroker(Broker):
    capabilities = Capabilities(persistent=True, partitions=True, attempt_counts=False)

    def __init__(self, url: str = "kafka://127.0.0.1:9092", **options: Any) -> None:
        self.url = url
        self.settings = KafkaSettings.from_url(url, **options)
        s = self.settings
        if s.security_protocol not in _PROTOCOLS:
            raise ConfigurationError(f"security_protocol {s.security_protocol!r}: use one of {_PROTOCOLS}")
        if s.security_protocol.startswith("SASL") and s.sasl_mechanism not in _MECHANISMS:
            raise ConfigurationError(f"sasl_mechanism {s.sasl_mechanism!r}: use one of {_MECHANISMS}")
        store = s.attempt_store
        if store is not None and not (hasattr(store, "incr_many") and hasattr(store, "clear_many")):
            raise ConfigurationError("attempt_store must implement brokers.attempts.AttemptStore")
        if store is not None:
            self.capabilities = Capabilities(persistent=True, partitions=True, attempt_counts=True)
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._members: set[_GroupMember] = set()
        self._readers: set[AIOKafkaConsumer] = set()
        self._ssl_context: ssl.SSLContext | None = None

    @property
    def max_record_bytes(self) -> int:
        return self.settings.max_record_bytes

    # -- connecting ---------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        s = self.settings
        options: dict[str, Any] = {"bootstrap_servers": s.bootstrap_servers, "client_id": s.client_id,
                                   "security_protocol": s.security_protocol}
        if s.security_protocol in ("SSL", "SASL_SSL"):
            if self._ssl_context is None:
                self._ssl_context = create_ssl_context(cafile=s.ssl_cafile, certfile=s.ssl_certfile,
                                                       keyfile=s.ssl_keyfile)
            options["ssl_context"] = self._ssl_context
        if s.security_protocol.startswith("SASL"):
            options.update(sasl_mechanism=s.sasl_mechanism, sasl_plain_username=s.sasl_username,
                           sasl_plain_password=s.sasl_password)
        return options

    def _new_producer(self) -> AIOKafkaProducer:
        s = self.settings
        return AIOKafkaProducer(
            **self._client_options(), acks="all", enable_idempotence=True, linger_ms=s.linger_ms,
            max_batch_size=s.max_batch_size, request_timeout_ms=s.request_timeout_ms,
            # Room for key and headers above the value limit; the broker's own limit still applies.
            max_request_size=max(s.max_record_bytes + 64 * 1024, 1024 * 1024))

    def _new_consumer(self, **options: Any) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            **{**self._client_options(), **options}, enable_auto_commit=False,
            request_timeout_ms=max(s.request_timeout_ms, s.session_timeout_ms + 5000))

    async def _start_client(self, make: Callable[[], T], what: str) -> T:
        """Start a fresh client per attempt, within the retry budget; bad credentials fail at once."""

        async def attempt() -> T:
            client: Any = make()
            try:
                await client.start()
            except BaseException as exc:
                await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
                if isinstance(exc, kafka_errors.KafkaConnectionError):
                    await self._diagnose(what)
                if isinstance(exc, _CLIENT_ERRORS):
                    raise _translate(exc, what) from exc
                raise
            return client

        return await retry_within_budget(attempt, self.settings.retry_budget_s, what)

    async def _diagnose(self, what: str) -> None:
        """aiokafka's bootstrap hides why it failed; one plain connection shows auth failures."""
        s = self.settings
        host, _, port = s.bootstrap_servers.split(",")[0].strip().rpartition(":")
        options = self._client_options()
        del options["bootstrap_servers"]
        try:
            conn = await asyncio.wait_for(create_conn(host, int(port), **options),
                                          s.request_timeout_ms / 1000)
        except _AUTH_ERRORS as exc:
            who = f"{s.sasl_mechanism} user {s.sasl_username!r}" if s.sasl_mechanism else "TLS"
            raise AuthenticationFailed(f"{what}: Kafka at {s.bootstrap_servers} refused {who} "
                                       f"({s.security_protocol}): {exc}") from exc
        except (*_CLIENT_ERRORS, ValueError):
            return
        conn.close()

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = await self._start_client(self._new_producer, f"connect to Kafka at {self.url}")
        try:
            self._admin = await self._start_client(
                lambda: AIOKafkaAdminClient(**self._client_options(),
                                            request_timeout_ms=self.settings.request_timeout_ms),
                f"connect admin client to Kafka at {self.url}")
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def close(self) -> None:
        for member in list(self._members):
            await member.close()
        for reader in list(self._readers):
            await reader.stop()
        producer, admin, self._producer, self._admin = self._producer, self._admin, None, None
        if producer is not None:
            await producer.stop()
        if admin is not None:
            await admin.close()

    def _live_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BrokerClosed(f"Kafka broker {self.url} is not started (or closed): use start()")
        return self._producer

    # -- topics -------------------------------------------------------------------------------

    async def _partitions(self, topic: str) -> set[int]:
        """The topic's partitions from the producer's metadata, refreshed once if unknown."""
        client = self._live_producer().client
        partitions = client.cluster.partitions_for_topic(topic)
        if partitions:
            return partitions
        client.add_topic(topic)
        if not await client.force_metadata_update():
            raise BrokerUnavailable(f"no metadata for {topic!r} from {self.settings.bootstrap_servers}")
        if topic in client.cluster.unauthorized_topics:
            raise AuthenticationFailed(f"not authorized for Kafka topic {topic!r}")
        partitions = client.cluster.partitions_for_topic(topic)
        if not partitions:
            raise TopicNotFound(f"Kafka topic {topic!r} does not exist (ensure_topic creates it)")
        return partitions

    async def ensure_topic(self, name: str, partitions: int = 1) -> None:
        what = f"create Kafka topic {name!r}"
        if self._admin is None:
            raise BrokerClosed(f"Kafka broker {self.url} is not started (or closed): use start()")
        admin = self._admin

        async def create() -> None:
            try:
                response = await admin.create_topics(
                    [NewTopic(name, partitions, self.settings.replication_factor)])
            except _CLIENT_ERRORS as exc:
                raise _translate(exc, what) from exc
            for topic_error in response.topic_errors:
                error_type = kafka_errors.for_code(topic_error[1])
                if error_type not in (kafka_errors.NoError, kafka_errors.TopicAlreadyExistsError):
                    message = topic_error[2] if len(topic_error) > 2 else ""
                    raise _translate(error_type(message), what)

        await retry_within_budget(create, self.settings.retry_budget_s, what)
        await self._await_visible(name)

    async def _await_visible(self, topic: str) -> None:
        """Wait until the producer's metadata shows the topic with a leader for every partition."""
        client = self._live_producer().client
        client.add_topic(topic)
        s = self.settings
        deadline = time.monotonic() + max(s.retry_budget_s, s.request_timeout_ms / 1000)
        while True:
            await client.force_metadata_update()
            cluster = client.cluster
            partitions = cluster.partitions_for_topic(topic)
            if partitions and all(cluster.leader_for_partition(TopicPartition(topic, p)) not in (None, -1)
                                  for p in partitions):
                return
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"Kafka topic {topic!r} was created but has no leader yet")
            await asyncio.sleep(0.05)

    # -- publishing ---------------------------------------------------------------------------

    async def publish_raw(self, topic: str, value: bytes, key: str | None = None,
                          headers: Sequence[tuple[str, bytes]] | None = None) -> str:
        check_size(value, self.max_record_bytes, topic)
        encoded_key = None if key is None else key.encode()
        header_list = list(headers) if headers else None

        async def once() -> str:
            producer = self._live_producer()
            try:
                if producer.client.cluster.partitions_for_topic(topic) is None:
                    await self._partitions(topic)
                sent = await producer.send(topic, value, key=encoded_key, headers=header_list)
                meta = await sent
            except _SIZE_ERRORS as exc:
                raise _too_large(exc, len(value), topic) from exc
            except _CLIENT_ERRORS as exc:
                raise _translate(exc, f"publish to Kafka topic {topic!r}") from exc
            return f"{meta.partition}:{meta.offset}"

        return await retry_within_budget(once, self.settings.retry_budget_s, f"publish to {topic!r}")

    async def publish_raw_batch(self, topic: str, values: Sequence[bytes],
                                key: str | None = None) -> list[str]:
        for value in values:
            check_size(value, self.max_record_bytes, topic)
        encoded_key = None if key is None else key.encode()

        async def once() -> list[str]:
            producer = self._live_producer()
            try:
                if producer.client.cluster.partitions_for_topic(topic) is None:
                    await self._partitions(topic)
                sent = [await producer.send(topic, value, key=encoded_key) for value in values]
                results = await asyncio.gather(*sent, return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            except _SIZE_ERRORS as exc:
                raise _too_large(exc, max(map(len, values)), topic) from exc
            except _CLIENT_ERRORS as exc:
                raise _translate(exc, f"publish a batch to Kafka topic {topic!r}") from exc
            return [f"{meta.partition}:{meta.offset}" for meta in results]

        # A retry after a partial failure sends the whole batch again (at least once).
        return await retry_within_budget(once, self.settings.retry_budget_s, f"publish to {topic!r}")

    # -- consuming ----------------------------------------------------------------------------

    async def consume(self, topic: str, group: str, consumer: str | None = None, *,
                      start: StartPosition = "earliest", batch_size: int = 100,
                      claim_idle_ms: int = 30_000) -> AsyncIterator[Delivery]:
        """`claim_idle_ms` does not apply: Kafka hands a dead member's partitions over by itself
        when its session times out (`session_timeout_ms`) or at once when it leaves the group."""
        await self._partitions(topic)
        s = self.settings
        member = _GroupMember(topic, group, batch_size, s)

        def make() -> AIOKafkaConsumer:
            kafka_consumer = self._new_consumer(
                group_id=group, client_id=consumer or s.client_id, auto_offset_reset=start,
                session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=s.heartbeat_interval_ms)
            kafka_consumer.subscribe([topic], listener=member)
            return kafka_consumer

        member.consumer = await self._start_client(make, f"join group {group!r} on {topic!r}")
        self._members.add(member)
        try:
            async for delivery in member.deliveries():
                yield delivery
        finally:
            self._members.discard(member)
            await member.close()

    # -- reading ------------------------------------------------------------------------------

    async def read(self, topic: str, *, since: datetime | None = None, until: datetime | None = None,
                   start_id: str | None = None, end_id: str | None = None,
                   limit: int | None = None) -> AsyncIterator[Record]:
        """Ids name one partition, so `start_id`/`end_id` restrict the read to that partition.
        Partitions are merged by record timestamp."""
        first, last = _parse_id(start_id), _parse_id(end_id)
        if first and last and first[0] != last[0]:
            raise ConfigurationError(f"start_id {start_id!r} and end_id {end_id!r} name different partitions")
        only = (first or last or (None, 0))[0]
        tps = [TopicPartition(topic, p) for p in sorted(await self._partitions(topic))
               if only is None or p == only]
        if (limit is not None and limit <= 0) or not tps:
            return
        what = f"read Kafka topic {topic!r}"
        reader = await self._start_client(lambda: self._new_consumer(group_id=None), what)
        self._readers.add(reader)
        try:
            try:
                stops = await self._position_reader(reader, tps, since, first, last)
            except _CLIENT_ERRORS as exc:
                raise _translate(exc, what) from exc
            until_ms = None if until is None else int(until.timestamp() * 1000)
            merged = _MergedRange(reader, stops, until_ms)
            count = 0
            while (record := await merged.next()) is not None:
                value = record.value or b""
                timestamp = record.timestamp / 1000
                event, error = decode_record(value, topic=topic, partition=record.partition,
                                             offset=record.offset, timestamp=timestamp,
                                             headers=record.headers)
                yield Record(event=event, record_id=f"{record.partition}:{record.offset}",
                             timestamp=timestamp, key=_key_str(record.key), error=error,
                             raw=value if event is None else None)
                count += 1
                if limit is not None and count >= limit:
                    return
        finally:
            self._readers.discard(reader)
            await reader.stop()

    @staticmethod
    async def _position_reader(reader: AIOKafkaConsumer, tps: list[TopicPartition], since: datetime | None,
                               first: tuple[int, int] | None,
                               last: tuple[int, int] | None) -> dict[TopicPartition, int]:
        """Assign and seek the partitions with records in range; returns where each one stops."""
        # Paused until positioned: a fetch from the default position would make the first
        # getmany() wait out fetch_max_wait_ms for nothing.
        reader.assign(tps)
        reader.pause(*tps)
        ends = await reader.end_offsets(tps)
        starts = await reader.beginning_offsets(tps)
        found = await reader.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps}) \
            if since is not None else {}
        begins, stops = {}, {}
        for tp in tps:
            begin, stop = starts[tp], ends[tp]
            if first is not None:
                begin = max(begin, first[1])
            if since is not None:
                at = found.get(tp)
                begin = max(begin, at.offset if at is not None else stop)
            if last is not None:
                stop = min(stop, last[1] + 1)
            if begin < stop:
                begins[tp], stops[tp] = begin, stop
        for tp, begin in begins.items():
            reader.seek(tp, begin)
        reader.resume(*begins)
        return stops
