"""A daemon in its own process, for tests/faults/test_consumer_daemon_processes.py and
tests/integration/test_leader_election.py. Configured by RINGRIFT_* variables (RouterConfig.from_env()).

    daemon_worker.py consume --event-type T --ledger-url URL --ledger NAME [--sleep S]
        Runs a ConsumerDaemon of type LEDGER_TEST subscribed to T on the cross-process bus. Each event:
        one MULTI on the ledger (HSETNX <NAME>:rows <event_id> <member>|<n>; HINCRBY <NAME>:hits
        <event_id> 1), then a sleep of S seconds. Prints READY once the daemon's router runs.

    daemon_worker.py leader --ledger-url URL --ledger NAME [--interval S] [--session-timeout S]
        Runs a leader_only PeriodicDaemon whose tick RPUSHes "<member>|<unix time>" to <NAME>:ticks;
        leadership changes are announced through a router (LEADER_ELECTED / LEADER_LOST). Prints
        READY once it joined the election.

SIGTERM stops the daemon (and its router or candidacy) and exits 0 after printing STOPPED.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import redis.asyncio as aioredis

from coordination.config import RouterConfig
from coordination.daemons.base import ConsumerDaemon
from coordination.daemons.leader import Leadership
from coordination.daemons.periodic import PeriodicDaemon
from coordination.event_router import RouterEvent, UnifiedEventRouter

MEMBER = f"{os.environ.get('RINGRIFT_NODE_ID', 'node')}.{os.getpid()}"


async def _until_sigterm(daemon: ConsumerDaemon | PeriodicDaemon) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(daemon.stop()))


async def consume(args: argparse.Namespace) -> int:
    ledger = aioredis.Redis.from_url(args.ledger_url)

    class LedgerDaemon(ConsumerDaemon):
        daemon_type = "LEDGER_TEST"
        subscriptions = (args.event_type,)

        async def handle(self, event: RouterEvent) -> None:
            async with ledger.pipeline(transaction=True) as pipe:
                pipe.hsetnx(f"{args.ledger}:rows", event.event_id, f"{MEMBER}|{event.payload.get('n')}")
                pipe.hincrby(f"{args.ledger}:hits", event.event_id, 1)
                await pipe.execute()
            if args.sleep:
                await asyncio.sleep(args.sleep)

    daemon = LedgerDaemon(RouterConfig.from_env())
    await _until_sigterm(daemon)
    runner = asyncio.create_task(daemon.run())
    while not daemon.router.is_running:
        if runner.done():
            await runner
            return 1
        await asyncio.sleep(0.05)
    print("READY", flush=True)
    await runner
    await ledger.aclose()
    print("STOPPED", flush=True)
    return 0


async def leader(args: argparse.Namespace) -> int:
    ledger = aioredis.Redis.from_url(args.ledger_url)
    config = RouterConfig.from_env()
    router = UnifiedEventRouter(config)  # only publishes the announcements
    leadership = Leadership(config, router=router, session_timeout_s=args.session_timeout, member_id=MEMBER)

    class Ticker(PeriodicDaemon):
        leader_only = True

        async def tick(self) -> None:
            await ledger.rpush(f"{args.ledger}:ticks", f"{MEMBER}|{time.time():.3f}")

    daemon = Ticker(interval_s=args.interval, leadership=leadership)
    await _until_sigterm(daemon)
    await leadership.start()
    print("READY", flush=True)
    try:
        await daemon.run()
    finally:
        await leadership.stop()
        await router.stop()
        await ledger.aclose()
    print("STOPPED", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("consume")
    sub.add_argument("--event-type", required=True)
    sub.add_argument("--ledger-url", required=True)
    sub.add_argument("--ledger", required=True)
    sub.add_argument("--sleep", type=float, default=0.0)
    lead = commands.add_parser("leader")
    lead.add_argument("--ledger-url", required=True)
    lead.add_argument("--ledger", required=True)
    lead.add_argument("--interval", type=float, default=0.2)
    lead.add_argument("--session-timeout", type=float, default=6.0)
    args = parser.parse_args(argv)
    return asyncio.run(consume(args) if args.command == "consume" else leader(args))


if __name__ == "__main__":
    raise SystemExit(main())
