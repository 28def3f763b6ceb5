"""Who holds what: each node's sync record on the compacted topic `<ns>.sync.manifests` (key = node id).

A node's AUTO_SYNC daemon announces a `PeerRecord` whenever its manifest digest changes, every
`announce_interval_s` anyway (so a silent node is seen to be gone), and once with status "stopped"
when it stops. The record carries the node's data URL (where its DATA_SERVER answers), the digest and
summary of its manifest (not the file list: a peer fetches the full manifest over HTTP when the
digest changed) and how many transfers it is running. Readers fold the records by key, newest wins;
`PeerDirectory.refresh()` reads the last `horizon_s` seconds once, then only what is new, so its
cost does not grow with the topic's history: a node silent for that long is absent, which is what
"gone" means anyway.

Without Kafka the topic is a stream on the node's Redis, which only makes sense on a single node.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from brokers.base import Broker
from brokers.errors import TopicNotFound
from coordination.sync_manifest import Manifest

__all__ = ["PeerDirectory", "PeerRecord", "manifests_topic"]

log = logging.getLogger(__name__)

STALE_AFTER_INTERVALS = 3  # a running record older than this many announce intervals is stale


def manifests_topic(namespace: str) -> str:
    return f"{namespace}.sync.manifests"


class PeerRecord(msgspec.Struct, kw_only=True):
    node_id: str
    data_url: str | None  # None: the node pulls but serves nothing (no DATA_SERVER)
    updated_at: float
    status: Literal["running", "stopped"] = "running"
    ephemeral: bool = False
    digest: str = ""
    summary: dict[str, Any] = msgspec.field(default_factory=dict)
    announce_interval_s: float = 30.0
    active_transfers: int = 0

    @classmethod
    def for_manifest(cls, manifest: Manifest, data_url: str | None, *, ephemeral: bool = False,
                     announce_interval_s: float = 30.0, active_transfers: int = 0) -> PeerRecord:
        summary = manifest.summary()
        return cls(node_id=manifest.node_id, data_url=data_url, updated_at=time.time(), ephemeral=ephemeral,
                   digest=summary.pop("digest"), summary=summary, announce_interval_s=announce_interval_s,
                   active_transfers=active_transfers)

    def is_live(self, now: float | None = None) -> bool:
        """Running, and announced within STALE_AFTER_INTERVALS of its interval."""
        age = (time.time() if now is None else now) - self.updated_at
        return self.status == "running" and age <= STALE_AFTER_INTERVALS * self.announce_interval_s

    def can_serve(self, now: float | None = None) -> bool:
        return self.data_url is not None and self.is_live(now)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PeerRecord)


class PeerDirectory:
    """Reads and writes the sync records on one broker (Kafka, or Redis without Kafka). `refresh()`
    reads the last `horizon_s` seconds the first time, then only the records after the newest it saw
    (the topic has one partition), and keeps the newest record per node."""

    def __init__(self, broker: Broker, topic: str, *, horizon_s: float = 600.0) -> None:
        self.broker = broker
        self.topic = topic
        self.horizon_s = horizon_s
        self.peers: dict[str, PeerRecord] = {}
        self._last_id: str | None = None
        self._ensured = False

    async def _ensure(self) -> None:
        if not self._ensured:
            await self.broker.ensure_topic(self.topic, compacted=True)
            self._ensured = True

    async def announce(self, record: PeerRecord) -> None:
        await self._ensure()
        await self.broker.publish_raw(self.topic, _encoder.encode(record), key=record.node_id)

    async def refresh(self) -> dict[str, PeerRecord]:
        """node id -> its newest record."""
        since = None if self._last_id is not None else datetime.fromtimestamp(time.time() - self.horizon_s, UTC)
        try:
            async for item in self.broker.read(self.topic, since=since, start_id=self._last_id):
                if item.record_id == self._last_id:
                    continue  # start_id is inclusive
                self._last_id = item.record_id
                record = self._decode(item.raw, item.record_id)
                if record is not None and record.updated_at >= getattr(self.peers.get(record.node_id),
                                                                       "updated_at", 0):
                    self.peers[record.node_id] = record
        except TopicNotFound:
            pass  # no node announced itself in this namespace yet
        return dict(self.peers)

    @staticmethod
    def _decode(raw: bytes | None, record_id: str) -> PeerRecord | None:
        if raw is None:  # the value decoded as an event envelope: not ours
            return None
        try:
            return _decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("skipping sync record %s: %s", record_id, exc)
            return None
