"""Plugins: a user's own daemons joining a node agent without editing this package.

A plugin is an importable module with a `register(manager)` function. It registers its daemon
factories on the node's DaemonManager (custom daemon types are plain strings, as the API reference's
`register_factory` example shows) and returns the daemon types the node should start with its profile:

    # my_team/daemons.py
    def register(manager):
        manager.register_factory("GAME_LEDGER", GameLedger.factory(), depends_on=[DaemonType.EVENT_ROUTER])
        return ["GAME_LEDGER"]

    coord node run --profile coordinator --plugin my_team.daemons      # or RINGRIFT_PLUGINS=my_team.daemons

The current directory is importable, so a module next to where the agent starts is found.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from coordination.daemon_types import DaemonTypeLike

__all__ = ["PluginError", "load_plugins", "plugins_from_env"]


class PluginError(Exception):
    """A plugin could not be imported or registered (the message says which and why)."""


def plugins_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The module names in RINGRIFT_PLUGINS (comma-separated)."""
    value = (os.environ if environ is None else environ).get("RINGRIFT_PLUGINS", "")
    return [name.strip() for name in value.split(",") if name.strip()]


def load_plugins(modules: Iterable[str], manager: Any) -> list[DaemonTypeLike]:
    """Import each module and call its `register(manager)`; the daemon types they ask to start."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    wanted: list[DaemonTypeLike] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(f"plugin {name!r} cannot be imported: {exc}") from None
        register = getattr(module, "register", None)
        if not callable(register):
            raise PluginError(f"plugin {name!r} has no register(manager) function")
        try:
            started = register(manager)
        except Exception as exc:
            raise PluginError(f"plugin {name!r} failed to register: {type(exc).__name__}: {exc}") from None
        wanted.extend(started or ())
    return wanted
