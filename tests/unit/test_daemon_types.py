"""Daemon types, states, info and config: the catalog's members and the API reference's defaults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from coordination.daemon_types import (
    CRITICAL_DAEMONS,
    DAEMON_PROFILES,
    DAEMON_SPECS,
    DAEMON_STARTUP_ORDER,
    DEPRECATED_DAEMONS,
    CustomDaemonType,
    DaemonInfo,
    DaemonManagerConfig,
    DaemonState,
    DaemonType,
    resolve_daemon_type,
)

CATALOG = json.load(open("schemas/data/catalog.json"))


def test_every_catalog_daemon_type_with_its_value() -> None:
    assert [(t.name, t.value) for t in DaemonType] == [(d["name"], d["value"]) for d in CATALOG["daemon_types"]]
    assert len(DaemonType) == 122 and set(DAEMON_SPECS) == set(DaemonType)
    assert {t.name for t in DEPRECATED_DAEMONS} == {d["name"] for d in CATALOG["daemon_types"] if d["deprecated"]}
    assert len(DEPRECATED_DAEMONS) == 16


def test_critical_set_startup_order_profiles_and_states() -> None:
    assert sorted(t.name for t in CRITICAL_DAEMONS) == sorted(CATALOG["critical_daemons"])
    assert [t.name for t in DAEMON_STARTUP_ORDER] == CATALOG["daemon_startup_order"]
    assert {p: [t.name for t in members] for p, members in DAEMON_PROFILES.items()} == CATALOG["profiles"]
    assert [s.value for s in DaemonState] == CATALOG["daemon_states"]
    spec = DAEMON_SPECS[DaemonType.AUTO_SYNC]
    assert spec.critical and spec.depends_on == (DaemonType.EVENT_ROUTER, DaemonType.DATA_PIPELINE,
                                                 DaemonType.FEEDBACK_LOOP)


def test_generated_catalog_is_current() -> None:
    done = subprocess.run([sys.executable, "scripts/gen_daemon_types.py", "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_config_defaults_are_the_api_references() -> None:
    assert DaemonManagerConfig() == DaemonManagerConfig(
        auto_start=False, enable_coordination_wiring=True, dependency_wait_timeout=30.0,
        dependency_poll_interval=0.5, health_check_interval=30.0, shutdown_timeout=30.0, force_kill_timeout=5.0,
        auto_restart_failed=True, strict_registry_validation=False, max_restart_attempts=5, recovery_cooldown=10.0,
        critical_daemon_health_interval=15.0)
    with pytest.raises(ValueError):
        DaemonManagerConfig(dependency_poll_interval=0)
    with pytest.raises(ValueError):
        DaemonManagerConfig(recovery_cooldown=-1)


def test_config_from_env() -> None:
    config = DaemonManagerConfig.from_env({"RINGRIFT_DAEMON_SHUTDOWN_GRACE": "12",
                                           "RINGRIFT_DAEMON_MAX_CONSECUTIVE_ERRORS": "7"}, recovery_cooldown=1.0)
    assert (config.shutdown_timeout, config.max_restart_attempts, config.recovery_cooldown) == (12.0, 7, 1.0)
    with pytest.raises(ValueError, match="RINGRIFT_DAEMON_HEALTH_TIMEOUT"):
        DaemonManagerConfig.from_env({"RINGRIFT_DAEMON_HEALTH_TIMEOUT": "soon"})


def test_daemon_info_defaults() -> None:
    info = DaemonInfo(DaemonType.AUTO_SYNC)
    assert (info.state, info.restart_count, info.health_check_interval, info.auto_restart, info.max_restarts,
            info.restart_delay, info.startup_grace_period, info.startup_mode, info.ready_timeout) == (
        DaemonState.STOPPED, 0, 60.0, True, 5, 5.0, 60.0, "degraded", 30.0)
    assert info.depends_on == [] and info.uptime_seconds == 0.0 and info.to_dict()["state"] == "stopped"


def test_resolving_daemon_types() -> None:
    assert resolve_daemon_type("AUTO_SYNC") is DaemonType.AUTO_SYNC
    assert resolve_daemon_type("auto_sync") is DaemonType.AUTO_SYNC
    assert resolve_daemon_type(DaemonType.EVENT_ROUTER) is DaemonType.EVENT_ROUTER
    custom = resolve_daemon_type("MY_DAEMON")
    assert isinstance(custom, CustomDaemonType) and (custom.name, custom.value) == ("MY_DAEMON", "my_daemon")
    assert custom == resolve_daemon_type("my_daemon") == CustomDaemonType("My_Daemon")
    assert len({custom, resolve_daemon_type("my_daemon")}) == 1 and str(custom) == "MY_DAEMON"
    with pytest.raises(ValueError, match="built-in"):
        CustomDaemonType("auto_sync")
    with pytest.raises(ValueError):
        resolve_daemon_type("my daemon!")
    with pytest.raises(TypeError):
        resolve_daemon_type(42)  # type: ignore[arg-type]
