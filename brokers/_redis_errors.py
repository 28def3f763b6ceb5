"""Translation of redis-py exceptions into brokers.errors, shared by everything in brokers/ that talks to Redis."""

from __future__ import annotations

from redis import exceptions as rexc

from brokers.errors import AuthenticationFailed, BrokerError, BrokerUnavailable

__all__ = ["translate_redis_error"]


def translate_redis_error(exc: BaseException, what: str) -> BrokerError:
    """The brokers.errors equivalent of a redis-py exception."""
    # AuthenticationError and NoPermissionError are ConnectionError/ResponseError subclasses: test them first.
    if isinstance(exc, rexc.AuthenticationError | rexc.AuthenticationWrongNumberOfArgsError |
                  rexc.NoPermissionError):
        return AuthenticationFailed(f"{what}: Redis refused the credentials or ACL: {exc}")
    if isinstance(exc, rexc.ResponseError) and str(exc).startswith(("WRONGPASS", "NOAUTH", "NOPERM")):
        return AuthenticationFailed(f"{what}: Redis refused the credentials or ACL: {exc}")
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError | rexc.BusyLoadingError):
        return BrokerUnavailable(f"{what}: Redis unreachable: {exc}")
    if isinstance(exc, rexc.ResponseError) and str(exc).startswith(("LOADING", "MASTERDOWN", "TRYAGAIN")):
        return BrokerUnavailable(f"{what}: Redis not ready: {exc}")
    return BrokerError(f"{what}: {exc}")
