"""`coord node run`: the node agent (coordination.node_agent) in the foreground.

    coord node run --profile coordinator --node-id gpu-07 --health-port 8790

Flags win over the environment: they are written to the RINGRIFT_* variables the router and the
health server read (`RouterConfig.from_env`, `HealthServerSettings.from_env`) before either is built,
so there is one way configuration reaches them. Logs go to stderr from the moment the node is ready;
during start-up the outcome is reported once (a client library logs every failed connection attempt).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click

from brokers.errors import BrokerError
from coordination.cli_context import CliSettings
from coordination.cli_format import CliError
from coordination.node_agent import NodeAgent, NodeAgentError

__all__ = ["node_group"]


@click.group("node")
def node_group() -> None:
    """The node agent."""


def _enable_logs(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("aiokafka", "kafka", "redis", "brokers", "coordination"):
        logging.getLogger(name).setLevel(logging.NOTSET)


@node_group.command("run")
@click.option("--profile", required=True, metavar="P", help="the daemons to run (see `coord daemons list`)")
@click.option("--node-id", metavar="ID", help="this node's name (default: RINGRIFT_NODE_ID, else the host name)")
@click.option("--health-port", type=click.IntRange(0, 65535), metavar="N",
              help="port of /healthz, /readyz, /status, /metrics (0: any free port; default RINGRIFT_HEALTH_PORT "
                   "or 8790)")
@click.option("--heartbeat-interval", type=click.FloatRange(min=0), default=5.0, show_default=True,
              metavar="SECONDS", help="how often the node's heartbeat is published (0: never)")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="a module whose register(manager) adds daemons (repeatable; default RINGRIFT_PLUGINS)")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning",
              show_default=True)
@click.pass_obj
def run_command(settings: CliSettings, profile: str, node_id: str | None, health_port: int | None,
                heartbeat_interval: float, plugins: tuple[str, ...], log_level: str) -> None:
    """Run a profile's daemons until SIGTERM or SIGINT, then stop them gracefully."""
    if node_id is not None:
        os.environ["RINGRIFT_NODE_ID"] = node_id
    if health_port is not None:
        os.environ["RINGRIFT_HEALTH_PORT"] = str(health_port)
    if settings.timeout is not None:
        os.environ["RINGRIFT_PUBLISH_RETRY_BUDGET"] = str(settings.timeout)

    def ready(line: str) -> None:
        print(line, flush=True)
        _enable_logs(log_level)

    async def main() -> None:
        agent = NodeAgent(profile, heartbeat_interval_s=heartbeat_interval, plugins=list(plugins) or None)
        await agent.run(on_ready=ready)

    try:
        asyncio.run(main())
    except NodeAgentError as exc:
        raise CliError(str(exc), exit_code=3 if exc.unreachable else 1) from None
    except BrokerError as exc:
        raise CliError(f"{type(exc).__name__}: {exc}", exit_code=3 if exc.retriable else 1) from None
    print("node stopped", flush=True)
