"""What a node lacks and from whom it pulls: freshness, load, filters, sources and exclusions."""

from __future__ import annotations

from coordination.sync_manifest import FileEntry, Manifest, parse_config_key
from coordination.sync_planner import PeerHolding, SyncFilter, plan_pulls


def entry(path: str, sha: str = "s1", mtime: float = 100.0, size: int = 10) -> FileEntry:
    parsed = parse_config_key(path)
    return FileEntry(path=path, size=size, sha256=sha * 8, mtime=mtime, data_type=path.split("/")[0],
                     config_key=f"{parsed[0]}_{parsed[1]}p" if parsed else None)


def manifest(node: str, *entries: FileEntry) -> Manifest:
    return Manifest(node_id=node, files=list(entries), generated_at=0.0)


def peer(node: str, *entries: FileEntry, load: int = 0) -> PeerHolding:
    return PeerHolding(node, f"http://{node}", manifest(node, *entries), load)


ALL = SyncFilter()


def paths(plan: list) -> list[str]:
    return [p.entry.path for p in plan]


def test_a_node_pulls_what_it_lacks_and_nothing_it_holds() -> None:
    local = manifest("b", entry("games/hex8_2p.db"))
    plan = plan_pulls(local, [peer("a", entry("games/hex8_2p.db"), entry("models/m.pth"), entry("npz/x.npz"))], ALL)
    assert paths(plan) == ["models/m.pth", "npz/x.npz"]
    assert all(p.source == "a" and p.base_url == "http://a" for p in plan)


def test_the_freshest_version_wins_and_a_newer_local_file_is_kept() -> None:
    local = manifest("b", entry("models/m.pth", "old", mtime=50), entry("games/g.db", "mine", mtime=500))
    peers = [peer("a", entry("models/m.pth", "mid", mtime=100), entry("games/g.db", "theirs", mtime=200)),
             peer("c", entry("models/m.pth", "new", mtime=300))]
    plan = plan_pulls(local, peers, ALL)
    assert [(p.entry.path, p.entry.sha256[:3], p.source) for p in plan] == [("models/m.pth", "new", "c")]


def test_the_least_loaded_holder_is_the_source_and_the_others_are_alternatives() -> None:
    holders = [peer("a", entry("games/g.db")), peer("c", entry("games/g.db")), peer("d", entry("games/g.db"), load=5)]
    plan = plan_pulls(manifest("b"), holders, ALL, load={"a": 2})
    assert plan[0].source == "c"
    assert [node for node, _ in plan[0].alternatives] == ["a", "d"]


def test_one_plan_spreads_its_files_over_the_holders() -> None:
    files = [entry(f"games/g{i}.db") for i in range(4)]
    plan = plan_pulls(manifest("b"), [peer("a", *files), peer("c", *files)], ALL)
    assert sorted(p.source for p in plan) == ["a", "a", "c", "c"]


def test_sources_and_exclude_restrict_the_candidates_and_the_node_never_pulls_from_itself() -> None:
    peers = [peer("a", entry("games/from_a.db")), peer("c", entry("games/from_c.db")),
             peer("b", entry("games/from_b.db"))]
    assert paths(plan_pulls(manifest("b"), peers, ALL, sources=["c"])) == ["games/from_c.db"]
    assert paths(plan_pulls(manifest("b"), peers, ALL, exclude=["c"])) == ["games/from_a.db"]
    assert paths(plan_pulls(manifest("b"), peers, ALL)) == ["games/from_a.db", "games/from_c.db"]


def test_filters_by_data_type_board_players_and_paths() -> None:
    files = [entry("games/hex8_2p.db"), entry("games/hex8_3p.db"), entry("games/square8_2p.db"),
             entry("games/notes.db"), entry("models/hex8_2p.pth")]
    held = [peer("a", *files)]
    assert paths(plan_pulls(manifest("b"), held, SyncFilter.of(["games"], board_type="hex8"))) == \
        ["games/hex8_2p.db", "games/hex8_3p.db"]
    assert paths(plan_pulls(manifest("b"), held, SyncFilter.of(["games", "models"], num_players=2))) == \
        ["games/hex8_2p.db", "games/square8_2p.db", "models/hex8_2p.pth"]
    assert paths(plan_pulls(manifest("b"), held, SyncFilter.of(["games"]))) == \
        ["games/hex8_2p.db", "games/hex8_3p.db", "games/notes.db", "games/square8_2p.db"]
    assert paths(plan_pulls(manifest("b"), held, SyncFilter.of(["models", "games"], paths=["models/hex8_2p.pth"]))) \
        == ["models/hex8_2p.pth"]


def test_a_pull_is_keyed_by_path_and_version() -> None:
    plan = plan_pulls(manifest("b"), [peer("a", entry("games/g.db", "v1"))], ALL)
    assert plan[0].key == ("games/g.db", "v1" * 8)


def test_nothing_to_do() -> None:
    assert plan_pulls(manifest("b", entry("games/g.db")), [peer("a", entry("games/g.db"))], ALL) == []
    assert plan_pulls(manifest("b"), [], ALL) == []
