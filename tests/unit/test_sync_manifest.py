"""The data directory's manifest: config keys from names, what a scan lists and leaves out, hash caching
(counted), the digest and summary, the JSON form."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import pytest

from coordination import sync_manifest
from coordination.sync_manifest import (
    CACHE_FILE,
    FileEntry,
    Manifest,
    ManifestBuilder,
    decode_manifest,
    encode_manifest,
    parse_config_key,
    safe_data_path,
)


@pytest.mark.parametrize(("name", "expected"), [
    ("hex8_2p.db", ("hex8", 2)),
    ("canonical_hex8_2p.db", ("hex8", 2)),
    ("games/selfplay_hex8_2p_0007.db", ("hex8", 2)),
    ("model_square19_4p_v3.pth", ("square19", 4)),
    ("hexagonal_3p.npz", ("hexagonal", 3)),
    ("square8_2p.db.bak", ("square8", 2)),
    ("notes.txt", None),
    ("hex8.db", None),
    ("2p.db", None),
    ("Hex8_2p.db", None),
    ("hex8_0p.db", None),
])
def test_config_key_from_the_file_name(name: str, expected: tuple[str, int] | None) -> None:
    assert parse_config_key(name) == expected


@pytest.mark.parametrize("relative", ["../x.db", "games/../../x.db", "/etc/passwd", "games/.hidden.db",
                                      "games/a.db.part", "other/a.db", "games", "games/", "games\\..\\x.db",
                                      "games/a\0.db", ".sync-cache.json", "games/./a.db"])
def test_safe_data_path_refuses_anything_outside_the_data_folders(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ValueError, match="not a path inside the data directory"):
        safe_data_path(tmp_path, relative)


def test_safe_data_path_accepts_nested_data_files(tmp_path: Path) -> None:
    assert safe_data_path(tmp_path, "games/synced/hex8_2p.db") == tmp_path / "games" / "synced" / "hex8_2p.db"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write(root / "games" / "hex8_2p.db", b"games" * 1000)
    write(root / "games" / "synced" / "canonical_square8_3p.db", b"synced")
    write(root / "models" / "model_square19_4p_v3.pth", b"weights" * 300)
    write(root / "npz" / "notes.npz", b"npz")
    # left out: hidden, in-progress, SQLite companions, outside the three folders, symlinks out
    write(root / "games" / ".hidden.db", b"x")
    write(root / ".git" / "games" / "a.db", b"x")
    write(root / "games" / "hex8_2p.db.part", b"partial")
    write(root / "games" / "hex8_2p.db-wal", b"wal")
    write(root / "games" / "hex8_2p.db-journal", b"journal")
    write(root / "stray.db", b"x")
    outside = write(tmp_path / "outside" / "secret_hex8_2p.db", b"secret")
    (root / "games" / "escape_hex8_2p.db").symlink_to(outside)
    (root / "npz" / "escape_dir").symlink_to(outside.parent, target_is_directory=True)
    (root / "npz" / "alias_square19_4p.pth").symlink_to(root / "models" / "model_square19_4p_v3.pth")
    return root


async def test_a_scan_lists_the_data_files_with_hashes_types_and_config_keys(data_dir: Path) -> None:
    manifest = await ManifestBuilder(data_dir, "node-a").scan()
    files = manifest.by_path()
    assert sorted(files) == ["games/hex8_2p.db", "games/synced/canonical_square8_3p.db",
                             "models/model_square19_4p_v3.pth", "npz/alias_square19_4p.pth", "npz/notes.npz"]
    game = files["games/hex8_2p.db"]
    content = (data_dir / "games" / "hex8_2p.db").read_bytes()
    assert (game.size, game.sha256, game.data_type, game.config_key) == \
        (len(content), hashlib.sha256(content).hexdigest(), "games", "hex8_2p")
    assert game.mtime == (data_dir / "games" / "hex8_2p.db").stat().st_mtime
    assert files["games/synced/canonical_square8_3p.db"].config_key == "square8_3p"
    assert files["models/model_square19_4p_v3.pth"].data_type == "models"
    assert files["npz/alias_square19_4p.pth"].sha256 == files["models/model_square19_4p_v3.pth"].sha256
    assert files["npz/notes.npz"].config_key is None
    assert manifest.node_id == "node-a"


async def test_a_second_scan_reads_no_file_again_and_a_changed_file_is_rehashed(data_dir: Path) -> None:
    builder = ManifestBuilder(data_dir, "node-a")
    first = await builder.scan()
    assert builder.hashes_computed == 5
    assert (await builder.scan()).files == first.files
    assert builder.hashes_computed == 5
    game = data_dir / "games" / "hex8_2p.db"
    game.write_bytes(b"new content")
    third = await builder.scan()
    assert builder.hashes_computed == 6
    assert third.by_path()["games/hex8_2p.db"].sha256 == hashlib.sha256(b"new content").hexdigest()


async def test_a_restarted_node_reuses_the_cache_file(data_dir: Path) -> None:
    first = await ManifestBuilder(data_dir, "node-a").scan()
    assert (data_dir / CACHE_FILE).exists()
    restarted = ManifestBuilder(data_dir, "node-a")
    again = await restarted.scan()
    assert restarted.hashes_computed == 0
    assert again.files == first.files


async def test_a_corrupt_cache_file_is_ignored_with_a_warning(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    (data_dir / CACHE_FILE).write_text("{not json")
    builder = ManifestBuilder(data_dir, "node-a")
    manifest = await builder.scan()
    assert builder.hashes_computed == 5 and len(manifest.files) == 5
    assert "ignoring the hash cache" in caplog.text
    assert json.loads((data_dir / CACHE_FILE).read_text())["version"] == 1


async def test_a_file_that_changes_while_it_is_hashed_waits_for_the_next_scan(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = sync_manifest._sha256_file
    game = data_dir / "games" / "hex8_2p.db"

    def growing(path: str) -> str:
        digest = real(path)
        if path.endswith("hex8_2p.db"):
            with open(game, "ab") as f:
                f.write(b"more")
        return digest

    monkeypatch.setattr(sync_manifest, "_sha256_file", growing)
    builder = ManifestBuilder(data_dir, "node-a")
    assert "games/hex8_2p.db" not in (await builder.scan()).by_path()
    monkeypatch.setattr(sync_manifest, "_sha256_file", real)
    entry = (await builder.scan()).by_path()["games/hex8_2p.db"]
    assert entry.sha256 == hashlib.sha256(game.read_bytes()).hexdigest()


async def test_an_installed_file_that_was_remembered_is_not_hashed_again(data_dir: Path) -> None:
    builder = ManifestBuilder(data_dir, "node-a")
    await builder.scan()
    body = b"pulled from a peer"
    write(data_dir / "npz" / "hex8_2p.npz", body)
    await builder.remember(FileEntry("npz/hex8_2p.npz", len(body), hashlib.sha256(body).hexdigest(), 0.0, "npz"))
    manifest = await builder.scan()
    assert builder.hashes_computed == 5
    assert manifest.by_path()["npz/hex8_2p.npz"].sha256 == hashlib.sha256(body).hexdigest()
    assert ManifestBuilder(data_dir, "node-a")._load_cache() == builder._cache


async def test_a_missing_data_directory_gives_an_empty_manifest(tmp_path: Path) -> None:
    manifest = await ManifestBuilder(tmp_path / "absent", "node-a").scan()
    assert manifest.files == [] and manifest.summary()["files"] == 0


def entry(path: str, body: bytes, config_key: str | None = None, mtime: float = 1.0) -> FileEntry:
    data_type = path.split("/", 1)[0]
    return FileEntry(path, len(body), hashlib.sha256(body).hexdigest(), mtime, data_type, config_key)  # type: ignore[arg-type]


def test_the_digest_depends_on_content_not_order_or_mtime() -> None:
    a, b = entry("games/hex8_2p.db", b"a", "hex8_2p"), entry("models/m.pth", b"b")
    digest = Manifest("n", [a, b], 1.0).digest
    assert Manifest("n", [b, a], 2.0).digest == digest
    assert Manifest("n", [entry("games/hex8_2p.db", b"a", "hex8_2p", mtime=9.0), b], 1.0).digest == digest
    assert Manifest("n", [entry("games/hex8_2p.db", b"A", "hex8_2p"), b], 1.0).digest != digest
    assert Manifest("n", [a], 1.0).digest != digest


def test_the_summary_counts_files_and_bytes_per_type_and_config() -> None:
    manifest = Manifest("n", [entry("games/hex8_2p.db", b"12345", "hex8_2p"),
                              entry("games/canonical_hex8_2p.db", b"123", "hex8_2p"),
                              entry("games/misc.db", b"1"),
                              entry("models/m_square8_2p.pth", b"1234567", "square8_2p")], 5.0)
    summary = manifest.summary()
    assert summary["files"] == 4 and summary["bytes"] == 16 and summary["digest"] == manifest.digest
    assert summary["data_types"] == {
        "games": {"files": 3, "bytes": 9, "configs": {"hex8_2p": {"files": 2, "bytes": 8},
                                                       "other": {"files": 1, "bytes": 1}}},
        "models": {"files": 1, "bytes": 7, "configs": {"square8_2p": {"files": 1, "bytes": 7}}},
    }
    assert json.loads(json.dumps(summary)) == summary


def test_the_manifest_round_trips_as_json_and_bad_json_names_the_field() -> None:
    manifest = Manifest("n", [entry("games/hex8_2p.db", b"x", "hex8_2p")], 5.0)
    assert decode_manifest(encode_manifest(manifest)) == manifest
    bad = json.loads(encode_manifest(manifest))
    bad["files"][0]["data_type"] = "videos"
    with pytest.raises(msgspec.ValidationError, match=r"files\[0\]\.data_type"):
        decode_manifest(json.dumps(bad))
    with pytest.raises(msgspec.DecodeError):
        decode_manifest(b"<html>")

