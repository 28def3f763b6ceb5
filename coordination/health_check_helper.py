"""Reusable health-check predicates with the original's thresholds and boundaries.

    ok, msg = HealthCheckHelper.check_error_rate(errors=5, cycles=100, threshold=0.5)
    if not ok:
        return HealthCheckResult.unhealthy(msg)

Every check returns `(ok, message)`, except `check_uptime_grace`, which returns
`(in_grace, message)`. Where a boundary matters it is the original's (ORIGINAL_SEMANTICS section 11):

    check_error_rate          unhealthy when errors/cycles >= threshold (0.5); no cycles: ok
    check_uptime_grace        in grace when start_time <= 0 or uptime < grace_period (30 s)
    check_recent_errors       unhealthy when #timestamps > now - window (300 s) >= limit (5)
    check_queue_depth         unhealthy when size >= max_depth (1000); max_depth <= 0: no limit
    check_last_activity       unhealthy when age > stale_threshold (3600 s); never active: ok
    check_connection_health   connected: ok; never connected: unhealthy;
                              unhealthy when disconnected > max_disconnect_time (60 s)
    check_handler_failures    unhealthy when failed/total >= threshold (0.2); no handlers: ok
    check_subscription_health unhealthy when not subscribed, or min_events > 0 and received < min
    check_data_staleness      unhealthy when age > max_age_seconds (3600 s); never synced: ok
    check_pending_items       unhealthy when pending >= max_pending (100); max <= 0: no limit
    check_dependency_health   unhealthy when any dependency is False (named); none: ok
    check_memory_usage        unhealthy when current_mb >= threshold_mb (1024); threshold <= 0: ok
    build_details             the keyword arguments without the None ones

The time-based checks take an optional `now` (Unix seconds) so callers and tests can pin the clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["HealthCheckHelper"]

Check = tuple[bool, str]


def _now(now: float | None) -> float:
    return time.time() if now is None else now


class HealthCheckHelper:
    """Static health-check predicates; see the module docstring for the exact boundaries."""

    @staticmethod
    def check_error_rate(errors: int, cycles: int, threshold: float = 0.5) -> Check:
        if cycles == 0:
            return True, "No cycles completed yet"
        rate = errors / cycles
        if rate >= threshold:
            return False, f"Error rate too high: {rate:.1%} >= {threshold:.0%} ({errors}/{cycles} cycles failed)"
        return True, f"Error rate: {rate:.1%} ({errors}/{cycles})"

    @staticmethod
    def check_uptime_grace(start_time: float, grace_period: float = 30, *, now: float | None = None) -> Check:
        """(True, msg) while the component is in its startup grace period (or not started)."""
        if start_time <= 0:
            return True, "Not started yet"
        uptime = _now(now) - start_time
        if uptime < grace_period:
            return True, f"In startup grace period ({uptime:.0f}/{grace_period:g}s)"
        return False, f"Uptime: {uptime:.0f}s"

    @staticmethod
    def check_recent_errors(error_log: Iterable[float], window_seconds: float = 300, limit: int = 5,
                            *, now: float | None = None) -> Check:
        timestamps = list(error_log)
        if not timestamps:
            return True, "No errors recorded"
        cutoff = _now(now) - window_seconds
        recent = sum(1 for ts in timestamps if ts > cutoff)
        minutes = int(window_seconds // 60)
        if recent >= limit:
            return False, f"Too many recent errors: {recent} in last {minutes}min (limit: {limit})"
        return True, f"Recent errors: {recent} in last {minutes}min"

    @staticmethod
    def check_queue_depth(queue_size: int | None = None, max_depth: int = 1000, *,
                          depth: int | None = None) -> Check:
        """`depth=` is accepted as well as `queue_size=` (the API reference uses `depth`)."""
        if (queue_size is None) == (depth is None):
            raise TypeError("check_queue_depth() takes exactly one of queue_size or depth")
        size = queue_size if queue_size is not None else depth
        assert size is not None
        if max_depth <= 0:
            return True, f"Queue depth: {size} (no limit)"
        if size >= max_depth:
            return False, f"Queue depth too high: {size} >= {max_depth}"
        return True, f"Queue depth: {size}/{max_depth} ({size / max_depth:.0%})"

    @staticmethod
    def check_last_activity(last_activity: float, stale_threshold: float = 3600, *,
                            now: float | None = None) -> Check:
        if last_activity <= 0:
            return True, "No activity recorded yet"
        age = _now(now) - last_activity
        if age > stale_threshold:
            return False, f"Stale: no activity for {age / 60:.0f}min (threshold: {stale_threshold / 60:.0f}min)"
        return True, f"Last activity: {age:.0f}s ago"

    @staticmethod
    def check_connection_health(connected: bool, last_success: float, max_disconnect_time: float = 60, *,
                                now: float | None = None) -> Check:
        if connected:
            return True, "Connected"
        if last_success <= 0:
            return False, "Never connected"
        down = _now(now) - last_success
        if down > max_disconnect_time:
            return False, f"Disconnected for {down:.0f}s (threshold: {max_disconnect_time:g}s)"
        return True, f"Disconnected {down:.0f}s (within tolerance)"

    @staticmethod
    def check_handler_failures(failed_handlers: int, total_handlers: int, threshold: float = 0.2) -> Check:
        if total_handlers == 0:
            return True, "No handlers registered"
        rate = failed_handlers / total_handlers
        if rate >= threshold:
            return False, (f"Handler failure rate too high: {rate:.1%} >= {threshold:.0%} "
                           f"({failed_handlers}/{total_handlers} handlers failed)")
        return True, f"Handler failure rate: {rate:.1%} ({failed_handlers}/{total_handlers})"

    @staticmethod
    def check_subscription_health(subscribed: bool, events_received: int = 0, min_events: int = 0) -> Check:
        if not subscribed:
            return False, "Event subscriptions not registered"
        if min_events > 0 and events_received < min_events:
            return False, f"Too few events received: {events_received} < {min_events} expected"
        return True, f"Subscribed, {events_received} events received"

    @staticmethod
    def check_data_staleness(last_sync: float, max_age_seconds: float = 3600.0, *,
                             now: float | None = None) -> Check:
        if last_sync <= 0:
            return True, "No sync recorded yet"
        age = _now(now) - last_sync
        if age > max_age_seconds:
            return False, f"Data stale: last sync {age / 60:.0f}min ago (max: {max_age_seconds / 60:.0f}min)"
        return True, f"Data fresh: synced {age:.0f}s ago"

    @staticmethod
    def check_pending_items(pending_count: int, max_pending: int = 100) -> Check:
        if max_pending <= 0:
            return True, f"Pending items: {pending_count} (no limit)"
        if pending_count >= max_pending:
            return False, f"Too many pending items: {pending_count} >= {max_pending}"
        return True, f"Pending items: {pending_count}/{max_pending} ({pending_count / max_pending:.0%})"

    @staticmethod
    def check_dependency_health(dependencies: Mapping[str, bool]) -> Check:
        if not dependencies:
            return True, "No dependencies"
        down = [name for name, healthy in dependencies.items() if not healthy]
        total = len(dependencies)
        if down:
            return False, f"Unhealthy dependencies ({total - len(down)}/{total}): {', '.join(down)}"
        return True, f"All {total} dependencies healthy"

    @staticmethod
    def check_memory_usage(current_mb: float, threshold_mb: float = 1024.0) -> Check:
        if threshold_mb <= 0:
            return True, f"Memory usage: {current_mb:.0f}MB (no limit)"
        if current_mb >= threshold_mb:
            return False, f"Memory usage too high: {current_mb:.0f}MB >= {threshold_mb:.0f}MB"
        return True, f"Memory usage: {current_mb:.0f}/{threshold_mb:.0f}MB ({current_mb / threshold_mb:.0%})"

    @staticmethod
    def build_details(**metrics: Any) -> dict[str, Any]:
        """The keyword arguments as a dict, without the None values (falsy values are kept)."""
        return {key: value for key, value in metrics.items() if value is not None}
