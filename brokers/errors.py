"""The brokers' error tree. Nothing above `brokers/` ever sees a redis or aiokafka exception.

    BrokerError                      retriable=False   root
    ├── BrokerUnavailable            retriable=True    cannot reach the broker (after the retry budget)
    ├── AuthenticationFailed         retriable=False   wrong user, password, certificate or ACL
    ├── RecordTooLarge               retriable=False   encoded record above max_record_bytes
    ├── TopicNotFound                retriable=False   topic/stream does not exist and may not be created
    ├── ConfigurationError           retriable=False   bad URL or options
    └── BrokerClosed                 retriable=False   used after close()

`retriable` is what the retry policy reads: a retriable error is retried with back-off within the
budget; anything else is raised at once.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "BrokerClosed",
    "BrokerError",
    "BrokerUnavailable",
    "ConfigurationError",
    "RecordTooLarge",
    "TopicNotFound",
]


class BrokerError(Exception):
    """Root of every error a broker raises."""

    retriable: bool = False


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached (connection refused, reset, timed out)."""

    retriable = True


class AuthenticationFailed(BrokerError):
    """The broker refused our credentials. Retrying would not help."""


class RecordTooLarge(BrokerError):
    """An encoded record is larger than the configured limit."""

    def __init__(self, size: int, limit: int, topic: str = "") -> None:
        where = f" for {topic!r}" if topic else ""
        super().__init__(f"record of {size} bytes{where} exceeds the limit of {limit} bytes "
                         "(max_record_bytes / RINGRIFT_MAX_RECORD_BYTES)")
        self.size = size
        self.limit = limit


class TopicNotFound(BrokerError):
    """The topic or stream does not exist."""


class ConfigurationError(BrokerError):
    """The URL or an option is wrong."""


class BrokerClosed(BrokerError):
    """The broker was closed."""
