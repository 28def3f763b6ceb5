"""What a node's data directory holds: the manifest the data plane serves and compares.

A data directory has three kinds of files, one folder each:

    <data_dir>/games/   SQLite game databases        data_type "games"
    <data_dir>/models/  model checkpoints            data_type "models"
    <data_dir>/npz/     training files               data_type "npz"

`ManifestBuilder(data_dir, node_id).scan()` lists them as `FileEntry`s (path relative to the data
directory, posix, e.g. "games/hex8_2p.db"; size; SHA-256; mtime; data type; config key). Left out:
hidden files and folders (a name starting with "."), transfers in progress (`*.part`), SQLite's
companion files (`*-wal`, `*-shm`, `*-journal`: the main file alone is the consistent copy), anything
but regular files, symlinks whose target lies outside the data directory, and files that change while
they are hashed (they join the next scan).

Hashes are cached by (path, size, mtime_ns): in memory, and in `<data_dir>/.sync-cache.json` so a
restarted node does not re-read its GBs. Hashing runs in a worker thread, 1 MiB at a time.

Config keys (`parse_config_key`): the file name's stem (text before the first ".") is split on "_";
the first token of the form `<n>p` (n a positive integer) whose preceding token is a board type
(a lowercase letter followed by lowercase letters and digits) gives (board type, n). So
`hex8_2p.db`, `canonical_hex8_2p.db`, `selfplay_hex8_2p_0007.db` -> ("hex8", 2),
`model_square19_4p_v3.pth` -> ("square19", 4); `notes.txt` and `hex8.db` -> None.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import re
import time
from pathlib import Path, PurePosixPath
from typing import Any, Literal, get_args

import msgspec

__all__ = ["CACHE_FILE", "DATA_TYPES", "DataType", "FileEntry", "Manifest", "ManifestBuilder", "decode_manifest",
           "encode_manifest", "is_syncable", "parse_config_key", "safe_data_path"]

log = logging.getLogger(__name__)

DataType = Literal["games", "models", "npz"]
DATA_TYPES: tuple[str, ...] = get_args(DataType)
CACHE_FILE = ".sync-cache.json"
_HASH_CHUNK = 1 << 20
_SKIPPED_SUFFIXES = (".part", "-wal", "-shm", "-journal")
_BOARD = re.compile(r"[a-z][a-z0-9]*")
_PLAYERS = re.compile(r"([1-9][0-9]*)p")


def parse_config_key(filename: str) -> tuple[str, int] | None:
    """(board type, number of players) named by a file name, or None (the rule is in the module docstring)."""
    tokens = PurePosixPath(filename).name.split(".", 1)[0].split("_")
    for before, token in itertools.pairwise(tokens):
        players = _PLAYERS.fullmatch(token)
        if players and _BOARD.fullmatch(before):
            return before, int(players.group(1))
    return None


def is_syncable(relative: str) -> bool:
    """Whether a relative posix path names a file the data plane lists and serves (symlinks aside)."""
    parts = relative.split("/")
    if len(parts) < 2 or parts[0] not in DATA_TYPES:
        return False
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return False
    return not parts[-1].endswith(_SKIPPED_SUFFIXES)


def safe_data_path(data_dir: str | os.PathLike[str], relative: str) -> Path:
    """`data_dir / relative` for a syncable relative path; ValueError for anything else (absolute
    paths, `..`, hidden parts, backslashes, NUL, folders other than games/models/npz)."""
    if "\\" in relative or "\0" in relative or relative.startswith("/") or not is_syncable(relative):
        raise ValueError(f"{relative!r} is not a path inside the data directory's games/, models/ or npz/")
    return Path(data_dir, *relative.split("/"))


class FileEntry(msgspec.Struct, frozen=True):
    path: str
    size: int
    sha256: str
    mtime: float
    data_type: DataType
    config_key: str | None = None


class Manifest(msgspec.Struct):
    node_id: str
    files: list[FileEntry]
    generated_at: float

    def by_path(self) -> dict[str, FileEntry]:
        return {entry.path: entry for entry in self.files}

    @property
    def digest(self) -> str:
        """A stable hash of what the files are (path, size, content), independent of order and mtimes."""
        h = hashlib.sha256()
        for entry in sorted(self.files, key=lambda e: e.path):
            h.update(f"{entry.path}\0{entry.size}\0{entry.sha256}\n".encode())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """Counts and bytes per data type and, within each, per config key ("other" when a name has none)."""
        types: dict[str, dict[str, Any]] = {}
        for entry in self.files:
            per_type = types.setdefault(entry.data_type, {"files": 0, "bytes": 0, "configs": {}})
            per_type["files"] += 1
            per_type["bytes"] += entry.size
            per_config = per_type["configs"].setdefault(entry.config_key or "other", {"files": 0, "bytes": 0})
            per_config["files"] += 1
            per_config["bytes"] += entry.size
        return {"node_id": self.node_id, "generated_at": self.generated_at, "digest": self.digest,
                "files": len(self.files), "bytes": sum(e.size for e in self.files), "data_types": types}


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Manifest)


def encode_manifest(manifest: Manifest) -> bytes:
    return _encoder.encode(manifest)


def decode_manifest(data: bytes | str) -> Manifest:
    """A manifest from JSON; msgspec.ValidationError / DecodeError name the bad field."""
    return _decoder.decode(data)


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sha256_and_stat(path: str) -> tuple[str, os.stat_result]:
    digest = _sha256_file(path)
    return digest, os.stat(path)


_CacheKey = tuple[str, int, int]  # (relative path, size, mtime_ns)


class ManifestBuilder:
    """Scans a data directory into a `Manifest`, hashing only files that are new or changed."""

    def __init__(self, data_dir: str | os.PathLike[str], node_id: str) -> None:
        self.data_dir = Path(data_dir)
        self.node_id = node_id
        self.hashes_computed = 0  # files read to hash them, over this builder's life
        self._cache: dict[_CacheKey, str] | None = None
        self._saved: dict[_CacheKey, str] = {}  # what the cache file holds
        self._lock = asyncio.Lock()

    async def scan(self) -> Manifest:
        async with self._lock:
            await self._load()
            found = await asyncio.to_thread(self._walk)
            entries: list[FileEntry] = []
            fresh: dict[_CacheKey, str] = {}
            for relative, absolute, st in found:
                key = (relative, st.st_size, st.st_mtime_ns)
                digest = self._cache.get(key)
                if digest is None:
                    digest = await self._hash_if_stable(absolute, st)
                    if digest is None:
                        continue
                fresh[key] = digest
                entries.append(self._entry(relative, st, digest))
            self._cache = fresh
            if fresh != self._saved:
                await asyncio.to_thread(self._save_cache, fresh)
                self._saved = dict(fresh)
            return Manifest(node_id=self.node_id, files=entries, generated_at=time.time())

    async def remember(self, entry: FileEntry) -> None:
        """Note the hash of a file this node just installed and verified (a transfer), so the next
        scan does not read it again. Ignored when the file on disk is not `entry.size` bytes."""
        async with self._lock:
            await self._load()
            try:
                st = await asyncio.to_thread(os.stat, safe_data_path(self.data_dir, entry.path))
            except (OSError, ValueError):
                return
            if st.st_size == entry.size:
                self._cache[(entry.path, st.st_size, st.st_mtime_ns)] = entry.sha256

    async def _load(self) -> None:
        if self._cache is None:
            self._saved = await asyncio.to_thread(self._load_cache)
            self._cache = dict(self._saved)

    async def _hash_if_stable(self, absolute: str, before: os.stat_result) -> str | None:
        try:
            digest, after = await asyncio.to_thread(_sha256_and_stat, absolute)
        except OSError as exc:
            log.debug("skipping %s: %s", absolute, exc)
            return None
        self.hashes_computed += 1
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            log.debug("skipping %s: it changed while it was hashed", absolute)
            return None
        return digest

    @staticmethod
    def _entry(relative: str, st: os.stat_result, digest: str) -> FileEntry:
        parsed = parse_config_key(relative)
        return FileEntry(path=relative, size=st.st_size, sha256=digest, mtime=st.st_mtime,
                         data_type=relative.split("/", 1)[0],  # type: ignore[arg-type]
                         config_key=f"{parsed[0]}_{parsed[1]}p" if parsed else None)

    def _walk(self) -> list[tuple[str, str, os.stat_result]]:
        """(relative path, absolute path, stat) of every syncable regular file, sorted by path."""
        root = os.path.realpath(self.data_dir)
        found: list[tuple[str, str, os.stat_result]] = []
        seen_dirs: set[str] = set()

        def visit(directory: str, relative: str) -> None:
            real = os.path.realpath(directory)
            if real in seen_dirs:
                return
            seen_dirs.add(real)
            try:
                entries = list(os.scandir(directory))
            except OSError:
                return
            for item in entries:
                rel = f"{relative}/{item.name}"
                if not is_syncable(rel):
                    continue
                if item.is_symlink() and not os.path.realpath(item.path).startswith(root + os.sep):
                    continue
                try:
                    if item.is_dir():
                        visit(item.path, rel)
                    elif item.is_file():
                        found.append((rel, item.path, os.stat(item.path)))
                except OSError:
                    continue

        for data_type in DATA_TYPES:
            top = os.path.join(root, data_type)
            if os.path.isdir(top) and os.path.realpath(top).startswith(root + os.sep):
                visit(top, data_type)
        return sorted(found)

    def _load_cache(self) -> dict[_CacheKey, str]:
        try:
            raw = json.loads((self.data_dir / CACHE_FILE).read_text())
            return {(path, int(size), int(mtime_ns)): str(digest)
                    for path, (size, mtime_ns, digest) in raw["files"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the hash cache %s: %s", self.data_dir / CACHE_FILE, exc)
            return {}

    def _save_cache(self, cache: dict[_CacheKey, str]) -> None:
        files = {path: [size, mtime_ns, digest] for (path, size, mtime_ns), digest in cache.items()}
        body = {"version": 1, "files": files}
        target = self.data_dir / CACHE_FILE
        temporary = target.with_name(f"{CACHE_FILE}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps(body))
            os.replace(temporary, target)
        except OSError as exc:
            log.warning("cannot write the hash cache %s: %s", target, exc)
