"""The durable publish spool: events the brokers could not take, kept on local disk until they can.

One directory per process (`RINGRIFT_SPOOL_DIR`), locked with `flock` so that two processes never
drain the same records. Inside, one sub-directory per bus and one file per record:

    <dir>/.lock                      flock'd while a process has the spool open (holds its pid)
    <dir>/<bus>/<seq:020d>.rec       one record; seq grows across all buses, so names sort in order
    <dir>/<bus>/<seq:020d>.tmp       a record being written (left over by a crash: never acknowledged)
    <dir>/<bus>/<seq:020d>.corrupt   a record that failed its checksum, set aside (never deleted)

A record file is `MAGIC | body length (u32) | crc32(body) (u32) | body`, the body a msgpack
`SpooledRecord` (the encoded event, its topic and key). `append` writes the temporary file, fsyncs
it, renames it into place and fsyncs the directory, so a record that `append` returned for survives
a crash or power loss, and a half-written one is never mistaken for a record. Removing a record is an
unlink without a directory fsync: after a power loss it may come back and be sent twice, which the
subscribers' dedup by event_id absorbs (at-least-once).

`Spool` is safe to call from threads (the router appends from a worker thread, off its event loop).

`SpoolDrainer` empties it: one task per bus with records, sending them strictly in order through
callables the router provides. While the bus is down it probes it with a cheap call, backing off; a
record is removed only after the broker acknowledged it; one the broker refuses for good (e.g.
`RecordTooLarge`) is dead-lettered instead, so it cannot block the bus forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from brokers.errors import AuthenticationFailed, BrokerClosed, BrokerError, ConfigurationError

__all__ = ["CorruptRecord", "Spool", "SpoolDrainer", "SpoolEntry", "SpoolLocked", "SpooledRecord",
           "new_record"]

log = logging.getLogger(__name__)
MAGIC = b"RRS1"
_HEADER = struct.Struct(">4sII")
_encoder = msgspec.msgpack.Encoder()


class SpoolLocked(ConfigurationError):
    """Another process has this spool directory open."""


class CorruptRecord(Exception):
    """A record file that is truncated or fails its checksum."""


class SpooledRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One publish to one bus, as it will be sent: already encoded."""

    bus: str
    topic: str
    value: bytes
    key: str | None = None
    event_id: str = ""
    spooled_at: float = 0.0


_record_decoder = msgspec.msgpack.Decoder(SpooledRecord)


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """Where one record lives; `seq` orders records across buses."""

    seq: int
    bus: str
    path: Path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pack(record: SpooledRecord) -> bytes:
    body = _encoder.encode(record)
    return _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


def _unpack(data: bytes) -> SpooledRecord:
    if len(data) < _HEADER.size:
        raise CorruptRecord(f"{len(data)} bytes, shorter than the header")
    magic, length, crc = _HEADER.unpack_from(data)
    body = data[_HEADER.size:]
    if magic != MAGIC:
        raise CorruptRecord(f"bad magic {magic!r}")
    if len(body) != length:
        raise CorruptRecord(f"body of {len(body)} bytes, header says {length} (half-written?)")
    if zlib.crc32(body) != crc:
        raise CorruptRecord("checksum mismatch")
    try:
        return _record_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise CorruptRecord(f"undecodable body: {exc}") from exc


