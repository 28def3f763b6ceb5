"""Coordination bootstrap: create and wire the coordinators, in the catalog's order, once per process.

    from coordination.coordination_bootstrap import (
        bootstrap_coordination, shutdown_coordination, get_bootstrap_status, COORDINATOR_REGISTRY)

    bootstrap_coordination()                                 # every coordinator, wired to get_router()
    bootstrap_coordination(enable_leadership=False)          # any enable_* flag; works with or without a loop
    get_bootstrap_status()["coordinators"]["task_coordinator"]   # {enabled, initialized, subscribed, error}
    is_coordination_ready(); get_coordinator("health_manager").view.entries("nodes")
    shutdown_coordination()                                  # reverse order; unsubscribes

What a call does (ORIGINAL_SEMANTICS section 10, without its section 14 quirks):

* Each coordinator of `COORDINATOR_INIT_ORDER` (31; the registry's error_coordinator DELEGATEs to
  health_manager and recovery_manager is SKIPped: health_manager does their work) is enabled when
  any of its catalog flags is true (health_manager: enable_health or enable_error). An enabled one
  is built and subscribed to the router (`Coordinator.wire`, no event loop needed); a disabled one
  is listed with `enabled: False`. Whatever pattern the original used (WIRE, GET, IMPORT), every
  coordinator here is subscribed at bootstrap. One that raises is recorded (its `error`, and
  "name: error" in `errors`) and the others go on.
* The flags without a coordinator of their own are honoured too: enable_error and enable_health
  choose health_manager's parts (errors / node health), enable_recovery its recovery reaction,
  enable_integrations whether coordinators react (publish follow-up events) at all;
  pipeline_auto_trigger and the training overrides go to pipeline_orchestrator;
  register_with_registry puts the coordinators in the health roll-up (`coordination_health()`);
  require_master_loop refuses to bootstrap (RuntimeError) unless the router's bus readers run in this
  process, since coordinators otherwise never see an event.
* Each coordinator's outcome is announced on the buses: COORDINATOR_HEALTHY, or COORDINATOR_INIT_FAILED
  with the error (`publish_sync`: blocking without a running loop, scheduled inside one). If the
  buses refuse, that is recorded in `errors` and the remaining announcements are skipped.
* A second call returns the status; it initialises only the coordinators it enables that earlier
  calls left disabled (its other flags apply to those), so readiness never hangs on coordinators an
  earlier call turned off. A coordinator that failed stays failed until a shutdown and a new bootstrap.
* `is_coordination_ready()`: bootstrapped, not shut down, and every enabled coordinator initialised
  and subscribed. After `shutdown_coordination()` a new `bootstrap_coordination()` starts afresh.
"""

from __future__ import annotations

import difflib
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from coordination import coordinators
from coordination.coordinator_catalog import (
    COORDINATOR_ENABLE_FLAGS,
    COORDINATOR_INIT_ORDER,
    COORDINATOR_LAYERS,
    COORDINATOR_SPECS,
    CoordinatorSpec,
    InitPattern,
)
from coordination.coordinators import Coordinator
from coordination.protocols import HealthCheckResult

if TYPE_CHECKING:
    from coordination.event_router import UnifiedEventRouter

__all__ = ["COORDINATOR_INIT_ORDER", "COORDINATOR_LAYERS", "COORDINATOR_REGISTRY", "ENABLE_FLAGS",
           "CoordinatorSpec", "InitPattern", "bootstrap_coordination", "coordination_health", "get_bootstrap_status",
           "get_coordinator", "is_coordination_ready", "reset_bootstrap_state", "shutdown_coordination"]

log = logging.getLogger(__name__)

COORDINATOR_REGISTRY: dict[str, CoordinatorSpec] = COORDINATOR_SPECS
# The original's 33 enable_* keywords: the catalog's coordinator flags plus two without a coordinator.
ENABLE_FLAGS: tuple[str, ...] = tuple(sorted({*COORDINATOR_ENABLE_FLAGS, "enable_integrations", "enable_recovery"}))
_HEALTH_PARTS = (("node_health", "enable_health"), ("errors", "enable_error"))
_SOURCE = "coordination_bootstrap"


@dataclass
class CoordinatorOutcome:
    """What bootstrapping one coordinator gave."""

    name: str
    enabled: bool
    initialized: bool = False
    subscribed: bool = False
    error: str | None = None
    initialized_at: datetime | None = None

    def summary(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "initialized": self.initialized, "subscribed": self.subscribed,
                "error": self.error}


