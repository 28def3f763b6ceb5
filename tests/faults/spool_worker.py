"""A publisher process for tests/faults/test_router_spool.py, configured by the RINGRIFT_* environment.

    python tests/faults/spool_worker.py publish N   publish one event, print "ACK <id>", then wait for a
                                                    line on stdin (the test takes a broker down), publish
                                                    N more printing "ACK <id>" each, print "DONE" and
                                                    wait to be killed
    python tests/faults/spool_worker.py drain       start the router, wait until its spool is empty,
                                                    print "DRAINED <stats>" and exit
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from coordination.config import RouterConfig
from coordination.event_router import UnifiedEventRouter

TEST_OPTIONS = {"redis_options": {"block_ms": 100},
                "kafka_options": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}}


async def publish(router: UnifiedEventRouter, count: int) -> None:
    async def one(n: int) -> None:
        event = await router.publish("NEW_GAMES_AVAILABLE", {"config_key": "hex8_2p", "n": n}, source="worker")
        print(f"ACK {event.event_id}", flush=True)

    await one(0)
    await asyncio.to_thread(sys.stdin.readline)
    for n in range(1, count + 1):
        await one(n)
    print("DONE " + json.dumps(router.get_stats()["spool_depth"]), flush=True)
    await asyncio.Event().wait()


async def drain(router: UnifiedEventRouter) -> None:
    await router.start()
    while router.get_stats()["spool_depth"]["total"]:
        await asyncio.sleep(0.05)
    stats = router.get_stats()
    print("DRAINED " + json.dumps({k: stats[k] for k in ("spooled", "spool_depth", "spool_drained")}), flush=True)
    await router.stop()


def main() -> None:
    router = UnifiedEventRouter(RouterConfig.from_env(**TEST_OPTIONS))
    if sys.argv[1] == "publish":
        asyncio.run(publish(router, int(sys.argv[2])))
    else:
        asyncio.run(drain(router))


if __name__ == "__main__":
    main()
