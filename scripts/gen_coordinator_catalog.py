"""Generate ``coordination/coordinator_catalog.py`` from ``schemas/data/catalog.json``.

The coordinator catalog (the original bootstrap's registry of 33 coordinators with their display
names, init patterns, enable flags and delegation, the 8 layers, and the order in which the
original actually initialised them) is written out as literal Python, like the daemon catalog, so
the bootstrap never reads JSON at run time.

Usage::

    python scripts/gen_coordinator_catalog.py          # (re)write coordination/coordinator_catalog.py
    python scripts/gen_coordinator_catalog.py --check  # exit 1 if the file is out of date

Checked before anything is written: unique keys, a known pattern for each entry, enable flags of
the form ``enable_*`` (``"enable_health or enable_error"`` becomes both flags), every delegation,
layer member and init-order entry names a registry entry, every entry marked ``in_init_order``
is in the init order exactly once and in exactly one layer, and layer dependencies name layers.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from _generated import generate  # scripts/_generated.py (this script's folder is on sys.path)

__all__ = ["CATALOG_PATH", "OUTPUT_PATH", "CatalogError", "main", "render_module"]

ROOT = Path(__file__).resolve().parents[1]
CATALOG_PATH = ROOT / "schemas" / "data" / "catalog.json"
OUTPUT_PATH = ROOT / "coordination" / "coordinator_catalog.py"
_PATTERNS = {"WIRE": "WIRE", "GET": "GET", "IMPORT": "IMPORT", "SKIP": "SKIP", "DELEGATE": "DELEGATE",
             "special_case": "SPECIAL_CASE"}
_LINE = 120
_FLAG = re.compile(r"enable_[a-z0-9_]+")


class CatalogError(ValueError):
    """The catalog contradicts an invariant the generated module relies on."""


def _flags(entry: dict[str, Any]) -> tuple[str, ...]:
    """``"enable_health or enable_error"`` -> ("enable_health", "enable_error"); None -> ()."""
    raw = entry["enable_flag"]
    if raw is None:
        return ()
    flags = tuple(part.strip() for part in raw.split(" or "))
    bad = [f for f in flags if not _FLAG.fullmatch(f)]
    if bad:
        raise CatalogError(f"{entry['key']}: enable flag(s) not of the form enable_*: {bad}")
    return flags


def _check(catalog: dict[str, Any]) -> None:
    registry = catalog["coordinator_registry"]
    keys = [e["key"] for e in registry]
    if len(set(keys)) != len(keys):
        raise CatalogError("duplicate coordinator keys")
    known = set(keys)
    for entry in registry:
        if entry["pattern"] not in _PATTERNS:
            raise CatalogError(f"{entry['key']}: unknown pattern {entry['pattern']!r}")
        if entry["delegate_to"] is not None and entry["delegate_to"] not in known:
            raise CatalogError(f"{entry['key']}: delegates to unknown {entry['delegate_to']!r}")
        _flags(entry)
    order = catalog["coordinator_init_order_actual"]
    if len(set(order)) != len(order) or set(order) - known:
        raise CatalogError(f"init order repeats or names unknown coordinators: {sorted(set(order) - known)}")
    expected = {e["key"] for e in registry if e["in_init_order"]}
    if expected != set(order):
        raise CatalogError(f"in_init_order entries differ from the init order: {sorted(expected ^ set(order))}")
    layer_numbers = {layer["layer"] for layer in catalog["coordinator_layers"]}
    members = [m for layer in catalog["coordinator_layers"] for m in layer["coordinators"]]
    if len(set(members)) != len(members) or set(members) != set(order):
        raise CatalogError("every initialised coordinator must sit in exactly one layer")
    for layer in catalog["coordinator_layers"]:
        if set(layer["depends_on"]) - layer_numbers:
            raise CatalogError(f"layer {layer['layer']} depends on unknown layers")


def _tuple(items: list[Any] | tuple[Any, ...]) -> str:
    inner = ", ".join(json.dumps(i) for i in items)
    return f"({inner},)" if len(items) == 1 else f"({inner})"


def _spec_lines(entry: dict[str, Any], layer: int | None) -> list[str]:
    args = [f"{json.dumps(entry['display_name'])}", f"InitPattern.{_PATTERNS[entry['pattern']]}", repr(layer)]
    flags = _flags(entry)
    if flags:
        args.append(f"enable_flags={_tuple(flags)}")
    if entry["delegate_to"]:
        args.append(f"delegate_to={json.dumps(entry['delegate_to'])}")
    if entry["module"]:
        args.append(f"original_module={json.dumps(entry['module'])}")
    if entry["function"]:
        args.append(f"original_function={json.dumps(entry['function'])}")
    args.insert(0, json.dumps(entry["key"]))
    line = f"    {json.dumps(entry['key'])}: CoordinatorSpec({', '.join(args)}),"
    if len(line) <= _LINE:
        return [line]
    return [f"    {json.dumps(entry['key'])}: CoordinatorSpec(", *(f"        {a}," for a in args), "    ),"]


def render_module(catalog: dict[str, Any]) -> str:
    """Return the source of ``coordination/coordinator_catalog.py`` for ``catalog``."""
    _check(catalog)
    registry: list[dict[str, Any]] = catalog["coordinator_registry"]
    layer_of = {m: layer["layer"] for layer in catalog["coordinator_layers"] for m in layer["coordinators"]}
    flags = sorted({f for e in registry for f in _flags(e)})
    lines = [
        "# GENERATED by scripts/gen_coordinator_catalog.py from schemas/data/catalog.json: do not edit.",
        "# Regenerate with `python scripts/gen_coordinator_catalog.py` (`--check` verifies it is current).",
        '"""Coordinator catalog of the original bootstrap, as literal Python (generated).',
        "",
        "``COORDINATOR_SPECS`` is the original's registry: how each coordinator was initialised",
        "(``InitPattern``), the ``bootstrap_coordination`` flags that enable it (any of them) and, for",
        "DELEGATE, the coordinator doing its work. ``COORDINATOR_INIT_ORDER`` is the order the original",
        "really initialised them in (pipeline_orchestrator and curriculum_integration last);",
        "``COORDINATOR_LAYERS`` the documented layers. ``original_module``/``original_function`` name",
        "the original's code, for reference only. ``coordination.coordination_bootstrap`` uses these.",
        "Over 400 lines because every entry and layer is written out literally.",
        '"""',
        "",
        "from enum import Enum",
        "from typing import NamedTuple",
        "",
        "__all__ = [",
        '    "COORDINATOR_ENABLE_FLAGS",',
        '    "COORDINATOR_INIT_ORDER",',
        '    "COORDINATOR_LAYERS",',
        '    "COORDINATOR_SPECS",',
        '    "CoordinatorLayer",',
        '    "CoordinatorSpec",',
        '    "InitPattern",',
        "]",
        "",
        "",
        "class InitPattern(Enum):",
        '    """How the original bootstrap initialised a coordinator."""',
        "",
        '    WIRE = "wire"  # called its wire_*() function',
        '    GET = "get"  # called its get_*() singleton accessor',
        '    IMPORT = "import"  # only imported its class (the daemon manager started it)',
        '    SKIP = "skip"  # replaced by another coordinator; nothing to initialise',
        '    DELEGATE = "delegate"  # its work is done by delegate_to',
        '    SPECIAL_CASE = "special_case"  # initialised by hand, with extra arguments',
        "",
        "",
        "class CoordinatorSpec(NamedTuple):",
        '    """One coordinator of the original registry."""',
        "",
        "    name: str",
        "    display_name: str",
        "    pattern: InitPattern",
        "    layer: int | None  # None: not initialised by itself (SKIP, DELEGATE)",
        "    enable_flags: tuple[str, ...] = ()  # enabled when any of these flags is true",
        "    delegate_to: str | None = None",
        "    original_module: str | None = None",
        "    original_function: str | None = None",
        "",
        "",
        "class CoordinatorLayer(NamedTuple):",
        '    """One layer of the documented initialisation order."""',
        "",
        "    number: int",
        "    name: str",
        "    coordinators: tuple[str, ...]",
        "    depends_on: tuple[int, ...]",
        '    notes: str = ""',
        "",
        "",
        f"# The {len(registry)} coordinators of the original registry, by key.",
        "COORDINATOR_SPECS: dict[str, CoordinatorSpec] = {",
    ]
    for entry in registry:
        lines += _spec_lines(entry, layer_of.get(entry["key"]))
    lines += ["}", "", "# Initialisation order (shutdown runs it backwards).",
              "COORDINATOR_INIT_ORDER: tuple[str, ...] = ("]
    lines += [f"    {json.dumps(name)}," for name in catalog["coordinator_init_order_actual"]]
    lines += [")", "", "# The documented layers (dependencies between them are documentation, not enforced).",
              "COORDINATOR_LAYERS: tuple[CoordinatorLayer, ...] = ("]
    for layer in catalog["coordinator_layers"]:
        lines += ["    CoordinatorLayer(", f"        {layer['layer']},", f"        {json.dumps(layer['name'])},",
                  "        (", *(f"            {json.dumps(m)}," for m in layer["coordinators"]), "        ),",
                  f"        {_tuple(layer['depends_on'])},"]
        if layer.get("notes"):
            pieces = textwrap.wrap(layer["notes"], 90, drop_whitespace=False)
            lines += [f"        {json.dumps(piece)}" for piece in pieces[:-1]]
            lines.append(f"        {json.dumps(pieces[-1])},")
        lines.append("    ),")
    lines += [")", "", "# Every enable flag of the registry, sorted.", "COORDINATOR_ENABLE_FLAGS: tuple[str, ...] = ("]
    lines += [f"    {json.dumps(f)}," for f in flags]
    lines += [")"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the generated module; return the exit status."""
    return generate(__doc__, render_module, CATALOG_PATH, OUTPUT_PATH, ROOT, argv)


if __name__ == "__main__":
    sys.exit(main())
