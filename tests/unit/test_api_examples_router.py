"""Section 2 of the API reference (the event system), run as written with the `app.` prefix dropped,
on in-process buses (memory://) configured through the environment as a user would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from coordination import event_router
from tests.support import unique


@pytest.fixture
def memory_buses(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    name = unique("api")
    monkeypatch.setenv("RINGRIFT_REDIS_URL", f"memory://{name}")
    monkeypatch.setenv("RINGRIFT_KAFKA_BOOTSTRAP", f"memory://{name}")
    monkeypatch.setenv("RINGRIFT_ROUTER_START", "earliest")
    event_router.reset_router()
    yield
    event_router.reset_router()


async def test_section_2_examples_run_as_written(memory_buses: None) -> None:
    from coordination.event_router import (
        EventSource,
        RouterEvent,
        get_router,
        has_subscribers,
        publish,
        subscribe,
        unsubscribe,
    )
    from schemas.events import DataEventType

    router = get_router()
    seen: list[str] = []
    everything: list[str] = []

    async def on_training_complete(event: RouterEvent) -> None:
        seen.append(event.payload.get("config"))

    async def on_model_promoted(event: RouterEvent) -> None:
        seen.append(event.payload["model_path"])

    def on_any_event(event: RouterEvent) -> None:
        everything.append(event.event_type)

    router.subscribe("TRAINING_COMPLETED", on_training_complete)
    router.subscribe(DataEventType.MODEL_PROMOTED, on_model_promoted)
    router.subscribe(None, on_any_event)
    subscribe("DATA_SYNC_COMPLETED", on_any_event)
    assert has_subscribers("TRAINING_COMPLETED")
    await router.start()
    try:
        event = await router.publish(
            event_type="TRAINING_COMPLETED",
            payload={"config": "hex8_2p", "success": True, "epochs": 50},
            source="training_daemon",
        )
        assert isinstance(event, RouterEvent) and event.origin is EventSource.ROUTER
        await router.publish(event_type=DataEventType.MODEL_PROMOTED,
                             payload={"model_path": "models/canonical_hex8_2p.pth"}, source="auto_promotion")
        await router.publish(event_type="CUSTOM_EVENT", payload={"data": "value"}, route_to_data_bus=True,
                             route_to_stage_bus=False, route_to_cross_process=True)
        await publish(DataEventType.TRAINING_COMPLETED, payload={"config": "square8_2p"}, source="trainer")
        for _ in range(200):
            if len(seen) == 3 and "CUSTOM_EVENT" in everything:
                break
            await asyncio.sleep(0.01)
        assert seen == ["hex8_2p", "models/canonical_hex8_2p.pth", "square8_2p"]
        assert everything.count("TRAINING_COMPLETED") == 2 and "CUSTOM_EVENT" in everything
        stats = router.get_stats()
        assert stats["events_routed"]["TRAINING_COMPLETED"] == 2
        assert {"events_by_source", "duplicates_prevented", "content_duplicates_prevented"} <= set(stats)
        history = list(router._event_history)
        assert [e.event_type for e in history].count("TRAINING_COMPLETED") == 2
        assert unsubscribe("TRAINING_COMPLETED", on_training_complete) is True
        assert router.unsubscribe("TRAINING_COMPLETED", on_training_complete) is False
    finally:
        await router.stop()


def test_publish_sync_without_a_loop(memory_buses: None) -> None:
    from coordination.event_router import get_router

    router = get_router()
    event = router.publish_sync(event_type="DATA_SYNC_COMPLETED", payload={"games_synced": 150, "duration": 12.5},
                                source="sync_daemon")
    assert event.event_type == "DATA_SYNC_COMPLETED" and len(event.event_id) == 36
    router.stop_sync()
