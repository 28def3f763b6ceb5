"""Layers 1 and 2: tasks, work queue, resources, caches, node health, memory pressure, standby,
cluster resilience and models.

Each class is a table (see coordinators.base). Reactions here: the cache orchestrator invalidates a
config's model caches when a new model is promoted; the health manager announces NODE_UNHEALTHY
when a node goes offline/dead/failing and, with its `recovery` setting (the bootstrap's
enable_recovery), starts a recovery (RECOVERY_INITIATED) for a node announced unhealthy; the memory
pressure controller activates backpressure at critical pressure and releases it on recovery; the
resilience orchestrator escalates a lost quorum or a split brain.
"""

from __future__ import annotations

from coordination.coordinators.base import Coordinator, FollowUp, On, entering
from coordination.coordinators.rules import CONFIG, MODEL, NODE, TASK, Change, Count, Flag, Latest, Track
from schemas.envelope import RouterEvent

__all__ = ["CacheOrchestrator", "ClusterResilienceOrchestrator", "GlobalTaskCoordinator", "HealthManager",
           "MemoryPressureController", "ModelCoordinator", "ResourceCoordinator", "StandbyCoordinator",
           "TaskCoordinator"]

WORK = ("work_id", "task_id", "job_id")
DAEMON = ("daemon_name@hostname", "daemon_name", "daemon_type", "daemon")
COORDINATOR = ("coordinator_id", "coordinator_name@node_id", "coordinator_name", "coordinator")
_NODE_DOWN = ("offline", "dead", "failing", "unhealthy")
_CRITICAL_MEMORY = ("critical", "emergency")


class TaskCoordinator(Coordinator):
    """Every task's lifecycle, from TASK_* events."""

    name = "task_coordinator"
    table = (
        On("TASK_SPAWNED", Track("tasks", TASK, "running"), Count("spawned")),
        On("TASK_HEARTBEAT", Track("tasks", TASK, "running")),
        On("TASK_COMPLETED", Track("tasks", TASK, "completed"), Count("completed")),
        On("TASK_FAILED", Track("tasks", TASK, "failed"), Count("failed")),
        On("TASK_CANCELLED", Track("tasks", TASK, "cancelled")),
        On("TASK_ORPHANED", Track("tasks", TASK, "orphaned")),
        On("TASK_ABANDONED", Track("tasks", TASK, "abandoned")),
    )


class GlobalTaskCoordinator(Coordinator):
    """The cluster's work queue: each work item's state, and whether the queue is stalled or full."""

    name = "global_task_coordinator"
    table = (
        On("WORK_QUEUED", Track("work", WORK, "queued"), Flag("queue_exhausted", False)),
        On("WORK_SUBMITTED", Track("work", WORK, "queued")),
        On("WORK_RETRY", Track("work", WORK, "queued"), Count("retries")),
        On("WORK_CLAIMED", Track("work", WORK, "claimed")),
        On("WORK_STARTED", Track("work", WORK, "running")),
        On("WORK_COMPLETED", Track("work", WORK, "completed")),
        On("WORK_FAILED", Track("work", WORK, "failed")),
        On("WORK_TIMEOUT", Track("work", WORK, "timed_out")),
        On("WORK_CANCELLED", Track("work", WORK, "cancelled")),
        On("JOB_PREEMPTED", Track("work", WORK, "preempted")),
        On("WORK_QUEUE_STALLED", Flag("queue_stalled", True)),
        On("WORK_QUEUE_RECOVERED", Flag("queue_stalled", False)),
        On("WORK_QUEUE_EXHAUSTED", Flag("queue_exhausted", True)),
        On("WORK_QUEUE_BACKPRESSURE", Flag("queue_backpressure", True)),
        On("WORK_QUEUE_BACKPRESSURE_RELEASED", Flag("queue_backpressure", False)),
    )
    alarm_flags = ("queue_stalled",)


class ResourceCoordinator(Coordinator):
    """Node capacity and load, cluster capacity, backpressure."""

    name = "resource_coordinator"
    table = (
        On("NODE_CAPACITY_UPDATED", Track("nodes", NODE, "available")),
        On("NODE_OVERLOADED", Track("nodes", NODE, "overloaded")),
        On("IDLE_RESOURCE_DETECTED", Track("nodes", NODE, "idle")),
        On("DISK_SPACE_LOW", Track("nodes", NODE, "disk_low")),
        On("CLUSTER_CAPACITY_CHANGED", Latest("cluster_capacity")),
        On("RESOURCE_CONSTRAINT", Count("constraints"), Latest("last_constraint")),
        On("BACKPRESSURE_ACTIVATED", Flag("backpressure", True), Latest("backpressure")),
        On("BACKPRESSURE_RELEASED", Flag("backpressure", False), Latest("backpressure")),
        On("CAPACITY_LOW", Flag("capacity_low", True)),
        On("CAPACITY_RESTORED", Flag("capacity_low", False)),
    )
    alarms = {"nodes": ("overloaded", "disk_low")}
    alarm_flags = ("backpressure", "capacity_low")


