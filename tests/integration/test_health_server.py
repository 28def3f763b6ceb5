"""HEALTH_SERVER over real HTTP (aiohttp client) on an ephemeral port: probes with a healthy daemon and
a permanently failed critical one, /status with router stats, /metrics exposition, 404, and the
server started by the manager through its factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coordination.config import RouterConfig
from coordination.daemon_manager import DaemonManager
from coordination.daemon_types import DaemonManagerConfig, DaemonType
from coordination.daemons import health_server
from coordination.daemons.health_server import HealthServer, HealthServerSettings
from coordination.event_router import UnifiedEventRouter
from tests.support import unique


class Recorder:
    async def publish(self, event_type: str, payload: Mapping[str, Any] | None = None, source: str = "",
                      **options: Any) -> None:
        return None


class Waiter:
    def __init__(self) -> None:
        self._done = asyncio.Event()

    async def run(self) -> None:
        await self._done.wait()

    async def stop(self) -> None:
        self._done.set()

    def health_check(self) -> bool:
        return True


async def broken() -> None:
    raise RuntimeError("cannot connect")


def make(tmp_path: Path) -> DaemonManager:
    config = DaemonManagerConfig(shutdown_timeout=1.0, force_kill_timeout=0.5, dependency_wait_timeout=0.5)
    return DaemonManager(config, router=Recorder(), state_path=tmp_path / "s.json", health_check_timeout=0.5)


@pytest.fixture
async def router() -> AsyncIterator[UnifiedEventRouter]:
    name = unique("mem")
    r = UnifiedEventRouter(RouterConfig(redis_url=f"memory://{name}", kafka_bootstrap=f"memory://{name}",
                                        namespace=unique("ns"), node_id="node-h", start_position="earliest"))
    await r.start()
    yield r
    await r.stop()


async def serve(server: HealthServer) -> tuple[asyncio.Task[None], str]:
    task = asyncio.create_task(server.run())
    port = await server.started()
    return task, f"http://127.0.0.1:{port}"


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_probes_report_a_permanently_failed_critical_daemon(tmp_path: Path, router: UnifiedEventRouter) -> None:
    m = make(tmp_path)
    m.register_factory("GOOD", Waiter)
    m.register_factory(DaemonType.EVENT_ROUTER, broken, max_restarts=0)
    assert await m.start("GOOD") and await m.start(DaemonType.EVENT_ROUTER)
    for _ in range(100):
        if m.is_permanently_failed(DaemonType.EVENT_ROUTER):
            break
        await asyncio.sleep(0.01)
    assert m.is_permanently_failed(DaemonType.EVENT_ROUTER)
    await router.publish("TRAINING_COMPLETED", {"config_key": "hex8_2p"})
    server = HealthServer(m, router, port=0)
    task, base = await serve(server)
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await get(session, f"{base}/healthz")
            assert status == 503 and body["alive"] is False and body["node_id"] == "node-h" and body["timestamp"] > 0
            status, body = await get(session, f"{base}/readyz")
            assert status == 503 and body["ready"] is False
            assert any("event_router is failed" in r for r in body["not_ready_reasons"])
            status, body = await get(session, f"{base}/status")
            assert status == 200 and body["summary"]["failed"] == 1 and body["summary"]["running"] == 1
            assert body["daemons"]["good"]["state"] == "running"
            assert body["daemons"]["event_router"]["last_error"].startswith("RuntimeError")
            assert body["router"]["published"]["data"] >= 1
            status, text = await get(session, f"{base}/metrics")
            assert status == 200
            assert 'ringrift_daemon_state{daemon="good",state="running"} 1.0' in text
            assert 'ringrift_daemon_state{daemon="event_router",state="failed"} 1.0' in text
            assert 'ringrift_daemon_state{daemon="event_router",state="running"} 0.0' in text
            assert "ringrift_liveness 0.0" in text and "ringrift_readiness 0.0" in text
            assert 'ringrift_events_published_total{bus="data",group="node-h.router"}' in text
            assert 'ringrift_events_dead_lettered_total{group="node-h.router"} 0.0' in text
            assert 'ringrift_events_deduplicated_total{group="node-h.router",kind="id"}' in text
            assert 'ringrift_spool_depth{bus="total"} 0.0' in text
            status, body = await get(session, f"{base}/nope")
            assert status == 404 and body["path"] == "/nope"
            async with session.post(f"{base}/healthz") as response:
                assert response.status == 405
        assert server.health_check().healthy and server.requests >= 6
    finally:
        await server.stop()
        await asyncio.wait_for(task, 5)
    assert server.port is None
    await m.shutdown(timeout=1.0, force=True)


async def test_healthy_manager_and_the_server_started_through_its_factory(tmp_path: Path) -> None:
    m = make(tmp_path)
    m.register_factory("GOOD", Waiter)
    m.register_factory(DaemonType.HEALTH_SERVER, health_server.factory(m, None, port=0, node_id="n1"))
    assert await m.start("GOOD") and await m.start(DaemonType.HEALTH_SERVER)
    info = m.get_daemon_info(DaemonType.HEALTH_SERVER)
    for _ in range(100):
        if info is not None and info.instance is not None:
            break
        await asyncio.sleep(0.01)
    server = info.instance  # type: ignore[union-attr]
    port = await server.started()
    async with aiohttp.ClientSession() as session:
        status, body = await get(session, f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and body["alive"] is True and body["node_id"] == "n1"
        status, body = await get(session, f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and body == {**body, "ready": True, "not_ready_reasons": []}
        status, body = await get(session, f"http://127.0.0.1:{port}/status")
        assert "router" not in body and body["daemons"]["health_server"]["state"] == "running"
        status, text = await get(session, f"http://127.0.0.1:{port}/metrics")
        assert "ringrift_liveness 1.0" in text and "ringrift_events_" not in text
    assert await m.shutdown(timeout=2.0, force=True)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session:
            await get(session, f"http://127.0.0.1:{port}/healthz")


def test_settings_from_the_environment() -> None:
    assert HealthServerSettings.from_env({}) == HealthServerSettings("127.0.0.1", 8790)
    assert HealthServerSettings.from_env({"RINGRIFT_HEALTH_PORT": "9001", "RINGRIFT_HEALTH_HOST": "0.0.0.0"}) \
        == HealthServerSettings("0.0.0.0", 9001)
    with pytest.raises(ValueError, match="RINGRIFT_HEALTH_PORT"):
        HealthServerSettings.from_env({"RINGRIFT_HEALTH_PORT": "http"})
