"""SyncRequest / SyncResponse shapes and defaults, bad input, and the backend selection in exactly
the API reference's order (ephemeral, priority, targets, default)."""

from __future__ import annotations

import itertools
import uuid

import pytest

from coordination.sync_request import (
    PRIORITIES,
    SyncBackend,
    SyncRequest,
    SyncRequestError,
    SyncResponse,
    select_backend,
)


def test_backend_values_are_the_references() -> None:
    assert {b.name: b.value for b in SyncBackend} == {
        "AUTO_SYNC": "auto_sync", "CLUSTER_SYNC": "cluster_data_sync", "DISTRIBUTED": "distributed",
        "EPHEMERAL": "ephemeral_sync", "ROUTER": "router"}


def test_request_defaults_are_the_references() -> None:
    request = SyncRequest()
    assert (request.data_type, request.targets, request.board_type, request.num_players, request.priority,
            request.timeout_seconds, request.bandwidth_limit_mbps, request.exclude_nodes, request.prefer_ephemeral,
            request.require_confirmation) == ("games", None, None, None, "normal", 300.0, None, [], False, False)
    assert request.sources is None and request.paths is None
    assert uuid.UUID(request.request_id) and SyncRequest().request_id != request.request_id
    assert SyncRequest(data_type="all").data_types == ("games", "models", "npz")


@pytest.mark.parametrize(("fields", "message"), [
    ({"data_type": "videos"}, "data_type 'videos': use one of games, models, npz, all"),
    ({"priority": "urgent"}, "priority 'urgent': use one of low, normal, high, critical"),
    ({"timeout_seconds": 0}, "timeout_seconds must be > 0 (got 0)"),
    ({"bandwidth_limit_mbps": -5}, "bandwidth_limit_mbps must be > 0 or None (got -5)"),
    ({"num_players": 0}, "num_players must be a positive integer (got 0)"),
    ({"targets": ["b", ""]}, "targets must be a list of non-empty names (got ['b', ''])"),
])
def test_bad_requests_say_what_is_accepted(fields: dict[str, object], message: str) -> None:
    with pytest.raises(SyncRequestError) as caught:
        SyncRequest(**fields)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_coerce_takes_a_request_a_dict_or_a_data_type_with_overrides() -> None:
    assert SyncRequest.coerce("models", targets="node-1").targets == ["node-1"]
    assert SyncRequest.coerce({"data_type": "npz", "priority": "high"}).priority == "high"
    base = SyncRequest(data_type="games", request_id="r1")
    assert SyncRequest.coerce(base) is base
    assert SyncRequest.coerce(base, board_type="hex8").board_type == "hex8"
    with pytest.raises(SyncRequestError, match="unknown sync request field"):
        SyncRequest.coerce("games", colour="red")
    with pytest.raises(SyncRequestError, match="not int"):
        SyncRequest.coerce(42)  # type: ignore[arg-type]


def test_explicit_targets_exclude_none_empty_and_all() -> None:
    assert SyncRequest(targets=None).explicit_targets is None
    assert SyncRequest(targets=[]).explicit_targets is None
    assert SyncRequest(targets=["all"]).explicit_targets is None
    assert SyncRequest(targets=["all", "b"]).explicit_targets == ["all", "b"]


def _expected(ephemeral: bool, priority: str, targets: list[str] | None) -> SyncBackend:
    """The reference's list, read top to bottom."""
    if ephemeral:
        return SyncBackend.EPHEMERAL
    if priority in ("high", "critical"):
        return SyncBackend.CLUSTER_SYNC
    if targets and targets != ["all"]:
        return SyncBackend.ROUTER
    return SyncBackend.AUTO_SYNC


@pytest.mark.parametrize(("node", "prefer", "priority", "targets"), list(itertools.product(
    [False, True], [False, True], PRIORITIES, [None, [], ["all"], ["node-1", "node-2"]])))
def test_selection_follows_the_reference_order(node: bool, prefer: bool, priority: str,
                                               targets: list[str] | None) -> None:
    request = SyncRequest(prefer_ephemeral=prefer, priority=priority, targets=targets)
    assert select_backend(request, ephemeral_node=node) is _expected(node or prefer, priority, targets)


def test_selection_examples_of_the_reference() -> None:
    assert select_backend(SyncRequest("games")) is SyncBackend.AUTO_SYNC
    assert select_backend(SyncRequest("models", targets=["node-1", "node-2"])) is SyncBackend.ROUTER
    assert select_backend(SyncRequest("games", board_type="hex8", priority="high")) is SyncBackend.CLUSTER_SYNC
    assert select_backend(SyncRequest("games", targets=["b"], priority="critical",
                                      prefer_ephemeral=True)) is SyncBackend.EPHEMERAL


def test_response_shape() -> None:
    response = SyncResponse(success=False, backend_used=SyncBackend.ROUTER, nodes_synced=1, bytes_transferred=10,
                            duration_seconds=0.5, errors=["c: no answer"], details={"request_id": "r"})
    assert response.to_dict() == {"success": False, "backend_used": "router", "nodes_synced": 1,
                                  "bytes_transferred": 10, "duration_seconds": 0.5, "errors": ["c: no answer"],
                                  "details": {"request_id": "r"}}
    assert SyncResponse(True, SyncBackend.AUTO_SYNC).errors == []