class Spool:
    """An open, locked spool directory. `close()` releases the lock."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._take_lock()
        self._mutex = threading.Lock()
        self._index: dict[str, deque[SpoolEntry]] = {}
        self._next_seq = 1
        try:
            self._scan()
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> int:
        path = self.directory / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SpoolLocked(f"spool directory {str(self.directory)!r} is in use by another process "
                              f"(pid {holder}); give each process its own RINGRIFT_SPOOL_DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _scan(self) -> None:
        """Index the records left by an earlier process; drop stale temporaries, set aside corrupt ones."""
        for bus_dir in sorted(p for p in self.directory.iterdir() if p.is_dir()):
            entries: list[SpoolEntry] = []
            for path in bus_dir.iterdir():
                stem, suffix = path.stem, path.suffix
                if not stem.isdigit():
                    continue
                self._next_seq = max(self._next_seq, int(stem) + 1)
                if suffix == ".tmp":  # its append never returned, so nobody was told it is safe
                    log.warning("spool: removing %s, a record whose write was interrupted", path)
                    path.unlink(missing_ok=True)
                elif suffix == ".rec":
                    entry = SpoolEntry(int(stem), bus_dir.name, path)
                    if self._load(entry) is not None:
                        entries.append(entry)
            if entries:
                entries.sort(key=lambda e: e.seq)
                self._index[bus_dir.name] = deque(entries)
        if self.depth():
            log.info("spool %s: %d record(s) left to drain %s", self.directory, self.depth(), self.depths())

    def _load(self, entry: SpoolEntry) -> SpooledRecord | None:
        """The record, or None when it is corrupt (then it is renamed *.corrupt and logged)."""
        try:
            return _unpack(entry.path.read_bytes())
        except FileNotFoundError:
            log.error("spool: record %s vanished (removed by hand?)", entry.path)
            return None
        except CorruptRecord as exc:
            aside = entry.path.with_suffix(".corrupt")
            log.error("spool: record %s is corrupt (%s); set aside as %s", entry.path, exc, aside.name)
            entry.path.rename(aside)
            return None

    # -- writing and removing ------------------------------------------------------------------------

    def append(self, record: SpooledRecord) -> SpoolEntry:
        """Write one record durably (fsync'd file and directory); returns once it is on disk."""
        if not record.bus.isidentifier():
            raise ValueError(f"bus name {record.bus!r} is not a plain identifier")
        data = _pack(record)
        with self._mutex:  # held through the write: the index stays in seq order
            if self._lock_fd < 0:
                raise ConfigurationError(f"spool {self.directory} is closed")
            bus_dir = self.directory / record.bus
            if not bus_dir.is_dir():
                bus_dir.mkdir()
                _fsync_dir(self.directory)
            seq = self._next_seq
            final = bus_dir / f"{seq:020d}.rec"
            temporary = final.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, final)
            _fsync_dir(bus_dir)
            self._next_seq = seq + 1
            entry = SpoolEntry(seq, record.bus, final)
            self._index.setdefault(record.bus, deque()).append(entry)
            return entry

    def remove(self, entry: SpoolEntry) -> None:
        """Forget a record (the broker acknowledged it, or it was dead-lettered)."""
        with self._mutex:
            queue = self._index.get(entry.bus)
            if queue and entry in queue:
                queue.remove(entry)
            entry.path.unlink(missing_ok=True)

    # -- reading --------------------------------------------------------------------------------------

    def head(self, bus: str) -> tuple[SpoolEntry, SpooledRecord] | None:
        """The oldest readable record of `bus` (corrupt ones are set aside on the way), or None."""
        while True:
            with self._mutex:
                queue = self._index.get(bus)
                if not queue:
                    return None
                entry = queue[0]
                record = self._load(entry)
                if record is not None:
                    return entry, record
                queue.popleft()

    def records(self, bus: str) -> Iterator[tuple[SpoolEntry, SpooledRecord]]:
        """A snapshot of `bus`'s readable records, oldest first (corrupt ones are skipped)."""
        with self._mutex:
            entries = list(self._index.get(bus, ()))
        for entry in entries:
            try:
                record = _unpack(entry.path.read_bytes())
            except FileNotFoundError:
                continue  # removed meanwhile
            except CorruptRecord as exc:
                log.error("spool: record %s is corrupt (%s); skipped", entry.path, exc)
                continue
            yield entry, record

    def depth(self, bus: str | None = None) -> int:
        """Records waiting: on one bus, or on all."""
        if bus is not None:
            return len(self._index.get(bus, ()))
        return sum(len(q) for q in self._index.values())

    def depths(self) -> dict[str, int]:
        """Records waiting per bus (buses with none are left out)."""
        return {bus: len(q) for bus, q in self._index.items() if q}

    def close(self) -> None:
        """Release the directory lock. Records stay on disk for the next process. Idempotent."""
        with self._mutex:
            fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            os.close(fd)  # closing the descriptor releases the flock


