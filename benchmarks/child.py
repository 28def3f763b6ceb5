"""One measurement in its own process: `python -m benchmarks.child '<json spec>'` (see procs).

The spec names the workload (`"workload": "W2"`) and what that workload's `child(spec)` needs. The
child prints `RESULT <json>` last; a workload whose parent must wait for it calls `ready()` first.
To profile one contender, run its child under a profiler (benchmarks/README.md shows how).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys

__all__ = ["MODULES", "ready"]

MODULES = {"W1": "benchmarks.w1_publish", "W2": "benchmarks.w2_consume", "W3": "benchmarks.w3_latency",
           "W4": "benchmarks.w4_router_path", "W5": "benchmarks.w5_fanout", "W6": "benchmarks.w6_failures",
           "W7": "benchmarks.w7_footprint"}


def ready() -> None:
    """Tell the parent this child is set up (procs.Child.ready waits for it)."""
    print("READY", flush=True)


def main() -> None:
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    spec = json.loads(sys.argv[1])
    module = importlib.import_module(MODULES[spec["workload"]])
    result = asyncio.run(module.child(spec))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
