"""The plugin host: loads entry points of group ``seqkd`` and keeps the registry of what they add.

Loading rules:
- ``SEQKD_PLUGINS`` (comma-separated entry-point names) restricts what loads; unset loads all.
- A plugin that fails to import or to register is recorded with its error and skipped; the rest
  still load.
- Two plugins that register the same task or method name are refused: the second one is recorded
  as failed, naming the first.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from types import ModuleType

import pluggy

from seqkd import hookspecs

ENTRY_POINT_GROUP = "seqkd"
ALLOW_LIST_ENV = "SEQKD_PLUGINS"


@dataclass
class PluginInfo:
    """What ``seqkd plugins`` shows about one loaded (or failed) plugin."""

    name: str
    distribution: str
    version: str
    module: str
    tasks: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Registry:
    """Tasks and methods by name, plus the record of every plugin considered."""

    tasks: dict[str, type] = field(default_factory=dict)
    methods: dict[str, type] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)

    def owner(self, kind: str, name: str) -> str:
        for info in self.plugins:
            if name in getattr(info, kind):
                return info.name
        return "?"


def allow_list() -> set[str] | None:
    raw = os.environ.get(ALLOW_LIST_ENV)
    if raw is None:
        return None
    return {item.strip() for item in raw.split(",") if item.strip()}


def _collect(
    registry: Registry, info: PluginInfo, module: ModuleType
) -> tuple[dict[str, type], dict[str, type]]:
    """Run one plugin's hooks in isolation and return what it registers."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    pm.register(module, name=info.name)
    tasks: dict[str, type] = {}
    methods: dict[str, type] = {}

    def register_into(target: dict[str, type], kind: str):
        def register(cls: type) -> None:
            name = getattr(cls, "name", None)
            if not isinstance(name, str) or not name:
                raise TypeError(f"{cls!r} has no string attribute 'name'")
            if name in target or name in getattr(registry, kind):
                owner = info.name if name in target else registry.owner(kind, name)
                raise ValueError(f"{kind[:-1]} name {name!r} is already registered by plugin {owner!r}")
            target[name] = cls

        return register

    pm.hook.register_tasks(register=register_into(tasks, "tasks"))
    pm.hook.register_methods(register=register_into(methods, "methods"))
    return tasks, methods


def load_plugins(entry_points: list[importlib.metadata.EntryPoint] | None = None) -> Registry:
    """Load every allowed entry point of group ``seqkd`` (sorted by name, so order is stable)."""
    if entry_points is None:
        entry_points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    allowed = allow_list()
    registry = Registry()
    for ep in sorted(entry_points, key=lambda e: e.name):
        if allowed is not None and ep.name not in allowed:
            continue
        dist = ep.dist
        info = PluginInfo(
            name=ep.name,
            distribution=dist.name if dist else "?",
            version=dist.version if dist else "?",
            module=ep.value,
        )
        registry.plugins.append(info)
        try:
            module = ep.load()
            tasks, methods = _collect(registry, info, module)
        except Exception as exc:  # a broken plugin must not take the others down
            info.error = f"{type(exc).__name__}: {exc}"
            continue
        registry.tasks.update(tasks)
        registry.methods.update(methods)
        info.tasks = sorted(tasks)
        info.methods = sorted(methods)
    return registry


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = load_plugins()
    return _registry


def reset_registry() -> None:
    """Forget the loaded registry (after the environment or installed packages changed)."""
    global _registry
    _registry = None
