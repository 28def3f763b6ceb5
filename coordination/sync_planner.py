"""What a node lacks compared with its peers, and from whom to pull each file: a pure function.

    plan = plan_pulls(local_manifest, [PeerHolding("a", "http://a:8791", manifest_a), ...],
                      SyncFilter.of(["games"], board_type="hex8"), load={"a": 1})
    for pull in plan: pull.entry, pull.source, pull.alternatives

Rules:
* A path is one file cluster-wide; its freshest version (largest mtime, then SHA-256 for a stable
  tie-break) among the candidate peers is the one to hold. The node lacks a path when it has no file
  there, or a file with other content and an older mtime (a newer local file is kept: it is the
  fresher one, and its holder's peers will pull it in turn). Producers therefore give their files
  node-unique names (`selfplay_hex8_2p_<node>.db`): two nodes writing one path would overwrite each
  other, newest wins.
* Candidates are the peers other than this node, minus `exclude`, and only `sources` when given.
* The source of a pull is the holder of that exact version with the least load (transfers this node
  runs from it, plus what it announced, plus the pulls this plan gave it already), ties broken by a
  hash of (this node, path, holder) so that many nodes pulling one file spread over its holders.
  The other holders are `alternatives`, tried in order when the source fails.
* `SyncFilter` keeps data types, board type, number of players (from the file's config key; a file
  without one passes only when neither is asked) and, when given, an explicit set of paths.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from coordination.sync_manifest import DATA_TYPES, FileEntry, Manifest, parse_config_key

__all__ = ["PeerHolding", "PlannedPull", "SyncFilter", "plan_pulls"]


@dataclass(frozen=True)
class SyncFilter:
    data_types: frozenset[str] = frozenset(DATA_TYPES)
    board_type: str | None = None
    num_players: int | None = None
    paths: frozenset[str] | None = None

    @classmethod
    def of(cls, data_types: Iterable[str], *, board_type: str | None = None, num_players: int | None = None,
           paths: Iterable[str] | None = None) -> SyncFilter:
        return cls(frozenset(data_types), board_type, num_players, None if paths is None else frozenset(paths))

    def accepts(self, entry: FileEntry) -> bool:
        if entry.data_type not in self.data_types:
            return False
        if self.paths is not None and entry.path not in self.paths:
            return False
        if self.board_type is None and self.num_players is None:
            return True
        parsed = parse_config_key(entry.path)
        if parsed is None:
            return False
        board_type, num_players = parsed
        return (self.board_type in (None, board_type)) and (self.num_players in (None, num_players))


@dataclass(frozen=True)
class PeerHolding:
    node_id: str
    base_url: str
    manifest: Manifest
    load: int = 0  # transfers the peer announced it is running


@dataclass(frozen=True)
class PlannedPull:
    entry: FileEntry
    source: str
    base_url: str
    alternatives: tuple[tuple[str, str], ...] = ()  # (node id, base url) of other holders, best first

    @property
    def key(self) -> tuple[str, str]:
        """What makes two pulls the same transfer: the path and the version's hash."""
        return self.entry.path, self.entry.sha256


def _spread(node_id: str, path: str, holder: str) -> str:
    return hashlib.sha256(f"{node_id}\0{path}\0{holder}".encode()).hexdigest()


def _lacks(local: FileEntry | None, freshest: FileEntry) -> bool:
    if local is None:
        return True
    return local.sha256 != freshest.sha256 and freshest.mtime > local.mtime


def plan_pulls(local: Manifest, peers: Sequence[PeerHolding], flt: SyncFilter, *,
               sources: Collection[str] | None = None, exclude: Collection[str] = (),
               load: Mapping[str, int] | None = None) -> list[PlannedPull]:
    """The pulls that bring `local` up to date with its peers, ordered by path (module docstring)."""
    load = load or {}
    candidates = [p for p in peers if p.node_id != local.node_id and p.node_id not in exclude
                  and (sources is None or p.node_id in sources)]
    versions: dict[str, list[tuple[FileEntry, PeerHolding]]] = {}
    for peer in candidates:
        for entry in peer.manifest.files:
            if flt.accepts(entry):
                versions.setdefault(entry.path, []).append((entry, peer))
    mine = local.by_path()
    assigned: Counter[str] = Counter()  # pulls of this plan per holder: one plan spreads over holders too
    plan: list[PlannedPull] = []
    for path in sorted(versions):
        held = versions[path]
        freshest = max((entry for entry, _ in held), key=lambda e: (e.mtime, e.sha256))
        if not _lacks(mine.get(path), freshest):
            continue
        holders = sorted((peer for entry, peer in held if entry.sha256 == freshest.sha256),
                         key=lambda p: (load.get(p.node_id, 0) + p.load + assigned[p.node_id],
                                        _spread(local.node_id, path, p.node_id)))
        best, rest = holders[0], holders[1:]
        assigned[best.node_id] += 1
        plan.append(PlannedPull(freshest, best.node_id, best.base_url,
                                tuple((p.node_id, p.base_url) for p in rest)))
    return plan
