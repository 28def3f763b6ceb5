"""The data plane over real HTTP on loopback (no Redis or Kafka needed): the DataServer's signed routes,
range requests and refused paths, and transfer_file's happy path, resume, bandwidth limit, corrupt
bytes and refusals. `FaultyProxy` sits between client and server to cut or corrupt a response body."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from coordination import sync_manifest
from coordination.daemon_manager import DaemonManager
from coordination.daemon_types import DaemonManagerConfig, DaemonType
from coordination.daemons import data_server
from coordination.daemons.data_server import DataServerDaemon, DataServerSettings
from coordination.sync_auth import TIMESTAMP_HEADER, auth_headers, sign
from coordination.sync_manifest import FileEntry
from coordination.sync_server import DataServer
from coordination.sync_transfer import (
    ManifestUnavailable,
    TokenBucket,
    TransferFailed,
    fetch_manifest,
    transfer_file,
)

SECRET = "test-cluster-secret"
GAME = "games/hex8_2p.db"
LEAK = b"TOP SECRET, NEVER SERVED"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[DataServer]:
    root = tmp_path / "node-a"
    write(root / GAME, os.urandom(1_000_000))
    write(root / "games" / "hex8_2p.db.gz", b"a precompressed sibling that must never be sent instead")
    write(root / "models" / "model_square19_4p_v3.pth", os.urandom(4_000_000))
    write(root / "games" / "hex8_2p.db.part", b"in progress")
    outside = write(tmp_path / "outside" / "secret.txt", LEAK)
    (root / "games" / "escape_hex8_2p.db").symlink_to(outside)
    (root / "games" / "escape_dir").symlink_to(outside.parent, target_is_directory=True)
    s = DataServer(root, SECRET, "node-a")
    await s.start()
    yield s
    await s.stop()


async def entry_of(server: DataServer, path: str = GAME) -> FileEntry:
    return (await fetch_manifest(server.base_url, SECRET)).by_path()[path]


async def raw_request(server: DataServer, target: str, *, method: str = "GET", headers: dict[str, str] | None = None,
                      signed: bool = True) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with `target` sent byte for byte (no client-side normalising)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    lines = {"Host": f"{server.host}:{server.port}", "Connection": "close",
             **(auth_headers(SECRET, method, target) if signed else {}), **(headers or {})}
    writer.write(f"{method} {target} HTTP/1.1\r\n".encode()
                 + "".join(f"{k}: {v}\r\n" for k, v in lines.items()).encode() + b"\r\n")
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), parsed, body


class FaultyProxy:
    """Forwards requests to a DataServer untouched (signatures stay valid) but damages the first `faulty`
    file bodies: `cut_after` drops the connection after that many body bytes; `corrupt` flips the first
    byte. `responses` records (Range header, body bytes sent) per forwarded body."""

    def __init__(self, upstream: str, *, cut_after: int | None = None, corrupt: bool = False,
                 faulty: int = 1) -> None:
        self.upstream, self.cut_after, self.corrupt, self.faulty = upstream, cut_after, corrupt, faulty
        self.responses: list[tuple[str | None, int]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        assert self._runner and self._session
        await self._session.close()
        await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() in ("range", "accept-encoding") or k.lower().startswith("x-ringrift-")}
        url = URL(self.upstream + request.raw_path, encoded=True)
        async with self._session.request(request.method, url, headers=headers) as upstream:
            damage = upstream.status in (200, 206) and len(self.responses) < self.faulty
            response = web.StreamResponse(status=upstream.status)
            for name in ("Content-Length", "Content-Range", "Content-Type"):
                if name in upstream.headers:
                    response.headers[name] = upstream.headers[name]
            await response.prepare(request)
            sent = 0
            async for chunk in upstream.content.iter_chunked(65536):
                if damage and self.corrupt and sent == 0:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                if damage and self.cut_after is not None and sent + len(chunk) >= self.cut_after:
                    await response.write(chunk[:self.cut_after - sent])
                    self.responses.append((request.headers.get("Range"), self.cut_after))
                    await asyncio.sleep(0.1)  # let the client read what it got before the drop
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(chunk)
                sent += len(chunk)
            if upstream.status in (200, 206):
                self.responses.append((request.headers.get("Range"), sent))
            await response.write_eof()
            return response


@pytest.fixture
async def proxy_factory() -> AsyncIterator[list[FaultyProxy]]:
    proxies: list[FaultyProxy] = []
    yield proxies
    for proxy in proxies:
        await proxy.stop()


async def start_proxy(proxies: list[FaultyProxy], upstream: str, **faults: object) -> tuple[FaultyProxy, str]:
    proxy = FaultyProxy(upstream, **faults)
    proxies.append(proxy)
    return proxy, await proxy.start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the server ----------------------------------------------------------------------------------------


async def test_healthz_needs_no_signature_and_every_other_route_does(server: DataServer) -> None:
    status, _, body = await raw_request(server, "/healthz", signed=False)
    assert status == 200 and b'"node-a"' in body
    for target in ("/sync/manifest", f"/sync/file/{GAME}", "/no/such/route"):
        status, headers, body = await raw_request(server, target, signed=False)
        assert (status, headers["content-type"].split(";")[0]) == (401, "application/json")
        assert b"unsigned request" in body
    assert server.stats["auth_failures"] == 3


@pytest.mark.parametrize(("make_headers", "reason"), [
    (lambda path: {TIMESTAMP_HEADER: str(int(time.time()) - 120),
                   "X-Ringrift-Signature": sign(SECRET, "GET", path, int(time.time()) - 120)}, b"stale signature"),
    (lambda path: auth_headers("some-other-secret", "GET", path), b"wrong signature"),
    (lambda path: auth_headers(SECRET, "GET", "/sync/file/games/other.db"), b"wrong signature"),
    (lambda path: auth_headers(SECRET, "HEAD", path), b"wrong signature"),
])
async def test_stale_or_wrong_signatures_get_401(server: DataServer, make_headers: Callable[[str], dict[str, str]],
                                              reason: bytes) -> None:
    path = f"/sync/file/{GAME}"
    status, _, body = await raw_request(server, path, headers=make_headers(path), signed=False)
    assert status == 401 and reason in body and len(body) < 300


async def test_the_manifest_lists_the_served_files(server: DataServer) -> None:
    manifest = await fetch_manifest(server.base_url, SECRET)
    assert manifest.node_id == "node-a"
    assert sorted(manifest.by_path()) == [GAME, "games/hex8_2p.db.gz", "models/model_square19_4p_v3.pth"]
    game = manifest.by_path()[GAME]
    assert game.sha256 == hashlib.sha256((server.data_dir / GAME).read_bytes()).hexdigest()
    assert game.config_key == "hex8_2p"


async def test_the_manifest_does_not_wait_for_a_big_new_file_to_be_hashed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a" / GAME, b"old game")
    s = DataServer(tmp_path / "a", SECRET, "node-a", manifest_wait_s=0.2)
    await s.start()
    try:
        assert [e.path for e in (await fetch_manifest(s.base_url, SECRET)).files] == [GAME]
        hashing_allowed = threading.Event()
        real = sync_manifest._sha256_file
        monkeypatch.setattr(sync_manifest, "_sha256_file", lambda path: hashing_allowed.wait(5) and real(path))
        write(tmp_path / "a" / "npz" / "big_hex8_2p.npz", b"a big new training file")
        started = time.monotonic()
        stale = await fetch_manifest(s.base_url, SECRET)
        assert [e.path for e in stale.files] == [GAME] and time.monotonic() - started < 2
        hashing_allowed.set()
        await until_listed(s, "npz/big_hex8_2p.npz")
    finally:
        await s.stop()


async def until_listed(server: DataServer, path: str) -> None:
    for _ in range(100):
        if path in (await fetch_manifest(server.base_url, SECRET)).by_path():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{path} never appeared in the manifest")


@pytest.mark.parametrize(("target", "expected"), [
    ("/sync/file/../../outside/secret.txt", 403),
    ("/sync/file/games/../../../outside/secret.txt", 403),
    ("/sync/file/%2e%2e/%2e%2e/outside/secret.txt", 403),
    ("/sync/file/games/%2e%2e%2f%2e%2e%2f..%2foutside%2fsecret.txt", 403),
    ("/sync/file/games/..%5c..%5c..%5coutside%5csecret.txt", 403),
    ("/sync/file//etc/passwd", 403),
    ("/sync/file/%2fetc%2fpasswd", 403),
    ("/sync/file/games/escape_hex8_2p.db", 403),
    ("/sync/file/games/escape_dir/secret.txt", 403),
    ("/sync/file/games/%252e%252e/secret.txt", 404),
    ("/sync/file/.sync-cache.json", 404),
    ("/sync/file/games/hex8_2p.db.part", 404),
    ("/sync/file/games/absent.db", 404),
    ("/sync/file/games", 404),
])
async def test_no_request_reaches_a_file_outside_the_data_directory(server: DataServer, target: str,
                                                                    expected: int) -> None:
    for method in ("GET", "HEAD"):
        status, _, body = await raw_request(server, target, method=method)
        assert status == expected, (method, target, body)
        assert LEAK not in body and b"root:" not in body


async def test_range_requests_and_head(server: DataServer) -> None:
    content = (server.data_dir / GAME).read_bytes()
    path = f"/sync/file/{GAME}"
    status, headers, body = await raw_request(server, path, headers={"Range": "bytes=10-19"})
    assert (status, headers["content-range"], body) == (206, f"bytes 10-19/{len(content)}", content[10:20])
    status, headers, body = await raw_request(server, path, headers={"Range": "bytes=999990-"})
    assert (status, body) == (206, content[999990:])
    status, headers, body = await raw_request(server, path, headers={"Range": "bytes=-5"})
    assert (status, body) == (206, content[-5:])
    status, headers, body = await raw_request(server, path, headers={"Range": f"bytes={len(content)}-"})
    assert (status, headers["content-range"]) == (416, f"bytes */{len(content)}")
    status, headers, body = await raw_request(server, path, headers={"Range": "lines=1-2"})
    assert status == 416
    status, headers, body = await raw_request(server, path, method="HEAD")
    assert (status, int(headers["content-length"]), body, headers["accept-ranges"]) == (200, len(content), b"", "bytes")
    status, headers, body = await raw_request(server, path, headers={"Accept-Encoding": "gzip"})
    assert (status, body, "content-encoding" in headers) == (200, content, False)
    assert server.stats["files_served"] == 4 and server.stats["bytes_served"] == 10 + 10 + 5 + len(content)


def test_an_empty_secret_is_refused_when_serving(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RINGRIFT_CLUSTER_SECRET"):
        DataServer(tmp_path, "", "node-a")


# -- transfers -----------------------------------------------------------------------------------------


async def test_a_file_is_pulled_verified_and_installed(server: DataServer, tmp_path: Path) -> None:
    entry = await entry_of(server)
    dest_dir = tmp_path / "node-b"
    progress: list[tuple[int, int]] = []
    result = await transfer_file(server.base_url, entry, dest_dir, SECRET,
                                 on_progress=lambda have, size: progress.append((have, size)))
    installed = dest_dir / GAME
    assert installed.read_bytes() == (server.data_dir / GAME).read_bytes()
    assert (result.path, result.bytes_transferred, result.resumed, result.attempts) == (GAME, entry.size, False, 1)
    assert installed.stat().st_mtime == entry.mtime and not (dest_dir / f"{GAME}.part").exists()
    assert progress[-1] == (entry.size, entry.size)
    again = await transfer_file(server.base_url, entry, dest_dir, SECRET)
    assert (again.bytes_transferred, again.attempts) == (0, 0)


async def test_an_empty_file_is_transferred(server: DataServer, tmp_path: Path) -> None:
    write(server.data_dir / "npz" / "empty_hex8_2p.npz", b"")
    entry = await entry_of(server, "npz/empty_hex8_2p.npz")
    result = await transfer_file(server.base_url, entry, tmp_path / "b", SECRET)
    assert (result.attempts, result.bytes_transferred) == (1, 0)
    assert (tmp_path / "b" / "npz" / "empty_hex8_2p.npz").read_bytes() == b""


async def test_two_transfers_of_one_file_at_once_send_it_once(server: DataServer, tmp_path: Path) -> None:
    entry = await entry_of(server)
    results = await asyncio.gather(*(transfer_file(server.base_url, entry, tmp_path / "b", SECRET) for _ in range(2)))
    assert sorted(r.bytes_transferred for r in results) == [0, entry.size]
    assert server.stats["files_served"] == 1


async def test_an_interrupted_transfer_resumes_with_a_range_request(server: DataServer, tmp_path: Path,
                                                                    proxy_factory: list[FaultyProxy]) -> None:
    entry = await entry_of(server)
    proxy, url = await start_proxy(proxy_factory, server.base_url, cut_after=300_000)
    result = await transfer_file(url, entry, tmp_path / "b", SECRET)
    assert (tmp_path / "b" / GAME).read_bytes() == (server.data_dir / GAME).read_bytes()
    assert result.resumed and result.attempts == 2 and result.bytes_transferred == entry.size
    (first_range, first_sent), (second_range, second_sent) = proxy.responses
    assert first_range is None and first_sent == 300_000
    kept = int(second_range.removeprefix("bytes=").removesuffix("-"))  # type: ignore[union-attr]
    assert 0 < kept <= 300_000 and second_sent == entry.size - kept < entry.size


async def test_a_partial_file_left_by_a_killed_receiver_is_resumed(server: DataServer, tmp_path: Path) -> None:
    entry = await entry_of(server)
    write(tmp_path / "b" / f"{GAME}.part", (server.data_dir / GAME).read_bytes()[:600_000])
    result = await transfer_file(server.base_url, entry, tmp_path / "b", SECRET)
    assert (result.resumed, result.attempts, result.bytes_transferred) == (True, 1, entry.size - 600_000)
    assert (tmp_path / "b" / GAME).read_bytes() == (server.data_dir / GAME).read_bytes()


async def test_a_partial_file_of_other_bytes_is_discarded_and_fetched_again(server: DataServer,
                                                                            tmp_path: Path) -> None:
    entry = await entry_of(server)
    write(tmp_path / "b" / f"{GAME}.part", b"\0" * 600_000)
    result = await transfer_file(server.base_url, entry, tmp_path / "b", SECRET)
    assert (result.attempts, result.bytes_transferred) == (2, entry.size + entry.size - 600_000)
    assert (tmp_path / "b" / GAME).read_bytes() == (server.data_dir / GAME).read_bytes()


async def test_the_bandwidth_limit_holds_within_20_percent(server: DataServer, tmp_path: Path) -> None:
    entry = await entry_of(server, "models/model_square19_4p_v3.pth")
    started = time.monotonic()
    result = await transfer_file(server.base_url, entry, tmp_path / "b", SECRET, bandwidth_limit_mbps=16)
    elapsed = time.monotonic() - started
    expected = entry.size * 8 / 16e6  # 4 MB at 16 Mbps: 2 s
    assert expected * 0.8 <= elapsed <= expected * 1.2, elapsed
    assert result.bytes_transferred == entry.size


async def test_a_corrupt_transfer_is_retried_and_never_installed(server: DataServer, tmp_path: Path,
                                                                 proxy_factory: list[FaultyProxy]) -> None:
    entry = await entry_of(server)
    proxy, url = await start_proxy(proxy_factory, server.base_url, corrupt=True, faulty=1)
    result = await transfer_file(url, entry, tmp_path / "b", SECRET)
    assert result.attempts == 2 and result.bytes_transferred == 2 * entry.size
    assert hashlib.sha256((tmp_path / "b" / GAME).read_bytes()).hexdigest() == entry.sha256

    proxy, url = await start_proxy(proxy_factory, server.base_url, corrupt=True, faulty=99)
    with pytest.raises(TransferFailed, match="gave up after 3 attempts: SHA-256 mismatch") as info:
        await transfer_file(url, entry, tmp_path / "c", SECRET)
    assert info.value.path == GAME and len(proxy.responses) == 3
    assert not (tmp_path / "c" / GAME).exists() and not (tmp_path / "c" / f"{GAME}.part").exists()


async def test_a_refused_signature_fails_at_once_without_retrying(server: DataServer, tmp_path: Path) -> None:
    entry = await entry_of(server)
    with pytest.raises(TransferFailed, match="answered 401") as info:
        await transfer_file(server.base_url, entry, tmp_path / "b", "not-the-cluster-secret", retries=5)
    assert info.value.path == GAME and server.stats["auth_failures"] == 1
    assert not (tmp_path / "b" / GAME).exists()


async def test_a_missing_file_an_unsafe_path_or_a_changed_source_fail_clearly(server: DataServer,
                                                                              tmp_path: Path) -> None:
    entry = await entry_of(server)
    gone = FileEntry("games/absent_hex8_2p.db", 10, "0" * 64, 1.0, "games")
    with pytest.raises(TransferFailed, match="answered 404"):
        await transfer_file(server.base_url, gone, tmp_path / "b", SECRET)
    evil = FileEntry("games/../../evil.db", 10, "0" * 64, 1.0, "games")
    with pytest.raises(TransferFailed, match="not a path inside the data directory"):
        await transfer_file(server.base_url, evil, tmp_path / "b", SECRET)
    write(server.data_dir / GAME, b"rewritten since the manifest")
    with pytest.raises(TransferFailed, match="the source changed"):
        await transfer_file(server.base_url, entry, tmp_path / "b", SECRET)
    assert not (tmp_path / "b" / GAME).exists()


async def test_an_unreachable_server_fails_after_its_retries(tmp_path: Path) -> None:
    entry = FileEntry(GAME, 10, "0" * 64, 1.0, "games")
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TransferFailed, match="gave up after 2 attempts: cannot reach the data server"):
        await transfer_file(url, entry, tmp_path / "b", SECRET, retries=2)
    with pytest.raises(ManifestUnavailable, match="cannot reach the data server"):
        await fetch_manifest(url, SECRET, timeout=2)


async def test_a_manifest_with_a_wrong_secret_is_unavailable(server: DataServer) -> None:
    with pytest.raises(ManifestUnavailable, match="HTTP 401 wrong signature"):
        await fetch_manifest(server.base_url, "not-the-cluster-secret")


def test_a_token_bucket_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)
    with pytest.raises(ValueError, match="bandwidth_limit_mbps must be positive"):
        TokenBucket.from_mbps(-1)
    assert TokenBucket.from_mbps(16).rate == 2_000_000


# -- the daemon ----------------------------------------------------------------------------------------


def test_daemon_settings_from_the_environment() -> None:
    settings = DataServerSettings.from_env({"RINGRIFT_CLUSTER_SECRET": "s", "RINGRIFT_NODE_ID": "n1"})
    assert (settings.data_dir, settings.host, settings.port, settings.secret, settings.node_id) == \
        (Path("data"), "127.0.0.1", 8791, "s", "n1")
    env = {"RINGRIFT_DATA_DIR": "/srv/data", "RINGRIFT_DATA_PORT": "9000", "RINGRIFT_DATA_HOST": "0.0.0.0"}
    assert DataServerSettings.from_env(env) == DataServerSettings(Path("/srv/data"), "", "0.0.0.0", 9000,
                                                                  DataServerSettings.from_env(env).node_id)
    with pytest.raises(ValueError, match="RINGRIFT_DATA_PORT='web' is not a port number"):
        DataServerSettings.from_env({"RINGRIFT_DATA_PORT": "web"})
    with pytest.raises(ValueError, match="RINGRIFT_DATA_PORT=70000"):
        DataServerSettings.from_env({"RINGRIFT_DATA_PORT": "70000"})
    with pytest.raises(ValueError, match="RINGRIFT_CLUSTER_SECRET"):
        DataServerDaemon(DataServerSettings.from_env({}))
    assert "s3cret" not in repr(DataServerSettings(secret="s3cret"))


class NoEvents:
    """The manager's lifecycle events go nowhere (this test is about the daemon, not the buses)."""

    async def publish(self, event_type: str, payload: Mapping[str, Any] | None = None, source: str = "",
                      **options: Any) -> None:
        return None


