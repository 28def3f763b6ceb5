"""`coord schema export|check`: the event catalog for teams in other languages, and a validator.

    coord schema export --format jsonschema [-o FILE]    envelope + one definition per event type
    coord schema export --format asyncapi [-o FILE]      AsyncAPI 3 document of the streams and topics
    coord schema check FILE|-  [--strict]                problems with one JSON event (exit 1 if any)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from coordination.cli_format import CliError
from schemas.export import asyncapi_document, catalog_json_schema, check_event, dump

__all__ = ["schema_group"]


@click.group("schema")
def schema_group() -> None:
    """Export the event catalog (JSON Schema, AsyncAPI) or check an event against it."""


@schema_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonschema", "asyncapi"]), required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write to FILE instead of standard output")
@click.option("--namespace", default=None, help="stream/topic prefix (default: RINGRIFT_NAMESPACE or ringrift)")
def export_command(fmt: str, output: Path | None, namespace: str | None) -> None:
    """Print or write the catalog as JSON Schema (draft 2020-12) or AsyncAPI 3."""
    ns = namespace or os.environ.get("RINGRIFT_NAMESPACE") or "ringrift"
    text = dump(catalog_json_schema() if fmt == "jsonschema" else asyncapi_document(ns))
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"wrote {fmt} to {output} ({len(text):,} bytes)", err=True)


@schema_group.command("check")
@click.argument("source", type=click.File("rb"))
@click.option("--strict", is_flag=True, help="an unknown event type is an error, not a warning")
def check_command(source: click.utils.LazyFile, strict: bool) -> None:
    """Check one JSON event (a file, or - for standard input) against the catalog."""
    problems = check_event(source.read(), strict=strict)
    errors = [p for p in problems if not p.startswith("warning:")]
    for problem in problems:
        click.echo(problem, err=bool(errors))
    if errors:
        raise CliError(f"{len(errors)} problem(s) in the event (first: {errors[0]})")
    click.echo("ok" if not problems else "ok (with warnings)")
