"""Where the router's coroutines run: its home event loop, reached from any thread or loop.

Broker clients belong to the loop that connected them (the router's *home* loop). `LoopBridge`
runs a coroutine there whatever the caller is:

    await bridge.run(coro)        from a coroutine: directly on the home loop, else handed over to it
    bridge.run_blocking(coro)     from a thread without a running loop: blocks for the result; when no
                                  home loop exists yet, a private loop is started in a daemon thread
    bridge.schedule(coro)         from the home loop's own thread in sync code (cannot block): a task
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopBridge"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class LoopBridge:
    def __init__(self, name: str = "ringrift-router") -> None:
        self._name = name
        self.home: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Future[Any]] = set()

    def usable_home(self) -> asyncio.AbstractEventLoop | None:
        """The home loop if it can still run work (a closed or stopped loop is forgotten)."""
        if self.home is not None and (self.home.is_closed() or not self.home.is_running()):
            self.home = None
        return self.home

    def adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        self.home = loop

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        here = asyncio.get_running_loop()
        if self.home is here:  # the common case, and a running loop is neither closed nor stopped
            return await coro
        home = self.usable_home()
        if home is None or home is here:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, home))

    def run_blocking(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        home = self.usable_home() or self._start_private_loop()
        return asyncio.run_coroutine_threadsafe(coro, home).result(timeout)

    def schedule(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` without waiting for it; failures are logged, never lost silently."""
        here = asyncio.get_running_loop()
        home = self.usable_home()
        future: asyncio.Future[Any]
        if home is None or home is here:
            future = here.create_task(coro)
        else:
            future = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, home))
        self._tasks.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future: asyncio.Future[Any]) -> None:
        self._tasks.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("scheduled router work failed", exc_info=future.exception())

    def _start_private_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=main, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()
        self.home = loop
        return loop

    def stop_private_loop(self) -> None:
        """Stop the private loop (if one was started); call it from outside that loop."""
        thread, loop = self._thread, self.home
        if thread is None or loop is None:
            return
        self._thread = None
        self.home = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
