"""redis-py connections whose writes are bounded by the socket timeout without a task per command.

redis-py (8.1) bounds every write of a connection that has a `socket_timeout` with `asyncio.wait_for`,
which wraps the write in a new task and costs extra event-loop turns on every command: a third of
the CPU of an awaited XADD. Here the same bound is an `asyncio.timeout` scope around the drain, and
errors are handled as redis-py handles them. Used by everything in brokers/ that talks to Redis:

    aioredis.Redis.from_url(url, socket_timeout=10, connection_class=connection_class(url))
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc

__all__ = ["connection_class"]


class _TimedWrite:
    async def send_packed_command(self: Any, command: bytes | str | Iterable[bytes],
                                  check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect_check_health(check_health=False)
        if check_health:
            await self.check_health()
        if isinstance(command, str):
            command = command.encode()
        if isinstance(command, bytes):
            command = [command]
        try:
            self._writer.writelines(command)
            async with asyncio.timeout(self.socket_timeout):
                await self._writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise rexc.TimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)
            raise rexc.ConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:  # a half-sent command leaves the connection unusable
            await self.disconnect(nowait=True)
            raise


class _Connection(_TimedWrite, aioredis.Connection):
    pass


class _SSLConnection(_TimedWrite, aioredis.SSLConnection):
    pass


def connection_class(url: str) -> type[aioredis.Connection]:
    """The connection class for `url` (rediss:// gets TLS)."""
    return _SSLConnection if url.lower().startswith("rediss://") else _Connection
