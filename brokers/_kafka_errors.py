"""The Kafka backend's error boundary: aiokafka (and socket) exceptions become brokers.errors.

`translate` maps one exception at the boundary; `too_large` words a size refusal that came from
Kafka rather than from our own limit; `probe_auth` finds out whether a failed bootstrap was really an
authentication failure, which aiokafka reports as a plain connection error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from aiokafka import errors as kafka_errors
from aiokafka.conn import create_conn

from brokers.errors import (
    AuthenticationFailed,
    BrokerClosed,
    BrokerError,
    BrokerUnavailable,
    ConfigurationError,
    RecordTooLarge,
    TopicNotFound,
)
from brokers.settings import KafkaSettings

__all__ = ["CLIENT_ERRORS", "REBALANCED_ERRORS", "SIZE_ERRORS", "probe_auth", "stop_client", "too_large",
           "translate"]

CLIENT_ERRORS = (kafka_errors.KafkaError, OSError)  # OSError covers TimeoutError and refused sockets
AUTH_ERRORS = (
    kafka_errors.AuthenticationFailedError, kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.SaslAuthenticationFailed, kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.IllegalSaslStateError, kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError, kafka_errors.ClusterAuthorizationFailedError,
    ssl.SSLCertVerificationError,
)
SIZE_ERRORS = (kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordTooLargeError,
               kafka_errors.RecordListTooLargeError)
CONFIG_ERRORS = (
    kafka_errors.InvalidReplicationFactorError, kafka_errors.InvalidPartitionsError,
    kafka_errors.InvalidTopicError, kafka_errors.InvalidConfigurationError,
    kafka_errors.PolicyViolationError, kafka_errors.KafkaConfigurationError,
)
UNAVAILABLE_ERRORS = (kafka_errors.KafkaConnectionError, kafka_errors.KafkaTimeoutError,
                      kafka_errors.NodeNotReadyError, kafka_errors.RequestTimedOutError,
                      kafka_errors.NoBrokersAvailable, OSError)
# The group moved on without us: our commit is refused and the records go to the new owner.
REBALANCED_ERRORS = (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError)


def translate(exc: BaseException, what: str) -> BrokerError:
    """The brokers.errors equivalent of an aiokafka (or socket) exception."""
    if isinstance(exc, BrokerError):
        return exc
    detail = f"{what}: {type(exc).__name__}: {exc}"
    if isinstance(exc, AUTH_ERRORS):
        return AuthenticationFailed(detail)
    if isinstance(exc, kafka_errors.UnknownTopicOrPartitionError):
        return TopicNotFound(detail)
    if isinstance(exc, CONFIG_ERRORS):
        return ConfigurationError(detail)
    if isinstance(exc, (kafka_errors.ProducerClosed, kafka_errors.ConsumerStoppedError)):
        return BrokerClosed(detail)
    if isinstance(exc, UNAVAILABLE_ERRORS) or getattr(exc, "retriable", False):
        return BrokerUnavailable(detail)
    return BrokerError(detail)


def too_large(exc: BaseException, size: int, topic: str) -> RecordTooLarge:
    """Kafka refused the record although it passed our own limit: say whose limit it was."""
    error = RecordTooLarge(size, size, topic)
    error.args = (f"record of {size} bytes for {topic!r} refused by Kafka ({type(exc).__name__}): "
                  "lower max_record_bytes to the broker's message.max.bytes",)
    return error


async def probe_auth(settings: KafkaSettings, client_options: dict[str, Any], what: str) -> None:
    """Raise AuthenticationFailed if one plain connection to the first bootstrap server is refused
    for its credentials; any other outcome returns quietly. aiokafka's bootstrap hides why it failed."""
    s = settings
    host, _, port = s.bootstrap_servers.split(",")[0].strip().rpartition(":")
    options = {name: value for name, value in client_options.items() if name != "bootstrap_servers"}
    try:
        conn = await asyncio.wait_for(create_conn(host, int(port), **options), s.request_timeout_ms / 1000)
    except AUTH_ERRORS as exc:
        who = f"{s.sasl_mechanism} user {s.sasl_username!r}" if s.sasl_mechanism else "TLS"
        raise AuthenticationFailed(f"{what}: Kafka at {s.bootstrap_servers} refused {who} "
                                   f"({s.security_protocol}): {exc}") from exc
    except (*CLIENT_ERRORS, ValueError):
        return
    conn.close()


async def stop_client(client: Any) -> None:
    """`client.stop()` of an aiokafka consumer or producer. During a broker outage the consumer's
    fetcher, closing, awaits its own cancelled fetch task and lets that CancelledError out although
    nobody cancelled the caller; that one is swallowed, a real cancellation of the caller is not."""
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        # the fetcher's error cut stop() short before it closed the connections: close them here
        inner = getattr(client, "_client", None)
        if inner is not None:
            with contextlib.suppress(Exception):
                await inner.close()
