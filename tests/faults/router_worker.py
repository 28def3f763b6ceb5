"""A router in its own process, for the process-level fault tests (tests/faults/test_router_processes.py).

The router is configured from the environment only (`RouterConfig.from_env()`: RINGRIFT_REDIS_URL,
RINGRIFT_KAFKA_BOOTSTRAP, RINGRIFT_NAMESPACE, RINGRIFT_NODE_ID, RINGRIFT_SERVICE_NAME, ...), as a
deployed process would be. The ledger lives in a Redis of its own choosing (`--ledger-url`).

    router_worker.py subscribe --event-type T --ledger-url URL --ledger NAME [--sleep S] [--poison N]
        Subscribes to T, starts the router, then proves every bus it reads is positioned by publishing
        warm-up events to each bus alone until each came back, and prints READY. Each handled event
        (warm-ups aside) is one atomic MULTI on the ledger:
            HSETNX <NAME>:rows <event_id> <origin>|<n>    the side effect, once per event id
            HINCRBY <NAME>:hits <event_id> 1              every handler run, so repeats are visible
        then sleeps S seconds. An event whose payload n equals --poison kills the process (os._exit)
        after INCR <NAME>:poison_calls. The router's stats are written to <NAME>:stats (JSON) every
        0.1 s. SIGTERM stops the router and exits 0 after printing STOPPED.

    router_worker.py publish --event-type T --count N [--first K] [--data/--no-data] ...
        Publishes N events (payload {"n": K..K+N-1}), at most --concurrency at a time, to the chosen
        buses; prints one line per event ("<n> <event_id>") in publish order, then "STATS <json>".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import redis.asyncio as aioredis

from coordination.config import RouterConfig
from coordination.event_router import RouterEvent, UnifiedEventRouter

POISON_EXIT_CODE = 17
_WARMUP_ROUTES = {  # each warm-up rides exactly one bus: (data, stage, cross)
    "data_bus": (True, False, False), "stage_bus": (False, True, False), "cross_process": (False, False, True)}


def _router() -> UnifiedEventRouter:
    """The router of this process, from the environment alone."""
    return UnifiedEventRouter(RouterConfig.from_env())


async def _warm_up(router: UnifiedEventRouter, event_type: str, seen: set[str], timeout_s: float) -> None:
    """Publish one warm-up per bus until a warm-up came back on every bus this router reads."""
    wanted = set(_WARMUP_ROUTES) if router.config.kafka_enabled else {"data_bus", "stage_bus"}
    deadline = time.monotonic() + timeout_s
    while not wanted <= seen:
        if time.monotonic() > deadline:
            raise TimeoutError(f"warm-ups seen on {sorted(seen)} only, wanted {sorted(wanted)}")
        for origin in sorted(wanted - seen):
            data, stage, cross = _WARMUP_ROUTES[origin]
            # a fresh payload each time: a repeated one would be dropped as a content duplicate
            await router.publish(event_type, {"warmup": uuid.uuid4().hex}, "router_worker",
                                 route_to_data_bus=data, route_to_stage_bus=stage, route_to_cross_process=cross)
        for _ in range(10):
            if wanted <= seen:
                break
            await asyncio.sleep(0.05)


async def subscribe(args: argparse.Namespace) -> int:
    """Run a subscriber until SIGTERM (or until the poison event kills it)."""
    ledger = aioredis.Redis.from_url(args.ledger_url)
    rows, hits, name = f"{args.ledger}:rows", f"{args.ledger}:hits", args.ledger
    warmups_seen: set[str] = set()

    async def handler(event: RouterEvent) -> None:
        if "warmup" in event.payload:
            warmups_seen.add(event.origin.value)
            return
        n = event.payload.get("n")
        if args.poison is not None and n == args.poison:
            await ledger.incr(f"{name}:poison_calls")
            os._exit(POISON_EXIT_CODE)  # a handler that takes its process down, every time
        async with ledger.pipeline(transaction=True) as pipe:
            pipe.hsetnx(rows, event.event_id, f"{event.origin.value}|{n}")
            pipe.hincrby(hits, event.event_id, 1)
            await pipe.execute()
        if args.sleep:
            await asyncio.sleep(args.sleep)

    router = _router()
    router.subscribe(args.event_type, handler)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def write_stats() -> None:
        while True:
            await ledger.set(f"{name}:stats", json.dumps(router.get_stats()))
            await asyncio.sleep(0.1)

    await router.start()
    stats_task = asyncio.create_task(write_stats())
    try:
        await _warm_up(router, args.event_type, warmups_seen, args.ready_timeout)
        print("READY", flush=True)
        await stop.wait()
    finally:
        stats_task.cancel()
        await router.stop()
        await ledger.set(f"{name}:stats", json.dumps(router.get_stats()))
        await ledger.aclose()
    print("STOPPED", flush=True)
    return 0


async def publish(args: argparse.Namespace) -> int:
    """Publish --count events, --concurrency at a time; print their ids in order, then the stats."""
    router = _router()
    gate = asyncio.Semaphore(args.concurrency)

    async def one(n: int) -> RouterEvent:
        async with gate:
            return await router.publish(args.event_type, {"n": n, "config_key": "hex8_2p"}, "router_worker",
                                        route_to_data_bus=args.data, route_to_stage_bus=args.stage,
                                        route_to_cross_process=args.cross)

    try:
        events = await asyncio.gather(*(one(n) for n in range(args.first, args.first + args.count)))
    finally:
        await router.stop()
    for event in events:
        print(event.payload["n"], event.event_id)
    print("STATS", json.dumps(router.get_stats()), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("subscribe")
    sub.add_argument("--event-type", required=True)
    sub.add_argument("--ledger-url", required=True)
    sub.add_argument("--ledger", required=True, help="key prefix of the ledger")
    sub.add_argument("--sleep", type=float, default=0.0, help="seconds each handler run sleeps")
    sub.add_argument("--poison", type=int, default=None, help="payload n whose handler kills the process")
    sub.add_argument("--ready-timeout", type=float, default=45.0)
    pub = commands.add_parser("publish")
    pub.add_argument("--event-type", required=True)
    pub.add_argument("--count", type=int, required=True)
    pub.add_argument("--first", type=int, default=0)
    pub.add_argument("--concurrency", type=int, default=1)
    for bus in ("data", "stage", "cross"):
        pub.add_argument(f"--{bus}", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    return asyncio.run(subscribe(args) if args.command == "subscribe" else publish(args))


if __name__ == "__main__":
    raise SystemExit(main())
