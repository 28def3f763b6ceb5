"""The daemon dependency graph: cycle and unknown-dependency checks, closure, start order.

`dependencies` below maps each registered daemon to its hard dependencies (what
`register_factory(..., depends_on=...)` declared). Soft dependencies never order anything.

* `find_cycle(deps, start)` is run at registration, so a cycle is refused when its last edge is
  declared; `DependencyError` names the cycle.
* `closure(deps, wanted)` adds every transitive dependency; a dependency with no registration
  raises `DependencyError` naming who needs it.
* `start_levels(deps, types)` groups daemons into waves: each wave depends only on earlier ones, so
  a wave starts concurrently. Within a wave, `DAEMON_STARTUP_ORDER` comes first, in its order
  (subscribers before the emitters they listen to), then the rest in the order given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from coordination.daemon_types import DAEMON_STARTUP_ORDER, DaemonKey

__all__ = ["DependencyError", "check_no_cycle", "closure", "find_cycle", "start_levels"]

_ORDER = {t: i for i, t in enumerate(DAEMON_STARTUP_ORDER)}

Dependencies = Mapping[DaemonKey, Sequence[DaemonKey]]


class DependencyError(ValueError):
    """A daemon dependency cannot be satisfied: a cycle, a self-dependency or an unknown daemon."""


def _names(types: Iterable[DaemonKey]) -> str:
    return ", ".join(t.name for t in types)


def find_cycle(deps: Dependencies, start: DaemonKey) -> list[DaemonKey] | None:
    """A dependency path from `start` back to itself, or None."""
    stack: list[tuple[DaemonKey, list[DaemonKey]]] = [(start, [start])]
    seen: set[DaemonKey] = set()
    while stack:
        node, path = stack.pop()
        for dep in deps.get(node, ()):
            if dep == start:
                return [*path, start]
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, [*path, dep]))
    return None


def check_no_cycle(deps: Dependencies, start: DaemonKey) -> None:
    cycle = find_cycle(deps, start)
    if cycle is not None:
        raise DependencyError(f"dependency cycle: {' -> '.join(t.name for t in cycle)}")


def closure(deps: Dependencies, wanted: Iterable[DaemonKey]) -> list[DaemonKey]:
    """`wanted` plus every transitive dependency, in discovery order; unknown ones raise."""
    result: list[DaemonKey] = []
    missing: dict[DaemonKey, set[DaemonKey]] = {}
    pending = list(wanted)
    seen = set(pending)
    for node in pending:  # grows while iterating
        if node not in deps:
            continue
        result.append(node)
        for dep in deps[node]:
            if dep not in deps:
                missing.setdefault(dep, set()).add(node)
            elif dep not in seen:
                seen.add(dep)
                pending.append(dep)
    unregistered = [t for t in pending if t not in deps and t not in missing]
    if missing or unregistered:
        parts = [f"{dep.name} (needed by {_names(sorted(users, key=str))})" for dep, users in missing.items()]
        parts += [t.name for t in unregistered]
        raise DependencyError(f"no factory registered for: {'; '.join(parts)}")
    return result


def start_levels(deps: Dependencies, types: Sequence[DaemonKey]) -> list[list[DaemonKey]]:
    """Waves of `types` in dependency order (dependencies outside `types` are ignored)."""
    members = set(types)
    position = {t: i for i, t in enumerate(types)}
    level: dict[DaemonKey, int] = {}

    def depth(node: DaemonKey, path: tuple[DaemonKey, ...]) -> int:
        if node in path:
            raise DependencyError(f"dependency cycle: {' -> '.join(t.name for t in (*path, node))}")
        if node not in level:
            inside = [d for d in deps.get(node, ()) if d in members]
            level[node] = 1 + max((depth(d, (*path, node)) for d in inside), default=-1)
        return level[node]

    for t in types:
        depth(t, ())
    waves: list[list[DaemonKey]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for t in types:
        waves[level[t]].append(t)
    for wave in waves:
        wave.sort(key=lambda t: (_ORDER.get(t, len(_ORDER)), position[t]))  # type: ignore[call-overload]
    return waves
