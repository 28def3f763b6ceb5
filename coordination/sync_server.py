"""The data plane's server: a node's data directory over HTTP (aiohttp), every request signed.

    GET  /healthz            200 {"ok": true, "node_id"}; the only unsigned route
    GET  /sync/manifest      200 the node's `Manifest` as JSON (see coordination/sync_manifest.py); while
                             new files are still being hashed after `manifest_wait_s`, the previous one
    GET  /sync/file/{path}   the file's bytes; `Range: bytes=a-b` gives 206 with Content-Range, an
    HEAD /sync/file/{path}   unsatisfiable range 416 with `Content-Range: bytes */size`
    errors                   JSON {"error": ...}: 401 unsigned, stale or wrong signature (sync_auth);
                             403 a path that leaves the data directory (`..`, absolute, a symlink out);
                             404 no such syncable file (hidden, `*.part`, outside games/models/npz)

Bodies go out with aiohttp's FileResponse (sendfile, nothing read into memory). The request's
Accept-Encoding is dropped before it, so a `foo.db.gz` beside `foo.db` is never sent in its place.
The signature covers the raw request target, so percent-encoded traversal (`%2e%2e`) is checked after
decoding, like a plain one.

    server = DataServer("/data", secret, "node-a")        # ValueError when the secret is empty
    port = await server.start()                            # port=0 binds an ephemeral port
    ... server.base_url ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDict

from coordination.sync_auth import AuthError, require_secret, verify
from coordination.sync_manifest import DATA_TYPES, Manifest, ManifestBuilder, encode_manifest, safe_data_path

__all__ = ["DataServer"]

log = logging.getLogger(__name__)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class _IdentityFileResponse(web.FileResponse):
    """A FileResponse that ignores Accept-Encoding (never swaps in a precompressed sibling file) and
    reports the body bytes it sent."""

    def __init__(self, path: str, on_sent: Callable[[int], None]) -> None:
        super().__init__(path, headers={hdrs.CONTENT_TYPE: "application/octet-stream"})
        self._on_sent = on_sent

    async def prepare(self, request: web.BaseRequest) -> Any:
        headers = CIMultiDict(request.headers)
        headers.popall(hdrs.ACCEPT_ENCODING, None)
        writer = await super().prepare(request.clone(headers=headers))
        if request.method == "GET" and self.status in (200, 206):
            self._on_sent(self.content_length or 0)
        return writer


class DataServer:
    """Serves `data_dir` to peers holding the cluster secret."""

    def __init__(self, data_dir: str | os.PathLike[str], secret: str | bytes | None, node_id: str,
                 host: str = "127.0.0.1", port: int = 0, *, max_skew_s: float = 60,
                 manifest_wait_s: float = 1.0) -> None:
        self._secret = require_secret(secret)
        self.data_dir = Path(data_dir)
        self.node_id = node_id
        self.host = host
        self.port: int | None = None
        self._requested_port = port
        self._max_skew_s = max_skew_s
        self.builder = ManifestBuilder(self.data_dir, node_id)
        self._manifest_wait_s = manifest_wait_s
        self._last_manifest: Manifest | None = None
        self._scan: asyncio.Task[Manifest] | None = None
        self.stats = {"requests": 0, "files_served": 0, "bytes_served": 0, "auth_failures": 0, "refused_paths": 0}
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the data server is not listening (await start() first)")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> int:
        """Listen; the bound port."""
        for data_type in DATA_TYPES:
            (self.data_dir / data_type).mkdir(parents=True, exist_ok=True)
        app = web.Application(middlewares=[self._signed_and_json_errors])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/sync/manifest", self._manifest)
        app.router.add_get("/sync/file/{path:.+}", self._file)  # HEAD too (allow_head)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._requested_port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self.port = None
        if runner is not None:
            await runner.cleanup()
        if self._scan is not None:
            self._scan.cancel()

    async def manifest(self) -> Manifest:
        """A fresh scan, or the previous one while a scan still hashes new files after `manifest_wait_s`
        (so a peer asking while GBs arrive is not kept waiting); the first scan is always awaited."""
        if self._scan is None or self._scan.done():
            self._scan = asyncio.create_task(self.builder.scan(), name=f"manifest-scan-{self.node_id}")
        try:
            wait = None if self._last_manifest is None else self._manifest_wait_s
            self._last_manifest = await asyncio.wait_for(asyncio.shield(self._scan), wait)
        except TimeoutError:
            log.info("answering with the previous manifest while %s is hashing new files", self.data_dir)
        assert self._last_manifest is not None
        return self._last_manifest

    # -- HTTP ------------------------------------------------------------------------------------------

    @web.middleware
    async def _signed_and_json_errors(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        self.stats["requests"] += 1
        if request.path != "/healthz":
            try:
                verify(self._secret, request.method, request.raw_path, request.headers, time.time(),
                       self._max_skew_s)
            except AuthError as exc:
                self.stats["auth_failures"] += 1
                log.info("refused %s %s from %s: %s", request.method, request.raw_path[:200], request.remote,
                         exc.reason)
                return _error(401, exc.reason)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error(exc.status, exc.reason, path=request.path)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "node_id": self.node_id})

    async def _manifest(self, request: web.Request) -> web.Response:
        return web.Response(body=encode_manifest(await self.manifest()), content_type="application/json")

    async def _file(self, request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        try:
            real = await asyncio.to_thread(_locate, self.data_dir, relative)
        except _Refused as exc:
            if exc.status == 403:
                self.stats["refused_paths"] += 1
            return _error(exc.status, exc.message)
        return _IdentityFileResponse(real, self._sent)

    def _sent(self, size: int) -> None:
        self.stats["files_served"] += 1
        self.stats["bytes_served"] += size


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _locate(data_dir: Path, relative: str) -> str:
    """The real path of a servable file; _Refused(403) for a path leading out, (404) for no such file."""
    try:
        path = safe_data_path(data_dir, relative)
    except ValueError as exc:
        escapes = relative.startswith("/") or "\\" in relative or ".." in relative.split("/")
        raise _Refused(403 if escapes else 404, str(exc)) from None
    real = os.path.realpath(path)
    if not real.startswith(os.path.realpath(data_dir) + os.sep):
        raise _Refused(403, f"{relative!r} leads outside the data directory")
    if not os.path.isfile(real):
        raise _Refused(404, f"no file {relative!r}")
    return real
