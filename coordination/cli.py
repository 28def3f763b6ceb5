"""The `coord` console script: the operator's entry point (more commands arrive with later issues)."""

from __future__ import annotations

import sys

from coordination import __version__


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("--version", "version"):
        print(f"coord {__version__}")
        return 0
    print(f"coord {__version__}\nusage: coord --version", file=sys.stderr if args else sys.stdout)
    return 2 if args else 0
