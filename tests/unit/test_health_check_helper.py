"""HealthCheckHelper: every threshold at, just below and just above its boundary (>= vs >)."""

from __future__ import annotations

import pytest

from coordination.health_check_helper import HealthCheckHelper as H

NOW = 1_000_000.0


@pytest.mark.parametrize(("errors", "cycles", "ok"), [(0, 0, True), (5, 0, True), (49, 100, True),
                                                      (50, 100, False), (51, 100, False)])
def test_check_error_rate_unhealthy_at_threshold(errors: int, cycles: int, ok: bool) -> None:
    assert H.check_error_rate(errors, cycles)[0] is ok
    assert H.check_error_rate(errors=5, cycles=100, threshold=0.05)[0] is False


def test_check_error_rate_messages() -> None:
    assert H.check_error_rate(0, 0) == (True, "No cycles completed yet")
    assert H.check_error_rate(50, 100) == (False, "Error rate too high: 50.0% >= 50% (50/100 cycles failed)")
    assert H.check_error_rate(5, 100) == (True, "Error rate: 5.0% (5/100)")


@pytest.mark.parametrize(("start", "in_grace"), [(0.0, True), (-1.0, True), (NOW - 29.9, True),
                                                 (NOW - 30.0, False), (NOW - 31.0, False)])
def test_check_uptime_grace(start: float, in_grace: bool) -> None:
    assert H.check_uptime_grace(start, 30, now=NOW)[0] is in_grace
    assert H.check_uptime_grace(start_time=start, grace_period=30, now=NOW)[0] is in_grace


def test_check_uptime_grace_uses_the_wall_clock_by_default() -> None:
    import time

    assert H.check_uptime_grace(time.time())[0] is True
    assert H.check_uptime_grace(time.time() - 3600)[0] is False


def test_check_recent_errors() -> None:
    assert H.check_recent_errors([], now=NOW) == (True, "No errors recorded")
    four = [NOW - 1] * 4
    assert H.check_recent_errors(four, now=NOW)[0] is True
    assert H.check_recent_errors([*four, NOW - 299], now=NOW)[0] is False  # 5 >= limit 5
    # exactly at the window edge is outside it (ts > now - window)
    ok, msg = H.check_recent_errors([*four, NOW - 300], now=NOW)
    assert ok and msg == "Recent errors: 4 in last 5min"
    assert H.check_recent_errors([NOW], window_seconds=60, limit=1, now=NOW) == (
        False, "Too many recent errors: 1 in last 1min (limit: 1)")


@pytest.mark.parametrize(("size", "max_depth", "ok"), [(999, 1000, True), (1000, 1000, False), (1001, 1000, False),
                                                       (10**9, 0, True), (5, -1, True)])
def test_check_queue_depth(size: int, max_depth: int, ok: bool) -> None:
    assert H.check_queue_depth(size, max_depth)[0] is ok
    assert H.check_queue_depth(depth=size, max_depth=max_depth)[0] is ok  # the API reference's spelling


def test_check_queue_depth_needs_exactly_one_size() -> None:
    with pytest.raises(TypeError):
        H.check_queue_depth()
    with pytest.raises(TypeError):
        H.check_queue_depth(1, depth=1)
    assert H.check_queue_depth(250) == (True, "Queue depth: 250/1000 (25%)")


@pytest.mark.parametrize(("last", "ok"), [(0.0, True), (NOW - 3599, True), (NOW - 3600, True), (NOW - 3601, False)])
def test_check_last_activity(last: float, ok: bool) -> None:
    assert H.check_last_activity(last, now=NOW)[0] is ok


@pytest.mark.parametrize(("connected", "last", "ok"), [
    (True, 0.0, True), (False, 0.0, False), (False, NOW - 60, True), (False, NOW - 61, False), (False, NOW - 1, True)])
def test_check_connection_health(connected: bool, last: float, ok: bool) -> None:
    assert H.check_connection_health(connected, last, now=NOW)[0] is ok
    assert H.check_connection_health(False, 0.0) == (False, "Never connected")


@pytest.mark.parametrize(("failed", "total", "ok"), [(0, 0, True), (1, 10, True), (2, 10, False), (3, 10, False),
                                                     (19, 100, True)])
def test_check_handler_failures(failed: int, total: int, ok: bool) -> None:
    assert H.check_handler_failures(failed, total)[0] is ok


@pytest.mark.parametrize(("subscribed", "received", "minimum", "ok"), [
    (False, 100, 0, False), (True, 0, 0, True), (True, 4, 5, False), (True, 5, 5, True), (True, 0, -1, True)])
def test_check_subscription_health(subscribed: bool, received: int, minimum: int, ok: bool) -> None:
    assert H.check_subscription_health(subscribed, received, minimum)[0] is ok


@pytest.mark.parametrize(("last", "ok"), [(0.0, True), (NOW - 3600, True), (NOW - 3600.5, False)])
def test_check_data_staleness(last: float, ok: bool) -> None:
    assert H.check_data_staleness(last, now=NOW)[0] is ok
    assert H.check_data_staleness(NOW - 10, max_age_seconds=10, now=NOW)[0] is True
    assert H.check_data_staleness(NOW - 11, max_age_seconds=10, now=NOW)[0] is False


@pytest.mark.parametrize(("pending", "maximum", "ok"), [(99, 100, True), (100, 100, False), (10**6, 0, True)])
def test_check_pending_items(pending: int, maximum: int, ok: bool) -> None:
    assert H.check_pending_items(pending, maximum)[0] is ok


def test_check_dependency_health() -> None:
    assert H.check_dependency_health({}) == (True, "No dependencies")
    assert H.check_dependency_health({"redis": True, "kafka": True}) == (True, "All 2 dependencies healthy")
    assert H.check_dependency_health({"redis": True, "kafka": False, "s3": False}) == (
        False, "Unhealthy dependencies (1/3): kafka, s3")


@pytest.mark.parametrize(("current", "threshold", "ok"), [(1023.9, 1024.0, True), (1024.0, 1024.0, False),
                                                          (5000.0, 0.0, True)])
def test_check_memory_usage(current: float, threshold: float, ok: bool) -> None:
    assert H.check_memory_usage(current, threshold)[0] is ok


def test_build_details_drops_only_none() -> None:
    assert H.build_details(a=1, b=None, c=0, d="", e=False) == {"a": 1, "c": 0, "d": "", "e": False}
