"""The data plane's client: fetch a peer's manifest, pull one file safely.

`transfer_file(base_url, entry, data_dir, secret)` downloads `entry.path` from a `DataServer`:

* into `<dest>.part`, hashing as it writes; after an interruption (connection dropped, timeout, 5xx)
  the next attempt asks for the rest with `Range: bytes=<have>-` (a `.part` left by an earlier,
  killed process is resumed the same way);
* at most `bandwidth_limit_mbps` (10^6 bits/s) through a `TokenBucket`, or one shared by the caller;
* installed with an atomic `os.replace` only once size and SHA-256 match the entry (the file is
  fsynced first and given the entry's mtime); a mismatch deletes the partial and starts over;
* `retries` attempts in all, then `TransferFailed(path, reason)`; 401, 403 and 404, an unsafe path
  or a source whose size no longer matches the manifest fail at once. A corrupt file is never
  installed, and a destination that already holds the entry's bytes is left alone (attempts=0).

Two transfers of one destination in this process run one after the other, so the second finds the
file installed and sends nothing. Errors (all carry a one-line `reason`):

    DataPlaneError
     +-- TransferFailed(path, reason)        a file could not be pulled
     +-- ManifestUnavailable(url, reason)    a peer's manifest could not be read
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import msgspec
from yarl import URL

from coordination.sync_auth import auth_headers
from coordination.sync_manifest import FileEntry, Manifest, decode_manifest, safe_data_path

__all__ = ["CHUNK_SIZE", "DataPlaneError", "ManifestUnavailable", "TokenBucket", "TransferFailed", "TransferResult",
           "fetch_manifest", "transfer_file"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=30)
_BACKOFF_S = 0.2
_FATAL_STATUSES = {401: "signature refused", 403: "path refused", 404: "no such file"}
_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


class DataPlaneError(Exception):
    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"{subject}: {reason}")
        self.reason = reason


class TransferFailed(DataPlaneError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path


class ManifestUnavailable(DataPlaneError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.url = url


class _Retry(Exception):
    """An attempt failed in a way a further attempt may fix."""


class TokenBucket:
    """`take(n)` waits until `n` bytes fit a rate of `rate_bytes_per_s`, allowing bursts of `burst` bytes.

    Takers queue in order; a take larger than the bucket borrows ahead and waits off the debt."""

    def __init__(self, rate_bytes_per_s: float, burst: float = CHUNK_SIZE) -> None:
        if rate_bytes_per_s <= 0 or burst <= 0:
            raise ValueError(f"a token bucket needs a positive rate and burst (got {rate_bytes_per_s}, {burst})")
        self.rate = float(rate_bytes_per_s)
        self.burst = float(burst)
        self._tokens = self.burst
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    @classmethod
    def from_mbps(cls, mbps: float) -> TokenBucket:
        """A bucket for a limit in megabits per second (10^6 bits/s)."""
        if mbps <= 0:
            raise ValueError(f"bandwidth_limit_mbps must be positive, got {mbps}")
        return cls(mbps * 1_000_000 / 8)

    async def take(self, n: int) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate) - n
            self._updated = now
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)


@dataclass(frozen=True)
class TransferResult:
    path: str
    bytes_transferred: int  # body bytes received over the network, all attempts together
    duration_s: float
    resumed: bool  # some attempt continued a partial file instead of starting over
    attempts: int


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=_TIMEOUT, auto_decompress=False)


def _signed(base_url: str, path: str, secret: str | bytes) -> tuple[URL, dict[str, str]]:
    headers = auth_headers(secret, "GET", path)
    headers["Accept-Encoding"] = "identity"
    return URL(base_url.rstrip("/") + path, encoded=True), headers


async def fetch_manifest(base_url: str, secret: str | bytes, *, timeout: float = 10,
                         session: aiohttp.ClientSession | None = None) -> Manifest:
    """The manifest a peer's DataServer serves; ManifestUnavailable when it cannot be had."""
    url, headers = _signed(base_url, "/sync/manifest", secret)
    own = session is None
    client = session or _session()
    try:
        async with client.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            body = await response.read()
            if response.status != 200:
                raise ManifestUnavailable(str(url), f"HTTP {response.status} {_error_text(body)}")
        return decode_manifest(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ManifestUnavailable(str(url), f"not a manifest: {exc}") from None
    except _NETWORK_ERRORS as exc:
        raise ManifestUnavailable(str(url), f"cannot reach the data server: {_describe(exc)}") from None
    finally:
        if own:
            await client.close()


def _error_text(body: bytes) -> str:
    try:
        return str(msgspec.json.decode(body)["error"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


async def transfer_file(base_url: str, entry: FileEntry, data_dir: str | os.PathLike[str], secret: str | bytes, *,
                        bandwidth_limit_mbps: float | None = None, retries: int = 3,
                        session: aiohttp.ClientSession | None = None, bucket: TokenBucket | None = None,
                        on_progress: Callable[[int, int], None] | None = None) -> TransferResult:
    """Pull `entry` from the DataServer at `base_url` into `data_dir` (see the module docstring).

    `bucket` (shared by several transfers) wins over `bandwidth_limit_mbps`; `on_progress(have, size)`
    is called as bytes land."""
    try:
        dest = safe_data_path(data_dir, entry.path)
    except ValueError as exc:
        raise TransferFailed(entry.path, str(exc)) from None
    if retries < 1:
        raise ValueError(f"retries must be at least 1, got {retries}")
    if bucket is None and bandwidth_limit_mbps is not None:
        bucket = TokenBucket.from_mbps(bandwidth_limit_mbps)
    lock = _locks.setdefault(str(dest.absolute()), asyncio.Lock())
    async with lock:
        if await asyncio.to_thread(_holds, dest, entry):
            return TransferResult(entry.path, 0, 0.0, resumed=False, attempts=0)
        own = session is None
        client = session or _session()
        try:
            return await _Download(base_url, entry, dest, secret, client, bucket, on_progress).run(retries)
        finally:
            if own:
                await client.close()


def _holds(dest: Path, entry: FileEntry) -> bool:
    """Whether `dest` already has the entry's bytes."""
    try:
        return dest.stat().st_size == entry.size and _sha256_prefix(dest, entry.size).hexdigest() == entry.sha256
    except OSError:
        return False


def _sha256_prefix(path: Path, length: int) -> hashlib._Hash:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while length > 0 and (chunk := f.read(min(1 << 20, length))):
            h.update(chunk)
            length -= len(chunk)
    return h


def _install(part: Path, dest: Path, mtime: float) -> None:
    with open(part, "rb") as f:
        os.fsync(f.fileno())
    os.utime(part, (mtime, mtime))
    os.replace(part, dest)


class _Download:
    """One transfer_file call: the attempts, the partial file and its running hash."""

    def __init__(self, base_url: str, entry: FileEntry, dest: Path, secret: str | bytes,
                 session: aiohttp.ClientSession, bucket: TokenBucket | None,
                 on_progress: Callable[[int, int], None] | None) -> None:
        self.base_url = base_url
        self.entry = entry
        self.dest = dest
        self.part = dest.with_name(dest.name + ".part")
        self.secret = secret
        self.session = session
        self.bucket = bucket
        self.on_progress = on_progress
        self.received = 0
        self.resumed = False
        self._hasher = hashlib.sha256()
        self._hashed = 0  # bytes of the partial file the hasher has seen

    async def run(self, retries: int) -> TransferResult:
        started = time.monotonic()
        reason = ""
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransferFailed(self.entry.path, f"cannot create {self.dest.parent}: {exc}") from None
        for attempt in range(1, retries + 1):
            try:
                await self._attempt()
                if self._hasher.hexdigest() != self.entry.sha256:
                    self._discard()
                    raise _Retry(f"SHA-256 mismatch after {self.entry.size} bytes (corrupt transfer discarded)")
                await asyncio.to_thread(_install, self.part, self.dest, self.entry.mtime)
                return TransferResult(self.entry.path, self.received, time.monotonic() - started,
                                      self.resumed, attempt)
            except _Retry as exc:
                reason = str(exc)
                log.warning("transfer of %s, attempt %d/%d: %s", self.entry.path, attempt, retries, reason)
            except OSError as exc:
                raise TransferFailed(self.entry.path, f"local file error: {exc}") from None
            if attempt < retries:
                await asyncio.sleep(_BACKOFF_S * attempt)
        raise TransferFailed(self.entry.path, f"gave up after {retries} attempts: {reason}")

    def _discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self._hasher, self._hashed = hashlib.sha256(), 0

    async def _attempt(self) -> None:
        have = self.part.stat().st_size if self.part.exists() else 0
        if have > self.entry.size:
            self._discard()
            have = 0
        if have != self._hashed:
            self._hasher, self._hashed = await asyncio.to_thread(_sha256_prefix, self.part, have), have
        if have < self.entry.size or not self.part.exists():
            await self._fetch_from(have)
        elif have:
            self.resumed = True  # a complete partial from an earlier run: nothing left to fetch

    async def _fetch_from(self, offset: int) -> None:
        url, headers = _signed(self.base_url, "/sync/file/" + quote(self.entry.path, safe="/"), self.secret)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            async with self.session.get(url, headers=headers) as response:
                self._check_status(response, offset)
                if response.status == 200 and offset:  # the server ignored the range: start over
                    self._discard()
                    offset = 0
                self.resumed = self.resumed or offset > 0
                await self._receive(response, offset)
        except aiohttp.ClientConnectorError as exc:
            raise _Retry(f"cannot reach the data server at {self.base_url}: {_describe(exc)}") from None
        except _NETWORK_ERRORS as exc:
            raise _Retry(f"transfer from {self.base_url} interrupted: {_describe(exc)}") from None

    def _check_status(self, response: aiohttp.ClientResponse, offset: int) -> None:
        status = response.status
        if status in _FATAL_STATUSES:
            raise TransferFailed(self.entry.path, f"{self.base_url} answered {status} ({_FATAL_STATUSES[status]})")
        if status == 416:
            self._discard()
            raise _Retry(f"{self.base_url} refused the range from byte {offset} (416); starting over")
        if status not in (200, 206):
            raise _Retry(f"{self.base_url} answered HTTP {status}")
        total = self._total_size(response)
        if total is not None and total != self.entry.size:
            raise TransferFailed(self.entry.path, f"the source changed: it now has {total} bytes, the manifest "
                                                  f"said {self.entry.size} (fetch a fresh manifest)")
        if status == 206 and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            raise _Retry(f"{self.base_url} sent the wrong range: {response.headers.get('Content-Range')!r}")

    @staticmethod
    def _total_size(response: aiohttp.ClientResponse) -> int | None:
        if response.status == 206:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            return int(total) if total.isdigit() else None
        return response.content_length

    async def _receive(self, response: aiohttp.ClientResponse, offset: int) -> None:
        bucket, hasher, on_progress, size = self.bucket, self._hasher, self.on_progress, self.entry.size
        have = offset
        overflow = False
        # Writing and hashing inline beats handing each chunk to a thread (measured: the hand-off costs
        # more than a page-cache write, and hashlib releases the GIL anyway).
        with open(self.part, "ab" if offset else "wb") as f:  # noqa: ASYNC230
            try:
                async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                    if have + len(chunk) > size:
                        overflow = True
                        break
                    if bucket is not None:
                        await bucket.take(len(chunk))
                    f.write(chunk)
                    hasher.update(chunk)
                    have += len(chunk)
                    self.received += len(chunk)
                    if on_progress is not None:
                        on_progress(have, size)
            finally:
                self._hashed = have
        if overflow:
            self._discard()
            raise _Retry(f"{self.base_url} sent more than the manifest's {size} bytes")
        if have != size:
            raise _Retry(f"{self.base_url} ended the body after {have} of {size} bytes")
