"""The coordinators: event-driven components, each keeping a live view of one part of the cluster.

A coordinator subscribes to the router for the event types of its table, updates its state view
from them, and may react by publishing follow-up events (see `base` and `rules`). The bootstrap
(`coordination.coordination_bootstrap`) creates and wires them in the catalog's order;
`COORDINATOR_CLASSES` maps each coordinator key of that order to its class. Grouped by layer:
`foundation` (1-2), `data` (3-4), `selfplay` (5-6), `daemons` and `pipeline` (7), `top_level` (8).
"""

from __future__ import annotations

from coordination.coordinators.base import Coordinator, On, entering
from coordination.coordinators.daemons import (
    AutoExportCoordinator,
    EvaluationCoordinator,
    IdleResourceCoordinator,
    ModelDistributionCoordinator,
    OrphanDetectionCoordinator,
    QualityMonitorCoordinator,
    TrainingActivityCoordinator,
)
from coordination.coordinators.data import (
    EphemeralGuard,
    QueuePopulator,
    SyncCoordinator,
    TrainingCoordinator,
    TransferVerifier,
)
from coordination.coordinators.foundation import (
    CacheOrchestrator,
    ClusterResilienceOrchestrator,
    GlobalTaskCoordinator,
    HealthManager,
    MemoryPressureController,
    ModelCoordinator,
    ResourceCoordinator,
    StandbyCoordinator,
    TaskCoordinator,
)
from coordination.coordinators.pipeline import CurriculumIntegration, PipelineOrchestrator
from coordination.coordinators.rules import Change, Count, Flag, Latest, MalformedEvent, StateView, Track
from coordination.coordinators.selfplay import (
    JobScheduler,
    MultiProviderOrchestrator,
    SelfplayOrchestrator,
    SelfplayScheduler,
)
from coordination.coordinators.top_level import (
    LeadershipCoordinator,
    MetricsOrchestrator,
    OptimizationCoordinator,
    PEROrchestrator,
)

__all__ = ["COORDINATOR_CLASSES", "Change", "Coordinator", "Count", "Flag", "Latest", "MalformedEvent", "On",
           "StateView", "Track", "entering"]

COORDINATOR_CLASSES: dict[str, type[Coordinator]] = {cls.name: cls for cls in (
    TaskCoordinator, GlobalTaskCoordinator, ResourceCoordinator, CacheOrchestrator,
    HealthManager, MemoryPressureController, StandbyCoordinator, ClusterResilienceOrchestrator, ModelCoordinator,
    SyncCoordinator, TrainingCoordinator,
    TransferVerifier, EphemeralGuard, QueuePopulator,
    SelfplayOrchestrator, SelfplayScheduler,
    MultiProviderOrchestrator, JobScheduler,
    AutoExportCoordinator, EvaluationCoordinator, ModelDistributionCoordinator, IdleResourceCoordinator,
    QualityMonitorCoordinator, OrphanDetectionCoordinator, TrainingActivityCoordinator,
    PipelineOrchestrator, CurriculumIntegration,
    MetricsOrchestrator, OptimizationCoordinator, PEROrchestrator, LeadershipCoordinator,
)}
