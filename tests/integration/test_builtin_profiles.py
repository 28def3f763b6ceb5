"""Every profile of implemented daemons starts cleanly on real Redis and Kafka, answers its probes
over HTTP, and shuts down; the registry's dependencies have no cycles."""

from __future__ import annotations

import aiohttp
import pytest

from coordination.config import RouterConfig
from coordination.daemon_manager import DaemonManager
from coordination.daemon_types import DaemonManagerConfig, DaemonState
from coordination.daemons.builtin import IMPLEMENTED_PROFILES, register_builtin_daemons
from coordination.event_router import UnifiedEventRouter
from tests.support import KAFKA_BOOTSTRAP, REDIS_URL, unique

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("profile", sorted(IMPLEMENTED_PROFILES))
async def test_profile_starts_cleanly_and_answers_probes(profile: str, kafka_service: str, tmp_path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # the sync daemons (DATA_SERVER, AUTO_SYNC, ...) read their data directory, port and secret here
    monkeypatch.setenv("RINGRIFT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RINGRIFT_DATA_PORT", "0")
    monkeypatch.setenv("RINGRIFT_CLUSTER_SECRET", "profile-test-secret")
    router = UnifiedEventRouter(RouterConfig.from_env(environ={
        "RINGRIFT_REDIS_URL": REDIS_URL, "RINGRIFT_KAFKA_BOOTSTRAP": KAFKA_BOOTSTRAP,
        "RINGRIFT_NAMESPACE": unique("prof"), "RINGRIFT_NODE_ID": "node-1"}))
    manager = DaemonManager(DaemonManagerConfig(), router=router, state_path=tmp_path / "state.json",
                            profiles=IMPLEMENTED_PROFILES)
    register_builtin_daemons(manager, router, port=0)
    try:
        results = await manager.start_all(profile=profile)
        assert results == dict.fromkeys(IMPLEMENTED_PROFILES[profile], True)
        assert all(manager.get_daemon_info(t).state is DaemonState.RUNNING for t in results)
        assert manager.liveness_probe()
        if "HEALTH_SERVER" in {t.name for t in results}:
            server = manager.get_daemon_info("HEALTH_SERVER").instance
            port = await server.started()
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as reply:
                    assert reply.status == 200
                async with http.get(f"http://127.0.0.1:{port}/metrics") as reply:
                    assert "ringrift_daemon_state" in await reply.text()
    finally:
        assert await manager.shutdown(timeout=15.0, force=True)
        await router.stop()


def test_builtin_registry_has_no_dependency_cycle_and_profiles_name_registered_daemons(tmp_path) -> None:
    from coordination.daemon_graph import find_cycle

    manager = DaemonManager(DaemonManagerConfig(), persist=False, profiles=IMPLEMENTED_PROFILES)
    register_builtin_daemons(manager, lambda: None)  # the router is only needed when a daemon starts
    deps = {t: list(manager.get_daemon_info(t).depends_on) for t in manager.registered_types}
    assert all(find_cycle(deps, t) is None for t in deps)
    assert {t for members in IMPLEMENTED_PROFILES.values() for t in members} <= set(manager.registered_types)
