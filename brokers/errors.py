"""The brokers' error tree. Nothing above `brokers/` ever sees a redis or aiokafka exception.

    BrokerError                      retriable=False   root
    ├── BrokerUnavailable            retriable=True    cannot reach the broker (after the retry budget)
    ├── AuthenticationFailed         retriable=False   wrong user, password, certificate or ACL
    ├── RecordTooLarge               retriable=False   encoded record above max_record_bytes
    ├── TopicNotFound                retriable=False   topic/stream does not exist and may not be created
    ├── GroupNotFound                retriable=False   the consumer group has no position on the topic
    ├── GroupActive                  retriable=False   the group has members, so its position may not move
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
    "GroupActive",
    "GroupNotFound",
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


class GroupNotFound(BrokerError):
    """The consumer group has never read the topic (no committed offset, no Redis group)."""


class GroupActive(BrokerError):
    """The consumer group has members, and its position may only be moved while it has none."""

    def __init__(self, message: str, members: int) -> None:
        super().__init__(message)
        self.members = members


class ConfigurationError(BrokerError):
    """The URL or an option is wrong."""


class BrokerClosed(BrokerError):
    """The broker was closed."""