def new_record(bus: str, topic: str, value: bytes, key: str | None, event_id: str) -> SpooledRecord:
    """A record stamped with the time it was spooled."""
    return SpooledRecord(bus=bus, topic=topic, value=value, key=key, event_id=event_id, spooled_at=time.time())


Send = Callable[[SpooledRecord], Awaitable[object]]  # publish one record; returns once acknowledged
Probe = Callable[[str], Awaitable[object]]  # a cheap call on the broker behind a bus
DeadLetterSink = Callable[[SpooledRecord, BaseException], Awaitable[object]]


def _refused_for_good(exc: BaseException) -> bool:
    """The broker will never take this record; waiting cannot help (closed or bad credentials can)."""
    return isinstance(exc, BrokerError) and not exc.retriable \
        and not isinstance(exc, BrokerClosed | AuthenticationFailed)


class SpoolDrainer:
    """Drains a `Spool` in order, one task per bus, until each bus is empty. `wake()` after appends."""

    def __init__(self, spool: Spool, send: Send, probe: Probe, dead_letter: DeadLetterSink, *,
                 send_timeout_s: float, probe_timeout_s: float, backoff_max_s: float) -> None:
        self.spool = spool
        self._send = send
        self._probe = probe
        self._dead_letter = dead_letter
        self._send_timeout_s = send_timeout_s or None
        self._probe_timeout_s = probe_timeout_s
        self._backoff_max_s = backoff_max_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.drained = 0
        self.dead_lettered = 0

    def wake(self, bus: str | None = None) -> None:
        """Make sure a task drains `bus` (None: every bus with records). Call it on the event loop."""
        for name in [bus] if bus is not None else list(self.spool.depths()):
            if name not in self._tasks and self.spool.depth(name):
                self._tasks[name] = asyncio.get_running_loop().create_task(self._drain(name),
                                                                           name=f"spool-drain-{name}")

    @property
    def running(self) -> list[str]:
        return sorted(self._tasks)

    async def stop(self) -> None:
        """Cancel the tasks; a record being sent stays in the spool (sent again later: at-least-once)."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _drain(self, bus: str) -> None:
        delay = 0.05
        try:
            while self.spool.depth(bus):
                try:
                    if await self._up(bus) and await self._send_all(bus):
                        delay = 0.05
                        continue
                except Exception:  # a bug or a disk error must not end draining: retry after the back-off
                    log.exception("spool: draining the %s bus failed", bus)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_max_s)
            log.info("spool: the %s bus is drained", bus)
        finally:
            # no await between the depth check above and this: a publish that appends after it sees
            # no task for the bus and wakes a new one
            if self._tasks.get(bus) is asyncio.current_task():
                del self._tasks[bus]

    async def _up(self, bus: str) -> bool:
        try:
            async with asyncio.timeout(self._probe_timeout_s):
                await self._probe(bus)
        except Exception as exc:
            log.debug("spool: the %s bus is still down (%s: %s)", bus, type(exc).__name__, exc)
            return False
        return True

    async def _send_all(self, bus: str) -> bool:
        """Send `bus`'s records in order; False when the broker failed (the record stays)."""
        while (head := self.spool.head(bus)) is not None:
            entry, record = head
            try:
                async with asyncio.timeout(self._send_timeout_s):
                    await self._send(record)
            except Exception as exc:
                if not _refused_for_good(exc):
                    log.warning("spool: sending %s to the %s bus failed (%s: %s); %d record(s) wait",
                                record.event_id, bus, type(exc).__name__, exc, self.spool.depth(bus))
                    return False
                try:
                    await self._dead_letter(record, exc)
                except Exception as dlq_exc:
                    log.warning("spool: dead-lettering %s failed (%s); retrying later", record.event_id, dlq_exc)
                    return False
                log.error("spool: %s refused by the %s bus for good (%s); dead-lettered",
                          record.event_id, bus, exc)
                self.dead_lettered += 1
            else:
                self.drained += 1
            self.spool.remove(entry)
        return True