def _invalidate_model_cache(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    """A config's cached models are stale once another model is promoted for it."""
    if change is None or (change.previous or {}).get("model_path") == (change.entry or {}).get("model_path"):
        return []
    return [("CACHE_INVALIDATED", {"cache_key": f"model:{change.key}", "config_key": change.key,
                                   "model_path": event.payload.get("model_path", ""), "reason": "model_promoted"})]


class CacheOrchestrator(Coordinator):
    """Which model each config's caches hold, and the invalidations sent."""

    name = "cache_orchestrator"
    table = (
        On("MODEL_PROMOTED", Track("models", CONFIG, "promoted"), react=_invalidate_model_cache),
        On("CACHE_INVALIDATED", Track("invalidations", ("cache_key", *CONFIG), "invalidated"), Count("invalidations")),
        On("REGISTRY_UPDATED", Count("registry_updates")),
    )


class HealthManager(Coordinator):
    """Node health (part node_health, enable_health), daemon failures and errors (part errors: the
    delegated error coordinator, enable_error) and node recovery (setting recovery, enable_recovery)."""

    name = "health_manager"
    table = (
        On("HOST_OFFLINE", Track("nodes", NODE, "offline"), part="node_health",
           react=entering("NODE_UNHEALTHY", "node_id", unless=_NODE_DOWN)),
        On("P2P_NODE_DEAD", Track("nodes", NODE, "dead"), part="node_health",
           react=entering("NODE_UNHEALTHY", "node_id", unless=_NODE_DOWN)),
        On("HEALTH_CHECK_FAILED", Track("nodes", NODE, "failing"), part="node_health",
           react=entering("NODE_UNHEALTHY", "node_id", unless=_NODE_DOWN)),
        On("NODE_UNHEALTHY", Track("nodes", NODE, "unhealthy"), part="node_health", requires="recovery",
           react=entering("RECOVERY_INITIATED", "node_id", unless=("unhealthy", "recovering"))),
        On("NODE_SUSPECT", Track("nodes", NODE, "suspect"), part="node_health"),
        On("HOST_ONLINE", Track("nodes", NODE, "online"), part="node_health"),
        On("HEALTH_CHECK_PASSED", Track("nodes", NODE, "healthy"), part="node_health"),
        On("NODE_RECOVERED", Track("nodes", NODE, "healthy"), part="node_health"),
        On("RECOVERY_INITIATED", Track("nodes", NODE, "recovering"), part="node_health"),
        On("RECOVERY_COMPLETED", Track("nodes", NODE, "healthy"), part="node_health"),
        On("RECOVERY_FAILED", Track("nodes", NODE, "recovery_failed"), part="node_health"),
        On("ERROR", Count("errors"), Latest("last_error"), part="errors"),
        On("HANDLER_FAILED", Count("handler_failures"), Latest("last_handler_failure"), part="errors"),
        On("HANDLER_TIMEOUT", Count("handler_timeouts"), part="errors"),
        On("DAEMON_CRASH_LOOP_DETECTED", Track("daemons", DAEMON, "crash_loop"), part="errors"),
        On("DAEMON_PERMANENTLY_FAILED", Track("daemons", DAEMON, "permanently_failed"), part="errors"),
        On("DAEMON_FAILURE_RECOVERED", Track("daemons", DAEMON, "recovered"), part="errors"),
        On("DAEMON_STARTED", Track("daemons", DAEMON, "running"), part="errors"),
    )
    alarms = {"nodes": ("offline", "dead", "failing", "unhealthy", "recovery_failed"),
              "daemons": ("crash_loop", "permanently_failed")}
    settings_defaults = {"recovery": True}


def _memory_backpressure(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    """Critical memory pressure pauses producers (backpressure) until the node recovers."""
    if change is None or not change.changed:
        return []
    payload = {"node_id": change.key, "reason": "memory_pressure", "level": change.after}
    if change.after in _CRITICAL_MEMORY and change.before not in _CRITICAL_MEMORY:
        return [("BACKPRESSURE_ACTIVATED", payload)]
    if change.after == "normal" and change.before in _CRITICAL_MEMORY:
        return [("BACKPRESSURE_RELEASED", payload)]
    return []


class MemoryPressureController(Coordinator):
    """Each node's memory pressure level; backpressure while a node is critical."""

    name = "memory_pressure_controller"
    table = (
        On("MEMORY_PRESSURE", Track("nodes", NODE, "elevated"), react=_memory_backpressure),
        On("MEMORY_PRESSURE_CAUTION", Track("nodes", NODE, "caution"), react=_memory_backpressure),
        On("MEMORY_PRESSURE_WARNING", Track("nodes", NODE, "warning"), react=_memory_backpressure),
        On("MEMORY_PRESSURE_CRITICAL", Track("nodes", NODE, "critical"), react=_memory_backpressure),
        On("MEMORY_PRESSURE_EMERGENCY", Track("nodes", NODE, "emergency"), react=_memory_backpressure),
        On("MEMORY_PRESSURE_RECOVERED", Track("nodes", NODE, "normal"), react=_memory_backpressure),
    )
    alarms = {"nodes": ("warning", "critical", "emergency")}


class StandbyCoordinator(Coordinator):
    """The coordinators of the cluster (heartbeats, health, init failures, shutdowns) and failovers."""

    name = "standby_coordinator"
    table = (
        On("COORDINATOR_HEARTBEAT", Track("coordinators", COORDINATOR, "alive")),
        On("COORDINATOR_HEALTHY", Track("coordinators", COORDINATOR, "healthy")),
        On("COORDINATOR_HEALTH_DEGRADED", Track("coordinators", COORDINATOR, "degraded")),
        On("COORDINATOR_UNHEALTHY", Track("coordinators", COORDINATOR, "unhealthy")),
        On("COORDINATOR_INIT_FAILED", Track("coordinators", COORDINATOR, "init_failed")),
        On("COORDINATOR_SHUTDOWN", Track("coordinators", COORDINATOR, "stopped")),
        On("COORDINATOR_EMERGENCY_SHUTDOWN", Track("coordinators", COORDINATOR, "emergency_shutdown")),
        On("COORDINATOR_FAILOVER", Count("failovers"), Latest("last_failover")),
        On("COORDINATOR_HANDOFF", Count("handoffs"), Latest("last_handoff")),
    )
    alarms = {"coordinators": ("unhealthy", "init_failed", "emergency_shutdown")}


def _escalate(coordinator: Coordinator, event: RouterEvent, change: Change | None) -> list[FollowUp]:
    if change is None or not change.changed:
        return []
    return [("RESILIENCE_ESCALATION", {"reason": event.event_type.lower(), "condition": change.key,
                                       "details": dict(event.payload)})]


class ClusterResilienceOrchestrator(Coordinator):
    """Quorum, split brain, partitions and isolated nodes; escalates quorum loss and split brain."""

    name = "cluster_resilience_orchestrator"
    table = (
        On("QUORUM_LOST", Flag("quorum_lost", True), Latest("quorum"), react=_escalate),
        On("QUORUM_AT_RISK", Flag("quorum_at_risk", True), Latest("quorum")),
        On("QUORUM_RESTORED", Flag("quorum_lost", False), Flag("quorum_at_risk", False), Latest("quorum")),
        On("SPLIT_BRAIN_DETECTED", Flag("split_brain", True), react=_escalate),
        On("SPLIT_BRAIN_RESOLVED", Flag("split_brain", False)),
        On("NETWORK_ISOLATION_DETECTED", Track("nodes", NODE, "isolated")),
        On("PARTITION_HEALING_STARTED", Flag("partition_healing", True), Latest("partition")),
        On("PARTITION_HEALED", Flag("partition_healing", False), Count("partitions_healed")),
        On("PARTITION_HEALING_FAILED", Flag("partition_healing", False), Count("healing_failures")),
        On("RESILIENCE_ESCALATION", Count("escalations"), Latest("last_escalation")),
    )
    alarms = {"nodes": ("isolated",)}
    alarm_flags = ("quorum_lost", "quorum_at_risk", "split_brain")


class ModelCoordinator(Coordinator):
    """The promoted model of each config and the lifecycle of each model."""

    name = "model_coordinator"
    table = (
        On("MODEL_PROMOTED", Track("configs", CONFIG, "promoted"), Track("models", MODEL, "promoted", required=False)),
        On("PROMOTION_ROLLED_BACK", Track("configs", CONFIG, "rolled_back")),
        On("TRAINING_COMPLETED", Track("models", MODEL, "trained", required=False)),
        On("PROMOTION_REJECTED", Track("models", MODEL, "rejected", required=False), Count("rejections")),
        On("PROMOTION_FAILED", Track("models", MODEL, "promotion_failed", required=False)),
        On("MODEL_UPDATED", Track("models", MODEL, "updated")),
        On("MODEL_IMPORTED", Track("models", MODEL, "imported")),
        On("MODEL_CORRUPTED", Track("models", MODEL, "corrupted")),
        On("P2P_MODEL_SYNCED", Count("models_synced")),
    )
