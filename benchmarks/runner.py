"""The command line: pick the workloads, check the services, run them, print the table, write JSON.

    python -m benchmarks [--quick] [--only W1,W3] [--json FILE] [--markdown FILE]   (scripts/bench runs this)

Errors (an unknown workload, a service that does not answer) are one line on stderr and a non-zero
exit. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks import clients
from benchmarks.child import MODULES
from benchmarks.context import Context
from benchmarks.events import RECORD_BYTES
from benchmarks.procs import REPO, Launcher
from benchmarks.results import Row
from benchmarks.settings import Settings
from benchmarks.table import markdown_table, print_table

__all__ = ["main"]

TITLES = {"W1": "publish throughput", "W2": "consume+ack through the router", "W3": "end-to-end latency",
          "W4": "the router's own path (memory broker)", "W5": "fan-out", "W6": "failure path", "W7": "footprint"}
NO_SERVICES = {"W4"}


class BenchError(Exception):
    """A one-line reason to stop before measuring."""


def _selected(only: str | None) -> list[str]:
    if not only:
        return list(MODULES)
    names = [part.strip().upper() for part in only.split(",") if part.strip()]
    unknown = [n for n in names if n not in MODULES]
    if unknown or not names:
        raise BenchError(f"unknown workload {', '.join(unknown) or repr(only)}: use {', '.join(MODULES)}")
    return [n for n in MODULES if n in names]


async def _check_services(settings: Settings) -> dict[str, str]:
    """Versions of the services; BenchError when one does not answer."""
    from aiokafka.admin import AIOKafkaAdminClient

    hint = 'start them with `eval "$(scripts/services up)"` (scripts/bench does it)'
    client = clients.redis_client(settings.redis_url)
    try:
        info = await asyncio.wait_for(client.info("server"), 5)
    except Exception as exc:
        raise BenchError(f"Redis at {settings.redis_url} does not answer ({type(exc).__name__}: {exc}); "
                         f"{hint}") from None
    finally:
        await client.aclose()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        await asyncio.wait_for(admin.list_topics(), 10)
    except Exception as exc:
        raise BenchError(f"Kafka at {settings.kafka_bootstrap} does not answer ({type(exc).__name__}: {exc}); "
                         f"{hint}") from None
    finally:
        await admin.close()
    return {"redis": str(info.get("redis_version", "?")), "kafka_bootstrap": settings.kafka_bootstrap}


def _machine(launcher: Launcher) -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "")
    with open("/proc/meminfo") as meminfo:
        mem_kb = int(next(ln.split()[1] for ln in meminfo if ln.startswith("MemTotal")))
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "kernel": platform.release(), "pinning": launcher.pinning}


def _faststream_version(missing: str | None) -> str:
    if missing:
        return "not installed"
    from importlib.metadata import version

    return version("faststream")


def _source_fingerprint() -> str:
    """A hash of the product's code (brokers, coordination, schemas): the table is of one version
    only if it is the same at the end of the run as at the start."""
    digest = hashlib.sha256()
    for path in sorted(p for package in ("brokers", "coordination", "schemas") for p in (REPO / package).rglob("*.py")):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows, one repetition (under 3 minutes)")
    parser.add_argument("--only", metavar="W1,W3", help=f"run only these workloads ({','.join(MODULES)})")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the results as JSON")
    parser.add_argument("--markdown", metavar="FILE", type=Path, help="also write the table as markdown")
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    try:
        selected = _selected(args.only)
        settings = Settings.build(args.quick)
        services = asyncio.run(_check_services(settings)) if set(selected) - NO_SERVICES else {}
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    launcher = Launcher(settings.child_timeout_s)
    missing = clients.faststream_missing()
    if missing:
        err.print(f"[yellow]bench: {missing}; its rows are left empty[/yellow]", highlight=False)
    ctx = Context(settings, launcher, missing, err)
    started, code_before = time.time(), _source_fingerprint()
    rows: list[Row] = []
    took: dict[str, float] = {}  # workload -> seconds it ran
    for name in selected:
        module = importlib.import_module(MODULES[name])
        begun = time.time()
        try:
            rows += module.run(ctx)
        except Exception as exc:  # one workload's failure must not cost the others' figures
            err.print(f"[red]bench: {name} failed: {type(exc).__name__}: {exc}[/red]", highlight=False)
            rows.append(Row(name, TITLES[name], "-", "ours", error=f"the workload failed: {type(exc).__name__}: {exc}"))
        took[name] = round(time.time() - begun, 1)
        ctx.progress(f"{name} took {took[name]:.0f} s")
    elapsed = time.time() - started
    code_after = _source_fingerprint()
    if code_after != code_before:
        err.print(f"[yellow]bench: the product's code changed during the run ({code_before} -> {code_after}): "
                  "the figures mix two versions[/yellow]", highlight=False)
    machine = _machine(launcher)
    meta = {"mode": "quick" if args.quick else "full", "workloads": selected, "elapsed_s": round(elapsed, 1),
            "workload_s": took,
            "record_bytes": RECORD_BYTES, "faststream": _faststream_version(missing), "services": services,
            "machine": machine, "settings": settings.as_dict(), "code": {"start": code_before, "end": code_after},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))}
    title = (f"ringrift benchmarks, {meta['mode']} run: {machine['cores']} cores ({machine['cpu']}), "
             f"pinning {machine['pinning']}; {RECORD_BYTES}-byte records; FastStream {meta['faststream']}; "
             f"Redis {services.get('redis', '-')}; code {code_before}"
             f"{'' if code_after == code_before else f' -> {code_after} (changed during the run)'}; {elapsed:.0f} s")
    out = Console() if sys.stdout.isatty() else Console(width=220)
    print_table(rows, title, out)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows]}, indent=2) + "\n")
        err.print(f"[dim]bench:[/dim] JSON written to {args.json}", highlight=False)
    if args.markdown:
        args.markdown.write_text(f"{title}\n\n{markdown_table(rows)}")
        err.print(f"[dim]bench:[/dim] markdown written to {args.markdown}", highlight=False)