@dataclass
class _State:
    initialized: bool = False
    started_at: datetime | None = None
    completed_at: datetime | None = None
    outcomes: dict[str, CoordinatorOutcome] = field(default_factory=dict)
    instances: dict[str, Coordinator] = field(default_factory=dict)
    registered: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    shutdown_requested: bool = False
    options: dict[str, Any] = field(default_factory=dict)


_lock = threading.RLock()
_state = _State()


def _check_options(flags: dict[str, Any], options: dict[str, Any]) -> None:
    unknown = sorted(set(flags) - set(ENABLE_FLAGS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], ENABLE_FLAGS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TypeError(f"bootstrap_coordination() got an unexpected keyword argument {unknown[0]!r}{hint}")
    for name in ("pipeline_auto_trigger", "register_with_registry", "use_best_data", "require_master_loop", *flags):
        value = flags[name] if name in flags else options[name]
        if not isinstance(value, bool):
            raise TypeError(f"bootstrap_coordination(): {name} must be True or False, got {value!r}")
    for name in ("training_epochs", "training_batch_size"):
        value = options[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ValueError(f"bootstrap_coordination(): {name} must be a positive integer or None, got {value!r}")
    for name in ("training_model_version", "training_data_path"):
        value = options[name]
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"bootstrap_coordination(): {name} must be a non-empty string or None, got {value!r}")


def _settings(name: str, flags: dict[str, bool], options: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of coordinator `name` under these flags."""
    settings: dict[str, Any] = {"react": flags["enable_integrations"]}
    if name == "health_manager":
        settings["parts"] = [part for part, flag in _HEALTH_PARTS if flags[flag]]
        settings["recovery"] = flags["enable_recovery"]
    elif name == "pipeline_orchestrator":
        settings["auto_trigger"] = options["pipeline_auto_trigger"]
        settings.update({k: options[k] for k in ("training_epochs", "training_batch_size", "training_model_version",
                                                 "training_data_path", "use_best_data")})
    return settings


def _initialise(name: str, router: UnifiedEventRouter, settings: dict[str, Any]) -> tuple[CoordinatorOutcome,
                                                                                         Coordinator | None]:
    outcome = CoordinatorOutcome(name, enabled=True)
    cls = coordinators.COORDINATOR_CLASSES.get(name)
    try:
        if cls is None:
            raise LookupError(f"no coordinator class is registered for {name!r}")
        coordinator = cls(router, **settings)
        coordinator.wire()
    except Exception as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        log.error("coordinator %s failed to initialise: %s", name, outcome.error)
        return outcome, None
    outcome.initialized, outcome.subscribed = True, coordinator.subscribed
    outcome.initialized_at = datetime.now(UTC)
    return outcome, coordinator


def bootstrap_coordination(*, router: UnifiedEventRouter | None = None, pipeline_auto_trigger: bool = False,
                           register_with_registry: bool = True, training_epochs: int | None = None,
                           training_batch_size: int | None = None, training_model_version: str | None = None,
                           training_data_path: str | None = None, use_best_data: bool = False,
                           require_master_loop: bool = False, **enable_flags: bool) -> dict[str, Any]:
    """Create and wire the enabled coordinators (all by default); return `get_bootstrap_status()`.
    `router` defaults to `get_router()`. Every `enable_*` flag of `ENABLE_FLAGS` defaults to True."""
    options = {"pipeline_auto_trigger": pipeline_auto_trigger, "register_with_registry": register_with_registry,
               "training_epochs": training_epochs, "training_batch_size": training_batch_size,
               "training_model_version": training_model_version, "training_data_path": training_data_path,
               "use_best_data": use_best_data, "require_master_loop": require_master_loop}
    _check_options(enable_flags, options)
    flags = {flag: enable_flags.get(flag, True) for flag in ENABLE_FLAGS}
    if router is None:
        from coordination.event_router import get_router

        router = get_router()
    if require_master_loop and not router.is_running:
        raise RuntimeError("require_master_loop=True, but the router's bus readers do not run in this process "
                           "(run the node agent, or `await router.start()` first)")
    global _state
    attempted: list[CoordinatorOutcome] = []
    with _lock:
        if not _state.initialized:  # afresh, also after a shutdown
            _state = _State(started_at=datetime.now(UTC), options={**options, **flags})
        state = _state
        for name in COORDINATOR_INIT_ORDER:
            enabled = any(flags[flag] for flag in COORDINATOR_SPECS[name].enable_flags)
            known = state.outcomes.get(name)
            if known is not None and (known.enabled or not enabled):
                continue
            if not enabled:
                state.outcomes[name] = CoordinatorOutcome(name, enabled=False)
                log.info("coordinator %s disabled", name)
                continue
            outcome, coordinator = _initialise(name, router, _settings(name, flags, options))
            state.outcomes[name] = outcome
            attempted.append(outcome)
            if coordinator is not None:
                state.instances[name] = coordinator
                if register_with_registry:
                    state.registered.append(name)
            if outcome.error:
                state.errors.append(f"{name}: {outcome.error}")
            elif not outcome.subscribed:
                state.errors.append(f"{name}: initialized but not subscribed")
        state.initialized = True
        state.completed_at = datetime.now(UTC)
        log.info("coordination bootstrap: %d coordinator(s) initialised now, %d error(s) so far",
                 sum(o.initialized for o in attempted), len(state.errors))
    _announce(router, attempted)
    return get_bootstrap_status()


def _announce(router: UnifiedEventRouter, outcomes: list[CoordinatorOutcome]) -> None:
    node = router.config.node_id
    for outcome in outcomes:
        # announced_at keeps a re-bootstrap's announcements apart from the last ones (content dedup)
        payload: dict[str, Any] = {"coordinator_id": f"{outcome.name}@{node}", "coordinator_name": outcome.name,
                                   "node_id": node, "announced_at": datetime.now(UTC).isoformat()}
        if outcome.error is None:
            event_type = "COORDINATOR_HEALTHY"
            payload.update(subscribed=outcome.subscribed, health_score=1.0 if outcome.subscribed else 0.8)
        else:
            event_type = "COORDINATOR_INIT_FAILED"
            payload["error"] = outcome.error
        try:
            router.publish_sync(event_type, payload, source=_SOURCE)
        except Exception as exc:
            message = f"announcements stopped: {type(exc).__name__}: {exc}"
            log.warning("coordination bootstrap: %s", message)
            with _lock:
                _state.errors.append(message)
            return


def get_bootstrap_status() -> dict[str, Any]:
    """The original's shape, plus `enabled` per coordinator, `disabled_count`, `registered` and `options`.
    `total_count` counts the enabled coordinators; times are ISO-8601 strings (UTC) or None."""
    with _lock:
        state = _state
        outcomes = list(state.outcomes.values())
        return {
            "initialized": state.initialized,
            "started_at": state.started_at.isoformat() if state.started_at else None,
            "completed_at": state.completed_at.isoformat() if state.completed_at else None,
            "initialized_count": sum(o.initialized for o in outcomes),
            "subscribed_count": sum(o.subscribed for o in outcomes),
            "total_count": sum(o.enabled for o in outcomes),
            "disabled_count": sum(not o.enabled for o in outcomes),
            "coordinators": {o.name: o.summary() for o in outcomes},
            "errors": list(state.errors),
            "shutdown_requested": state.shutdown_requested,
            "registered": list(state.registered),
            "options": dict(state.options),
        }


def is_coordination_ready() -> bool:
    """Bootstrapped, not shut down, and every enabled coordinator initialised and subscribed now."""
    with _lock:
        state = _state
        if not state.initialized or state.shutdown_requested:
            return False
        return all(o.name in state.instances and state.instances[o.name].subscribed
                   for o in state.outcomes.values() if o.enabled)


def get_coordinator(name: str) -> Coordinator | None:
    """The coordinator `name` of the last bootstrap (still readable after a shutdown), or None."""
    with _lock:
        return _state.instances.get(name)


def coordination_health() -> dict[str, HealthCheckResult]:
    """The health check of every coordinator registered by the bootstrap (register_with_registry)."""
    with _lock:
        registered = [_state.instances[name] for name in _state.registered]
    return {coordinator.name: coordinator.health_check() for coordinator in registered}


def shutdown_coordination() -> dict[str, Any]:
    """Unsubscribe every coordinator, in reverse init order. {shutdown, results{name: ok}, successful,
    failed}, or {shutdown: False, reason} when nothing is bootstrapped."""
    with _lock:
        state = _state
        if not state.initialized:
            return {"shutdown": False, "reason": "not initialized"}
        state.shutdown_requested = True
        results: dict[str, bool] = {}
        for name in reversed(COORDINATOR_INIT_ORDER):
            coordinator = state.instances.get(name)
            if coordinator is None:
                continue
            try:
                coordinator.shutdown()
                results[name] = True
            except Exception as exc:
                results[name] = False
                state.errors.append(f"{name}: shutdown failed: {type(exc).__name__}: {exc}")
                log.error("coordinator %s failed to shut down: %s", name, exc)
            state.outcomes[name].subscribed = coordinator.subscribed
        state.initialized = False
        successful = sum(results.values())
        return {"shutdown": True, "results": results, "successful": successful, "failed": len(results) - successful}


def reset_bootstrap_state() -> None:
    """Shut down what runs and forget everything (tests)."""
    global _state
    with _lock:
        if _state.initialized:
            shutdown_coordination()
        _state = _State()
