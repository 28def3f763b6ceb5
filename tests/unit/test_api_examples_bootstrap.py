"""Section 4 of the API reference (the coordination bootstrap), run as written with the `app.` prefix
dropped, without an event loop as the reference shows, on in-process buses (memory://) configured
through the environment as a user would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coordination import coordination_bootstrap, event_router
from tests.support import unique


@pytest.fixture(autouse=True)
def memory_buses(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    name = unique("api4")
    monkeypatch.setenv("RINGRIFT_REDIS_URL", f"memory://{name}")
    monkeypatch.setenv("RINGRIFT_KAFKA_BOOTSTRAP", f"memory://{name}")
    event_router.reset_router()
    coordination_bootstrap.reset_bootstrap_state()
    yield
    coordination_bootstrap.reset_bootstrap_state()
    event_router.get_router().stop_sync()
    event_router.reset_router()


def test_section_4_examples_run_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    from coordination.coordination_bootstrap import (
        COORDINATOR_REGISTRY,
        bootstrap_coordination,
        get_bootstrap_status,
        shutdown_coordination,
    )

    # Initialize all coordination components
    bootstrap_coordination()

    # Initialize with specific options
    bootstrap_coordination(
        enable_metrics=True,
        enable_optimization=True,
        enable_leadership=False,  # Disable for single-node
    )

    status = get_bootstrap_status()
    print(f"Coordinators initialized: {len(status['coordinators'])}")

    assert capsys.readouterr().out == "Coordinators initialized: 31\n"
    assert status["initialized"] is True and status["errors"] == []
    assert status["started_at"] and status["completed_at"]
    assert status["coordinators"]["task_coordinator"] == {"enabled": True, "initialized": True, "subscribed": True,
                                                          "error": None}
    # the second call found everything initialised already: leadership stays as the first call made it
    assert status["coordinators"]["leadership_coordinator"]["initialized"] is True
    assert "task_coordinator" in COORDINATOR_REGISTRY

    # Graceful shutdown
    shutdown_coordination()
    assert get_bootstrap_status()["shutdown_requested"] is True


def test_section_4_options_call_on_its_own() -> None:
    from coordination.coordination_bootstrap import bootstrap_coordination, get_bootstrap_status

    bootstrap_coordination(
        enable_metrics=True,
        enable_optimization=True,
        enable_leadership=False,  # Disable for single-node
    )
    coordinators = get_bootstrap_status()["coordinators"]
    assert coordinators["leadership_coordinator"] == {"enabled": False, "initialized": False, "subscribed": False,
                                                      "error": None}
    assert coordinators["metrics_orchestrator"]["subscribed"] and coordinators["optimization_coordinator"]["subscribed"]
