"""The Redis Streams broker: a topic is a stream, a group is a consumer group.

Where the JSON lives: a stream entry whose field `event` holds the envelope (optional fields: `key`,
and CloudEvents binary-mode attributes as `ce_*` fields), so any client can publish:

    redis-cli XADD ringrift:data '*' event '{"event_type":"TRAINING_COMPLETED","payload":{}}'

Publishes from many tasks are coalesced: one script call per stream and round trip adds them all
(brokers/_redis_xadd.py). Acks do not wait for Redis: `ack()` queues the id and returns, one
background task sends whatever is queued as one XACK (retried within the budget; a lost ack is
logged and its entry simply comes again, as after a crash before the ack), and `close()` sends what
is left. When a read comes back full, the next one is sent at once, so it travels while the batch is
handled. Streams are trimmed by approximate MAXLEN on every XADD (`stream_maxlen`).
A member's unacknowledged entries are handed to another member by XAUTOCLAIM once idle for
`claim_idle_ms` (a live member keeps those it is still handling: brokers/_redis_leases.py); a
restarted member with the same name gets its own pending entries first.
`Delivery.attempt` is the entry's delivery count from the pending list, so it survives process death.
A group's lag and its rewind for replay live in brokers/_redis_admin.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rexc

from brokers._coalesce import Coalescer
from brokers._redis_admin import RedisGroupAdmin
from brokers._redis_connection import connection_class
from brokers._redis_entries import EVENT, KEY, entry_delivery, has_event, id_time, keep_raw_replies
from brokers._redis_errors import translate_redis_error
from brokers._redis_leases import HeldEntries
from brokers._redis_xadd import Entry, StreamAppender
from brokers._retry import retry_within_budget
from brokers.base import (
    Broker,
    Capabilities,
    Delivery,
    GroupLag,
    Record,
    StartPosition,
    check_size,
)
from brokers.errors import AuthenticationFailed, BrokerClosed, BrokerError, BrokerUnavailable, ConfigurationError
from brokers.settings import RedisSettings

__all__ = ["RedisStreamsBroker", "translate_redis_error"]

_ACK_DRAIN_S = 5.0  # close() waits this long at most for acks still on their way
log = logging.getLogger(__name__)
_json = msgspec.json.encode
# XACK of a batch of ids given as ONE JSON argument: redis-py packs each argument in Python, which for
# a batch of acks cost three times what the script does. At most 1,000 ids (the coalescer's batch).
_XACK = "return redis.call('XACK', KEYS[1], ARGV[1], unpack(cjson.decode(ARGV[2])))"


def _ms_to_id(seconds: float, upper: bool) -> str:
    ms = int(seconds * 1000)
    return f"{ms}-18446744073709551615" if upper else f"{ms}-0"


class RedisStreamsBroker(Broker):
    capabilities = Capabilities(persistent=True, partitions=False, attempt_counts=True)

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.settings = RedisSettings.from_url(url, **options)
        self._client: aioredis.Redis | None = None
        self._appender: StreamAppender | None = None
        self._publisher: Coalescer[Entry, str] = Coalescer(
            lambda entries: self._stream_appender.append(entries),
            lambda: BrokerUnavailable("publish interrupted: its flush was cancelled"))
        self._ackers: dict[tuple[str, str], Coalescer[str, None]] = {}

    @property
    def max_record_bytes(self) -> int:
        return self.settings.max_record_bytes

    @property
    def _stream_appender(self) -> StreamAppender:
        if self._appender is None:
            self._appender = StreamAppender(self.client, self.settings.stream_maxlen)
        return self._appender

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise BrokerClosed("Redis broker is not started (use `async with` or `await broker.start()`)")
        return self._client

    async def start(self) -> None:
        if self._client is not None:
            return
        s = self.settings
        tls = s.url.lower().startswith("rediss://")
        extra: dict[str, Any] = {}
        if tls and s.ssl_ca_certs:  # a plain redis:// connection takes no TLS options
            try:  # a missing or unreadable bundle is a setting to fix, not an outage to wait out
                ssl.create_default_context(cafile=s.ssl_ca_certs)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigurationError(f"Redis CA bundle {s.ssl_ca_certs!r} (ssl_ca_certs / "
                                         f"RINGRIFT_REDIS_SSL_CA_CERTS) cannot be loaded: {exc}") from exc
            extra["ssl_ca_certs"] = s.ssl_ca_certs
        client = aioredis.Redis.from_url(
            s.url, username=s.username, password=s.password, socket_connect_timeout=s.connect_timeout_s,
            socket_timeout=s.socket_timeout_s, decode_responses=False, protocol=2,
            client_name=f"ringrift-{socket.gethostname()}-{os.getpid()}", connection_class=connection_class(s.url),
            **extra)
        keep_raw_replies(client)

        async def ping() -> None:
            try:
                await client.ping()
            except (rexc.RedisError, OSError) as exc:
                # redis-py wraps a refused certificate in a ConnectionError, which would be retried for
                # the whole budget: an untrusted server certificate is an authentication failure (as in
                # the Kafka backend), raised at once.
                cause: BaseException | None = exc
                while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
                    cause = cause.__cause__ or cause.__context__
                if cause is not None:
                    hint = "" if s.ssl_ca_certs else " (no CA bundle given: set ssl_ca_certs or " \
                                                     "RINGRIFT_REDIS_SSL_CA_CERTS)"
                    raise AuthenticationFailed(f"connect: Redis TLS certificate not trusted{hint}: "
                                               f"{cause}") from exc
                raise translate_redis_error(exc, "connect") from exc

        try:
            await retry_within_budget(ping, s.retry_budget_s, "connect")
        except BrokerError:
            await client.aclose()
            raise
        self._client = client

    async def close(self) -> None:
        await asyncio.gather(*(acker.drained(_ACK_DRAIN_S) for acker in list(self._ackers.values())))
        client, self._client, self._appender = self._client, None, None
        if client is not None:
            await client.aclose()

    async def _call(self, op: Any, what: str, *args: Any, **kwargs: Any) -> Any:
        """One Redis command, translated errors, retried within the budget."""
        async def once() -> Any:
            try:
                return await op(*args, **kwargs)
            except rexc.RedisError as exc:
                raise translate_redis_error(exc, what) from exc
            except OSError as exc:
                raise translate_redis_error(exc, what) from exc
        return await _detached(retry_within_budget(once, self.settings.retry_budget_s, what))

    async def ensure_topic(self, name: str, partitions: int = 1, *, compacted: bool = False) -> None:
        if not await self._call(self.client.exists, f"ensure {name}", name):
            # An empty stream exists only with an entry ever added; add and delete a marker.
            marker = await self._call(self.client.xadd, f"ensure {name}", name, {b"init": b"1"})
            await self._call(self.client.xdel, f"ensure {name}", name, marker)

    # -- publish -----------------------------------------------------------------------------------

    async def publish_raw(self, topic: str, value: bytes, key: str | None = None,
                          headers: Sequence[tuple[str, bytes]] | None = None) -> str:
        check_size(value, self.max_record_bytes, topic)
        fields = {EVENT: value}
        if key is not None:
            fields[KEY] = key.encode()
        for name, raw in headers or ():
            fields[name.encode()] = raw
        item = (topic, fields)
        return await retry_within_budget(lambda: self._publisher.submit(item), self.settings.retry_budget_s,
                                         f"publish to {topic}")

    async def publish_raw_batch(self, topic: str, values: Sequence[bytes],
                                key: str | None = None) -> list[str]:
        for value in values:
            check_size(value, self.max_record_bytes, topic)
        extra = {KEY: key.encode()} if key is not None else {}
        entries = [(topic, {EVENT: value, **extra}) for value in values]
        ids: list[str | None] = [None] * len(entries)

        async def send_unsent() -> None:  # entries a failed call carried go again, the others not
            todo = [index for index, rid in enumerate(ids) if rid is None]
            failed: BaseException | None = None
            for index, result in zip(todo, await self._stream_appender.append([entries[i] for i in todo]), strict=True):
                if isinstance(result, BaseException):
                    failed = failed or result
                else:
                    ids[index] = result
            if failed is not None:
                raise failed

        await retry_within_budget(send_unsent, self.settings.retry_budget_s, f"publish batch to {topic}")
        return ids  # type: ignore[return-value]

    # -- consume -----------------------------------------------------------------------------------

    async def _ensure_group(self, topic: str, group: str, start: StartPosition) -> None:
        try:
            await self._call(self.client.xgroup_create, f"create group {group}", topic, group,
                             id="0" if start == "earliest" else "$", mkstream=True)
        except BrokerError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _acker(self, topic: str, group: str) -> Coalescer[str, None]:
        acker = self._ackers.get((topic, group))
        if acker is None:
            budget, what = self.settings.retry_budget_s, f"ack on {topic}"
            script = self.client.register_script(_XACK)

            async def xack(ids: list[str]) -> None:
                try:
                    await script(keys=[topic], args=[group, _json(ids)])
                except (rexc.RedisError, OSError) as exc:
                    raise translate_redis_error(exc, what) from exc

            async def flush(ids: list[str]) -> list[None]:
                await retry_within_budget(lambda: xack(ids), budget, what)
                return [None] * len(ids)

            def lost(ids: list[str], exc: BaseException) -> None:
                log.warning("%d ack(s) on %s for group %s failed, those entries come again: %s",
                            len(ids), topic, group, exc)

            acker = self._ackers[(topic, group)] = Coalescer(
                flush, lambda: BrokerUnavailable("ack interrupted: its flush was cancelled"), on_error=lost)
        return acker

    async def consume_batches(self, topic: str, group: str, consumer: str | None = None, *,
                              start: StartPosition = "earliest", batch_size: int = 100,
                              claim_idle_ms: int = 30_000) -> AsyncIterator[list[Delivery]]:
        me = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        await self._ensure_group(topic, group, start)
        acker = self._acker(topic, group)
        nacked: deque[Delivery] = deque()

        held = HeldEntries(self.client, topic, group, me, claim_idle_ms, self._call)

        async def read(after: str) -> list[Any]:
            # held from the moment Redis hands them over: their idle time runs from there, also
            # while they wait in a read ahead or behind earlier deliveries
            entries = await self._read(topic, group, me, after, batch_size)
            held.add_all(entry_id.decode() for entry_id, fields in entries if fields is not None)
            return entries

        async def settle(delivery: Delivery, ok: bool) -> None:
            held.discard(delivery.record_id)
            if ok:  # sent in the background, coalesced with the acks of other deliveries (see the docstring)
                acker.post(delivery.record_id)
            else:
                nacked.append(delivery)

        history: str | None = "0"  # first this member's own pending entries (a restart with the same name)
        next_claim = 0.0
        ahead: asyncio.Future[Any] | None = None  # the next read of new entries, already on its way
        keeper = asyncio.create_task(held.keep(), name=f"keep-{topic}")
        try:
            while True:
                if nacked:
                    redelivered = await self._reclaim(topic, group, me, nacked, settle)
                    held.add_all(d.record_id for d in redelivered)
                    if redelivered:
                        yield redelivered
                    continue
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + max(claim_idle_ms / 2000, 0.05)
                    claimed = await self._autoclaim(topic, group, me, claim_idle_ms, batch_size)
                    if claimed:
                        taken = await self._deliveries(topic, group, me, claimed, settle, counted=True)
                        held.add_all(d.record_id for d in taken)
                        if taken:
                            yield taken
                        continue
                if history is not None:
                    entries = await read(history)
                    history = entries[-1][0].decode() if len(entries) == batch_size else None
                    counted = True
                else:
                    # An abandoned read (the consumer was stopped) ends by itself after block_ms; whatever
                    # it fetched stays pending for this member and is delivered again or claimed later.
                    entries = await (ahead or read(">"))
                    # A full batch: more is probably waiting; read it while this one is handled.
                    ahead = asyncio.ensure_future(read(">")) if len(entries) == batch_size else None
                    counted = False
                batch = await self._deliveries(topic, group, me, entries, settle, counted=counted)
                if batch:
                    yield batch
        finally:
            keeper.cancel()
            if ahead is not None:  # left to finish by itself (see above)
                ahead.add_done_callback(_retrieve)

    async def _read(self, topic: str, group: str, me: str, after: str, count: int) -> list[Any]:
        """Entries of `topic` for this member: its own pending ones after `after`, or new ones (">")."""
        reply = await self._call(self.client.xreadgroup, f"read {topic}", group, me, {topic: after},
                                 count=count, block=self.settings.block_ms if after == ">" else None)
        return reply[0][1] if reply else []

    async def _autoclaim(self, topic: str, group: str, me: str, idle_ms: int, count: int) -> list[Any]:
        reply = await self._call(self.client.xautoclaim, f"claim on {topic}", topic, group, me,
                                 min_idle_time=idle_ms, start_id="0-0", count=count)
        claimed, deleted = reply[1], reply[2] if len(reply) > 2 else []
        if deleted:  # trimmed away while pending: nothing left to deliver
            await self._call(self.client.xack, f"ack on {topic}", topic, group, *deleted)
        return claimed

    async def _reclaim(self, topic: str, group: str, me: str, nacked: deque[Delivery],
                       settle: Any) -> list[Delivery]:
        """Deliver nacked entries again; XCLAIM bumps their delivery count in the pending list."""
        ids = [nacked.popleft().record_id for _ in range(len(nacked))]
        entries = await self._call(self.client.xclaim, f"redeliver on {topic}", topic, group, me, 0, ids)
        return await self._deliveries(topic, group, me, entries, settle, counted=True)

    async def _deliveries(self, topic: str, group: str, me: str, entries: list[Any], settle: Any,
                          counted: bool) -> list[Delivery]:
        """Deliveries for raw entries; `counted` entries read their attempt from the pending list."""
        counts: dict[bytes, int] = {}
        if counted and entries:
            pending = await self._call(self.client.xpending_range, f"pending on {topic}", topic, group,
                                       min=entries[0][0], max=entries[-1][0], count=len(entries) * 2,
                                       consumername=me)
            counts = {p["message_id"]: p["times_delivered"] for p in pending}
        out, deleted = [], []
        for entry in entries:
            if entry is None:  # an id XCLAIM did not find
                continue
            entry_id, fields = entry
            if fields is None:  # deleted while pending: nothing left to deliver
                deleted.append(entry_id)
                continue
            out.append(entry_delivery(topic, entry_id.decode(), fields, counts.get(entry_id, 1), settle))
        if deleted:
            await self._call(self.client.xack, f"ack on {topic}", topic, group, *deleted)
        return out

    # -- replay ------------------------------------------------------------------------------------

    async def read(self, topic: str, *, since: datetime | None = None, until: datetime | None = None,
                   start_id: str | None = None, end_id: str | None = None,
                   limit: int | None = None) -> AsyncIterator[Record]:
        low = start_id or (_ms_to_id(since.timestamp(), upper=False) if since else "-")
        high = end_id or (_ms_to_id(until.timestamp(), upper=True) if until else "+")
        remaining = limit
        while remaining is None or remaining > 0:
            page = 500 if remaining is None else min(500, remaining)
            entries = await self._call(self.client.xrange, f"read {topic}", topic, low, high, count=page)
            for entry_id, fields in entries:
                rid = entry_id.decode()
                if not has_event(fields):
                    continue  # ensure_topic's marker and foreign non-event entries are not events
                delivery = entry_delivery(topic, rid, fields, 1, _no_settle)
                yield Record(event=delivery.event, record_id=rid, timestamp=id_time(rid), key=delivery.key,
                             error=delivery.error, raw=delivery.raw)
            if len(entries) < page:
                return
            low = "(" + entries[-1][0].decode()
            if remaining is not None:
                remaining -= len(entries)

    # -- operating on groups -----------------------------------------------------------------------

    async def group_lag(self, topic: str, group: str) -> GroupLag:
        return await RedisGroupAdmin(self.client, self._call).lag(topic, group)

    async def rewind_group(self, topic: str, group: str, *, since: datetime, until: datetime | None = None,
                           dry_run: bool = False, force: bool = False) -> dict[int | None, int]:
        return await RedisGroupAdmin(self.client, self._call).rewind(topic, group, since, until,
                                                                     dry_run=dry_run, force=force)


async def _no_settle(delivery: Delivery, ok: bool) -> None:
    return None


async def _detached(operation: Awaitable[Any]) -> Any:
    """Run a Redis call in its own task and wait for it, shielded.

    A cancellation that lands inside redis-py while it waits for a reply can be lost there (seen
    with redis 8.1 on Python 3.11), leaving the cancelled task hung. Run apart, the call is never
    cancelled: the caller stops waiting at once and the call ends by itself (replies come within
    block_ms or the socket timeout).
    """
    task = asyncio.ensure_future(operation)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark an abandoned call's outcome as seen."""
    if not task.cancelled():
        task.exception()

