"""The command line every code generator under scripts/ shares: write the generated module, or with
`--check` fail when the file in the tree differs from what the catalog gives.

    sys.exit(generate(__doc__, render_module, CATALOG_PATH, OUTPUT_PATH, ROOT))
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def generate(doc: str | None, render: Callable[[Any], str], catalog: Path, output: Path, root: Path,
             argv: list[str] | None = None) -> int:
    """Render `output` from the JSON `catalog`; the exit status (1: `--check` found it out of date)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--check", action="store_true", help="fail if the generated file is out of date")
    args = parser.parse_args(argv)
    source = render(json.loads(catalog.read_text(encoding="utf-8")))
    current = output.read_text(encoding="utf-8") if output.exists() else None
    if args.check:
        if current != source:
            print(f"{output.relative_to(root)} is out of date: run scripts/{Path(sys.argv[0]).name}")
            return 1
        return 0
    if current != source:
        output.write_text(source, encoding="utf-8")
        print(f"wrote {output.relative_to(root)}")
    return 0
