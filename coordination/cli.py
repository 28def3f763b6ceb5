"""The `coord` console script: the operator's commands (click), one module per command group.

    coord --version
    coord node run --profile P [--node-id ID] [--health-port N]      coordination.cli_node
    coord publish TYPE [--payload JSON | --payload-file F | -] ...    coordination.cli_publish
    coord tail [--bus B] [--type T ...] [--since 10m] [--follow]      coordination.cli_tail
    coord replay --bus B --since T [--until T] (--print | --to-group G [--dry-run])   coordination.cli_replay
    coord dlq list | show ID | stats | redrive | purge                coordination.cli_dlq
    coord daemons list [--profile P]                                  coordination.cli_daemons
    coord status                                                      coordination.cli_status
    coord sync DATA_TYPE [--to NODE ...] [--no-wait] ...              coordination.cli_sync
    coord schema export --format jsonschema|asyncapi | check FILE     coordination.cli_schema

Errors: whatever goes wrong is printed as ONE line on stderr (`coord: error: ...`) with a non-zero
exit: 1 for a failure, 2 for a usage error, 3 when a broker could not be reached; never a traceback.
"""

from __future__ import annotations

import sys

import click

from coordination import __version__
from coordination.cli_context import CliSettings, quiet_client_logs
from coordination.cli_daemons import daemons_group
from coordination.cli_dlq import dlq_group
from coordination.cli_format import CliError
from coordination.cli_node import node_group
from coordination.cli_publish import publish_command
from coordination.cli_replay import replay_command
from coordination.cli_schema import schema_group
from coordination.cli_status import status_command
from coordination.cli_sync import sync_command
from coordination.cli_tail import tail_command

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="coord", message="%(prog)s %(version)s")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="how long to retry an unreachable broker (default: RINGRIFT_PUBLISH_RETRY_BUDGET, else 10)")
@click.pass_context
def cli(ctx: click.Context, timeout: float | None) -> None:
    """Operate a ringrift-coordination cluster: node agents, events, dead letters."""
    ctx.obj = CliSettings(timeout=timeout)


for command in (node_group, publish_command, tail_command, dlq_group, daemons_group, status_command,
                schema_group):
    cli.add_command(command)
cli.add_command(sync_command)
cli.add_command(replay_command)


def _fail(message: str, code: int) -> int:
    first = (message.strip().splitlines() or ["failed"])[0]
    print(f"coord: error: {first}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """The console-script entry point; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    quiet_client_logs()
    try:
        cli.main(args=args, prog_name="coord", standalone_mode=False)
    except CliError as exc:
        return _fail(str(exc), exc.exit_code)
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        return _fail(exc.format_message() + where, 2)
    except click.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        return _fail("interrupted", 130)
    except BrokenPipeError:  # `coord tail | head`: the reader left; not an error worth a line
        return 0
    except Exception as exc:  # the promise: one line, never a traceback
        return _fail(f"{type(exc).__name__}: {exc}", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
