"""Apache Kafka backend (aiokafka): the contract of brokers.base on topics, partitions and groups.

    publish      idempotent producer, acks=all; concurrent calls share producer batches
    consume      one AIOKafkaConsumer per member, driven by brokers/_kafka_group.py (offset
                 tracking, coalesced commits, rebalances, attempt counts)
    read         a group-less consumer positioned by time or id, stopping at the end seen at start
    groups       lag and rewind from outside the group (brokers/_kafka_admin.py)
    ids          "<partition>:<offset>"

aiokafka exceptions are translated into brokers.errors at the boundary (brokers/_kafka_errors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner

from brokers._kafka_admin import KafkaGroupAdmin
from brokers._kafka_errors import CLIENT_ERRORS, SIZE_ERRORS, probe_auth, stop_client, too_large, translate
from brokers._kafka_group import GroupMember, key_str
from brokers._kafka_read import MergedRange, parse_id, position_reader
from brokers._retry import retry_within_budget
from brokers.attempts import AttemptStore, partition_name
from brokers.base import (
    Broker,
    Capabilities,
    Delivery,
    GroupLag,
    Record,
    StartPosition,
    check_size,
    decode_record,
)
from brokers.errors import AuthenticationFailed, BrokerClosed, BrokerUnavailable, ConfigurationError, TopicNotFound
from brokers.settings import KafkaSettings

__all__ = ["KafkaBroker"]

T = TypeVar("T")

_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# The admin client has no topics of its own, so each metadata refresh fetches the whole cluster's (every
# partition's replicas): ~600 bytes per partition kept per client, every 5 minutes by default. It
# needs only the controller and group coordinators, which it looks up again when they move.
_ADMIN_METADATA_MAX_AGE_MS = 24 * 3600 * 1000


class KafkaBroker(Broker):
    def __init__(self, url: str = "kafka://127.0.0.1:9092", **options: Any) -> None:
        self.url = url
        self.settings = KafkaSettings.from_url(url, **options)
        s = self.settings
        if s.security_protocol not in _PROTOCOLS:
            raise ConfigurationError(f"security_protocol {s.security_protocol!r}: use one of {_PROTOCOLS}")
        if s.security_protocol.startswith("SASL") and s.sasl_mechanism not in _MECHANISMS:
            raise ConfigurationError(f"sasl_mechanism {s.sasl_mechanism!r}: use one of {_MECHANISMS}")
        store = s.attempt_store
        if store is not None and not isinstance(store, AttemptStore):
            raise ConfigurationError("attempt_store must implement brokers.attempts.AttemptStore")
        self.capabilities = Capabilities(persistent=True, partitions=True, attempt_counts=store is not None)
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._members: set[GroupMember] = set()
        self._readers: set[AIOKafkaConsumer] = set()
        self._offsets: AIOKafkaConsumer | None = None  # end offsets for group_lag, kept open between calls
        self._offsets_lock = asyncio.Lock()
        self._ssl_context: ssl.SSLContext | None = None
        self._partitioner = DefaultPartitioner()  # what the producer uses, for batches

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
            max_partition_fetch_bytes=max(s.fetch_partition_bytes, s.max_record_bytes + 64 * 1024),
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
                    await probe_auth(self.settings, self._client_options(), what)
                if isinstance(exc, CLIENT_ERRORS):
                    raise translate(exc, what) from exc
                raise
            return client

        return await retry_within_budget(attempt, self.settings.retry_budget_s, what)

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = await self._start_client(self._new_producer, f"connect to Kafka at {self.url}")
        try:
            self._admin = await self._start_client(
                lambda: AIOKafkaAdminClient(**self._client_options(),
                                            request_timeout_ms=self.settings.request_timeout_ms,
                                            metadata_max_age_ms=_ADMIN_METADATA_MAX_AGE_MS),
                f"connect admin client to Kafka at {self.url}")
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def close(self) -> None:
        for member in list(self._members):
            await member.close()
        for reader in list(self._readers):
            await stop_client(reader)
        offsets, self._offsets = self._offsets, None
        if offsets is not None:
            await stop_client(offsets)
        producer, admin, self._producer, self._admin = self._producer, self._admin, None, None
        if producer is not None:
            await stop_client(producer)
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

    async def ensure_topic(self, name: str, partitions: int = 1, *, compacted: bool = False) -> None:
        what = f"create Kafka topic {name!r}"
        if self._admin is None:
            raise BrokerClosed(f"Kafka broker {self.url} is not started (or closed): use start()")
        admin = self._admin
        # segment.ms: compaction only cleans closed segments; the default (7 days) would keep every heartbeat
        configs = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
                   "segment.ms": "3600000"} if compacted else {}

        async def create() -> None:
            try:
                response = await admin.create_topics(
                    [NewTopic(name, partitions, self.settings.replication_factor, topic_configs=configs)])
            except CLIENT_ERRORS as exc:
                raise translate(exc, what) from exc
            for topic_error in response.topic_errors:
                error_type = kafka_errors.for_code(topic_error[1])
                if error_type not in (kafka_errors.NoError, kafka_errors.TopicAlreadyExistsError):
                    message = topic_error[2] if len(topic_error) > 2 else ""
                    raise translate(error_type(message), what)

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
            except SIZE_ERRORS as exc:
                raise too_large(exc, len(value), topic) from exc
            except CLIENT_ERRORS as exc:
                raise translate(exc, f"publish to Kafka topic {topic!r}") from exc
            return f"{meta.partition}:{meta.offset}"

        return await retry_within_budget(once, self.settings.retry_budget_s, f"publish to {topic!r}")

    async def publish_raw_batch(self, topic: str, values: Sequence[bytes],
                                key: str | None = None) -> list[str]:
        """The records go to one partition (the key's, or one picked at random without a key) in
        producer batches built here, as a competent aiokafka user would: no per-record send() and
        future. Their ids are the batches' base offsets plus their places in them, in order."""
        for value in values:
            check_size(value, self.max_record_bytes, topic)
        if not values:
            return []
        encoded_key = None if key is None else key.encode()

        async def once() -> list[str]:
            producer = self._live_producer()
            try:
                partition = await self._batch_partition(topic, encoded_key)
                sent: list[tuple[asyncio.Future[Any], int]] = []  # (the batch's future, its record count)
                batch, count = producer.create_batch(), 0
                for value in values:
                    if batch.append(key=encoded_key, value=value, timestamp=None) is None:  # full
                        sent.append((await producer.send_batch(batch, topic, partition=partition), count))
                        batch, count = producer.create_batch(), 0
                        batch.append(key=encoded_key, value=value, timestamp=None)  # an empty batch takes any
                    count += 1
                sent.append((await producer.send_batch(batch, topic, partition=partition), count))
                metas = await asyncio.gather(*(future for future, _ in sent))
            except SIZE_ERRORS as exc:
                raise too_large(exc, max(map(len, values)), topic) from exc
            except CLIENT_ERRORS as exc:
                raise translate(exc, f"publish a batch to Kafka topic {topic!r}") from exc
            return [f"{partition}:{meta.offset + i}" for meta, (_, n) in zip(metas, sent, strict=True)
                    for i in range(n)]

        # A retry after a partial failure sends the whole batch again (at least once).
        return await retry_within_budget(once, self.settings.retry_budget_s, f"publish to {topic!r}")

    async def _batch_partition(self, topic: str, key: bytes | None) -> int:
        """The partition producer.send() would pick for `key` (a random available one for None)."""
        cluster = self._live_producer().client.cluster
        partitions = cluster.partitions_for_topic(topic) or await self._partitions(topic)
        every = sorted(partitions)
        available = sorted(cluster.available_partitions_for_topic(topic) or every)
        return self._partitioner(key, every, available)

    # -- consuming ----------------------------------------------------------------------------

    async def consume(self, topic: str, group: str, consumer: str | None = None, *,
                      start: StartPosition = "earliest", batch_size: int = 100,
                      claim_idle_ms: int = 30_000) -> AsyncIterator[Delivery]:
        """One at a time, a nacked record before the records after it. `claim_idle_ms` does not
        apply: Kafka hands a dead member's partitions over by itself when its session times out
        (`session_timeout_ms`) or at once when it leaves the group."""
        async with self._member(topic, group, consumer, start, batch_size) as member:
            async for (delivery,) in member.batches(1):
                yield delivery

    async def consume_batches(self, topic: str, group: str, consumer: str | None = None, *,
                              start: StartPosition = "earliest", batch_size: int = 100,
                              claim_idle_ms: int = 30_000) -> AsyncIterator[list[Delivery]]:
        async with self._member(topic, group, consumer, start, batch_size) as member:
            async for batch in member.batches(batch_size):
                yield batch

    @contextlib.asynccontextmanager
    async def _member(self, topic: str, group: str, consumer: str | None, start: StartPosition,
                      batch_size: int) -> AsyncIterator[GroupMember]:
        """A member of `group` joined on `topic` for the block; it leaves the group at the end."""
        await self._partitions(topic)
        s = self.settings
        member = GroupMember(topic, group, batch_size, s)

        def make() -> AIOKafkaConsumer:
            kafka_consumer = self._new_consumer(
                group_id=group, client_id=consumer or s.client_id, auto_offset_reset=start,
                session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=s.heartbeat_interval_ms)
            kafka_consumer.subscribe([topic], listener=member)
            return kafka_consumer

        member.consumer = await self._start_client(make, f"join group {group!r} on {topic!r}")
        self._members.add(member)
        try:
            yield member
        finally:
            self._members.discard(member)
            await member.close()

    # -- reading ------------------------------------------------------------------------------

    async def read(self, topic: str, *, since: datetime | None = None, until: datetime | None = None,
                   start_id: str | None = None, end_id: str | None = None,
                   limit: int | None = None) -> AsyncIterator[Record]:
        """Ids name one partition, so `start_id`/`end_id` restrict the read to that partition.
        Partitions are merged by record timestamp."""
        first, last = parse_id(start_id), parse_id(end_id)
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
                stops = await position_reader(reader, tps, since, first, last)
            except CLIENT_ERRORS as exc:
                raise translate(exc, what) from exc
            until_ms = None if until is None else int(until.timestamp() * 1000)
            merged = MergedRange(reader, stops, until_ms)
            count = 0
            while (record := await merged.next()) is not None:
                value = record.value or b""
                timestamp = record.timestamp / 1000
                event, error = decode_record(value, topic=topic, partition=record.partition,
                                             offset=record.offset, timestamp=timestamp,
                                             headers=record.headers)
                yield Record(event=event, record_id=f"{record.partition}:{record.offset}",
                             timestamp=timestamp, key=key_str(record.key), error=error,
                             raw=value if event is None else None)
                count += 1
                if limit is not None and count >= limit:
                    return
        finally:
            self._readers.discard(reader)
            await stop_client(reader)

    # -- operating on groups ------------------------------------------------------------------

    async def _group_admin(self, topic: str) -> tuple[KafkaGroupAdmin, list[TopicPartition]]:
        if self._admin is None:
            raise BrokerClosed(f"Kafka broker {self.url} is not started (or closed): use start()")

        async def open_consumer(group_id: str | None) -> AIOKafkaConsumer:
            return await self._start_client(lambda: self._new_consumer(group_id=group_id),
                                             f"open a consumer on {topic!r}")

        async def end_offsets(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            async with self._offsets_lock:  # one reader, opened on first use (lag is asked every few seconds)
                if self._offsets is None:
                    self._offsets = await open_consumer(None)
            return await self._offsets.end_offsets(tps)

        tps = [TopicPartition(topic, p) for p in sorted(await self._partitions(topic))]
        return KafkaGroupAdmin(self._admin, open_consumer, end_offsets, self.settings.retry_budget_s), tps

    async def group_lag(self, topic: str, group: str) -> GroupLag:
        admin, tps = await self._group_admin(topic)
        return await admin.lag(topic, tps, group)

    async def rewind_group(self, topic: str, group: str, *, since: datetime, until: datetime | None = None,
                           dry_run: bool = False, force: bool = False) -> dict[int | None, int]:
        """`force` does not apply: Kafka moves the offsets of an empty group only (GroupActive)."""
        admin, tps = await self._group_admin(topic)
        counts = await admin.rewind(topic, tps, group, since, until, dry_run=dry_run)
        store = self.settings.attempt_store
        if store is not None and not dry_run:  # the range is handed over afresh: attempt 1
            await store.forget(group, [partition_name(tp.topic, tp.partition) for tp in tps])
        return counts
