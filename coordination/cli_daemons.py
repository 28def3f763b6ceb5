"""`coord daemons list`: the daemon catalog, which daemons are implemented, and the profiles.

    coord daemons list                    # every daemon type in the catalog
    coord daemons list --profile coordinator --json

"implemented" means the built-ins register a factory for it (`register_builtin_daemons`); the
profiles shown are the ones a node agent can run (`IMPLEMENTED_PROFILES`), next to the original
system's profile membership (`DAEMON_PROFILES`), which names daemons not built yet.
"""

from __future__ import annotations

from typing import Any

import click

from coordination.cli_format import CliError, print_json, print_table, stdout
from coordination.daemon_catalog import DAEMON_PROFILES, DAEMON_SPECS, DaemonType
from coordination.daemon_types import is_critical
from coordination.daemons.builtin import IMPLEMENTED_PROFILES, register_builtin_daemons

__all__ = ["daemons_group", "implemented_types"]


class _Recorder:
    """Stands in for a DaemonManager to learn which types the built-ins register (nothing runs)."""

    def __init__(self) -> None:
        self.types: list[DaemonType] = []

    def register_factory(self, daemon_type: DaemonType, *args: Any, **kwargs: Any) -> DaemonType:
        self.types.append(daemon_type)
        return daemon_type


def implemented_types() -> frozenset[DaemonType]:
    recorder = _Recorder()
    register_builtin_daemons(recorder, lambda: None)  # type: ignore[arg-type, return-value]
    return frozenset(recorder.types)


def _rows(profile: str | None) -> list[dict[str, Any]]:
    implemented = implemented_types()
    if profile is not None:
        known = sorted(set(IMPLEMENTED_PROFILES) | set(DAEMON_PROFILES))
        if profile not in known:
            raise CliError(f"unknown profile {profile!r}; known profiles: {', '.join(known)}")
    rows = []
    for daemon_type, spec in DAEMON_SPECS.items():
        in_profiles = sorted(p for p, members in IMPLEMENTED_PROFILES.items() if daemon_type in members)
        in_catalog = sorted(p for p, members in DAEMON_PROFILES.items() if daemon_type in members)
        if profile is not None and profile not in in_profiles and profile not in in_catalog:
            continue
        rows.append({"daemon": daemon_type.name, "category": spec.category, "implemented": daemon_type in implemented,
                     "critical": is_critical(daemon_type), "deprecated": spec.deprecated,
                     "depends_on": [d.name for d in spec.depends_on],
                     "soft_depends_on": [d.name for d in spec.soft_depends_on],
                     "profiles": in_profiles, "catalog_profiles": in_catalog})
    rows.sort(key=lambda r: (not r["implemented"], r["daemon"]))
    return rows


@click.group("daemons")
def daemons_group() -> None:
    """The daemon catalog."""


@daemons_group.command("list")
@click.option("--profile", metavar="P", help="only the daemons of this profile")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def list_command(profile: str | None, as_json: bool) -> None:
    """Daemon types: implemented or not, critical, dependencies, profiles."""
    rows = _rows(profile)
    if as_json:
        print_json(rows)
        return
    implemented = sum(r["implemented"] for r in rows)
    print_table(["daemon", "implemented", "critical", "depends on", "node-agent profiles", "catalog profiles"],
                [(r["daemon"] + (" (deprecated)" if r["deprecated"] else ""), "yes" if r["implemented"] else "",
                  "yes" if r["critical"] else "", ", ".join(r["depends_on"]), ", ".join(r["profiles"]),
                  ", ".join(r["catalog_profiles"])) for r in rows],
                title=f"{len(rows)} daemon type(s), {implemented} implemented"
                + (f", profile {profile}" if profile else ""))
    if profile is not None and profile in IMPLEMENTED_PROFILES:
        names = ", ".join(t.name for t in IMPLEMENTED_PROFILES[profile])
        stdout.print(f"`coord node run --profile {profile}` starts: {names} (and their dependencies)")
