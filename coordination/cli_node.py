"""`coord node run`: the node agent (coordination.node_agent) in the foreground.

    coord node run --profile coordinator --node-id gpu-07 --health-port 8790 --log-format json

Flags win over the environment: they are written to the RINGRIFT_* variables the router and the
health server read (`RouterConfig.from_env`, `HealthServerSettings.from_env`) before either is built,
so there is one way configuration reaches them. The agent's own flags read RINGRIFT_HEARTBEAT_INTERVAL,
RINGRIFT_LOG_FORMAT and RINGRIFT_LOG_LEVEL when not given. Logs go to stderr (coordination.log_format:
text, or JSON lines with the node, event and daemon of each record) from the moment the node is ready;
during start-up the outcome is reported once (a client library logs every failed connection attempt).
"""

from __future__ import annotations

import asyncio
import logging
import os

import click

from brokers.errors import BrokerError
from coordination.cli_context import CliSettings
from coordination.cli_format import CliError
from coordination.log_format import LOG_FORMATS, configure_logging
from coordination.node_agent import NodeAgent, NodeAgentError

__all__ = ["node_group"]


@click.group("node")
def node_group() -> None:
    """The node agent."""


def _enable_logs(log_format: str, level: str, node_id: str) -> None:
    configure_logging(log_format, level=level, node_id=node_id)
    for name in ("aiokafka", "kafka", "redis", "brokers", "coordination"):  # quieted while starting
        logging.getLogger(name).setLevel(logging.NOTSET)


@node_group.command("run")
@click.option("--profile", required=True, metavar="P", help="the daemons to run (see `coord daemons list`)")
@click.option("--node-id", metavar="ID", help="this node's name (default: RINGRIFT_NODE_ID, else the host name)")
@click.option("--health-port", type=click.IntRange(0, 65535), metavar="N",
              help="port of /healthz, /readyz, /status, /metrics (0: any free port; default RINGRIFT_HEALTH_PORT "
                   "or 8790)")
@click.option("--heartbeat-interval", type=click.FloatRange(min=0), default=5.0, show_default=True,
              envvar="RINGRIFT_HEARTBEAT_INTERVAL", metavar="SECONDS",
              help="how often the node's heartbeat is published (0: never; env RINGRIFT_HEARTBEAT_INTERVAL)")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="a module whose register(manager) adds daemons (repeatable; default RINGRIFT_PLUGINS)")
@click.option("--log-format", type=click.Choice(LOG_FORMATS, case_sensitive=False), default="text",
              show_default=True, envvar="RINGRIFT_LOG_FORMAT",
              help="json: one object per line with node_id, event_id, trace_id, daemon (env RINGRIFT_LOG_FORMAT)")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="warning", show_default=True, envvar="RINGRIFT_LOG_LEVEL", help="(env RINGRIFT_LOG_LEVEL)")
@click.pass_obj
def run_command(settings: CliSettings, profile: str, node_id: str | None, health_port: int | None,
                heartbeat_interval: float, plugins: tuple[str, ...], log_format: str, log_level: str) -> None:
    """Run a profile's daemons until SIGTERM or SIGINT, then stop them gracefully."""
    if node_id is not None:
        os.environ["RINGRIFT_NODE_ID"] = node_id
    if health_port is not None:
        os.environ["RINGRIFT_HEALTH_PORT"] = str(health_port)
    if settings.timeout is not None:
        os.environ["RINGRIFT_PUBLISH_RETRY_BUDGET"] = str(settings.timeout)

    async def main() -> None:
        agent = NodeAgent(profile, heartbeat_interval_s=heartbeat_interval, plugins=list(plugins) or None)

        def ready(line: str) -> None:
            print(line, flush=True)
            _enable_logs(log_format.lower(), log_level, agent.node_id)

        await agent.run(on_ready=ready)

    try:
        asyncio.run(main())
    except NodeAgentError as exc:
        raise CliError(str(exc), exit_code=3 if exc.unreachable else 1) from None
    except BrokerError as exc:
        raise CliError(f"{type(exc).__name__}: {exc}", exit_code=3 if exc.retriable else 1) from None
    print("node stopped", flush=True)