async def test_the_daemon_serves_under_the_manager(tmp_path: Path) -> None:
    config = DaemonManagerConfig(shutdown_timeout=1.0, force_kill_timeout=0.5, dependency_wait_timeout=0.5)
    manager = DaemonManager(config, router=NoEvents(), state_path=tmp_path / "s.json", health_check_timeout=0.5)
    write(tmp_path / "data" / GAME, b"game records")
    manager.register_factory(DaemonType.DATA_SERVER,
                             data_server.factory(data_dir=tmp_path / "data", secret=SECRET, port=0, node_id="n1"))
    assert await manager.start(DaemonType.DATA_SERVER)
    info = manager.get_daemon_info(DaemonType.DATA_SERVER)
    for _ in range(100):
        if info is not None and info.instance is not None:
            break
        await asyncio.sleep(0.01)
    daemon: DataServerDaemon = info.instance  # type: ignore[union-attr]
    port = await daemon.started()
    manifest = await fetch_manifest(f"http://127.0.0.1:{port}", SECRET)
    assert [e.path for e in manifest.files] == [GAME] and manifest.node_id == "n1"
    health = daemon.health_check()
    assert health.healthy and health.details["port"] == port and health.details["requests"] == 1
    assert await manager.shutdown(timeout=2.0, force=True)
    assert not daemon.health_check().details["port"]
    with pytest.raises(ManifestUnavailable):
        await fetch_manifest(f"http://127.0.0.1:{port}", SECRET, timeout=2)
