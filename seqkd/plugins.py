"""The plugin host: loads entry points of group ``seqkd`` and keeps the registry of what they add.

Loading rules:
- ``SEQKD_PLUGINS`` (comma-separated entry-point names) restricts what loads; unset loads all.
- A plugin that fails to import or to register is recorded with its error and skipped; the rest
  still load.
- Two plugins that register the same task or method name are refused: the second one is recorded
  as failed, naming the first.
- A plugin module that declares ``SEQKD_PLUGIN_API`` for an API this seqkd does not provide (see
  ``seqkd.hookspecs.PLUGIN_API_VERSION``) is recorded as failed with what to install instead.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import NamedTuple

import pluggy

from seqkd import hookspecs
from seqkd.errors import SeqkdError

ENTRY_POINT_GROUP = "seqkd"
ALLOW_LIST_ENV = "SEQKD_PLUGINS"
API_ATTRIBUTE = "SEQKD_PLUGIN_API"


class KnownPlugin(NamedTuple):
    distribution: str
    install: str  # the command, run from a seqkd checkout


# Plugins seqkd does not ship but knows about, by the task or method name they add: when a recipe
# names one that is not installed, the recipe loader says which package to install.
KNOWN_PLUGINS: dict[str, KnownPlugin] = {
    "hidden_cosine": KnownPlugin("seqkd-hidden-cosine", "pip install -e examples/seqkd-hidden-cosine"),
}


class PluginAPIError(SeqkdError):
    """A plugin built for a plugin API this seqkd does not provide."""


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
    path: str | None = None  # the file the plugin module was (or would have been) loaded from
    hooks: list[str] = field(default_factory=list)  # the hooks it implements
    api: str | None = None  # the plugin API version it declares, if any


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


def _version(text: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?", text.strip())
    return (int(match[1]), int(match[2] or 0)) if match else None


def check_api(declared: object) -> None:
    """Refuse a plugin that declares a plugin API this seqkd does not provide, saying what to install."""
    ours = _version(hookspecs.PLUGIN_API_VERSION)
    theirs = _version(str(declared))
    if theirs is None:
        raise PluginAPIError(f"{API_ATTRIBUTE} = {declared!r} is not a version such as '1' or '1.0'")
    if theirs[0] > ours[0]:
        raise PluginAPIError(
            f"built for seqkd plugin API {theirs[0]}, this seqkd provides {ours[0]}; "
            f"upgrade seqkd or install a plugin release for API {ours[0]}"
        )
    if theirs[0] < ours[0]:
        raise PluginAPIError(
            f"built for seqkd plugin API {theirs[0]}, this seqkd provides {ours[0]}; "
            f"install a plugin release for API {ours[0]} or a seqkd release for API {theirs[0]}"
        )
    if theirs[1] > ours[1]:
        raise PluginAPIError(
            f"needs seqkd plugin API {theirs[0]}.{theirs[1]}, this seqkd provides "
            f"{hookspecs.PLUGIN_API_VERSION}; upgrade seqkd"
        )


def _module_file(ep: importlib.metadata.EntryPoint, module: object | None) -> str | None:
    """Where the plugin's code lives; found without importing it again when the import failed."""
    path = getattr(module, "__file__", None)
    if path is None:
        try:
            spec = importlib.util.find_spec(ep.module)
            path = spec.origin if spec else None
        except Exception:  # a missing parent package: there is no file to show
            path = None
    return path


def _collect(
    registry: Registry, info: PluginInfo, module: ModuleType
) -> tuple[dict[str, type], dict[str, type]]:
    """Run one plugin's hooks in isolation and return what it registers."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    pm.register(module, name=info.name)
    info.hooks = sorted(caller.name for caller in pm.get_hookcallers(module) or [])
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
        module = None
        try:
            module = ep.load()
            declared = getattr(module, API_ATTRIBUTE, None)
            if declared is not None:
                info.api = str(declared)
                check_api(declared)
            tasks, methods = _collect(registry, info, module)
        except Exception as exc:  # a broken plugin must not take the others down
            info.error = f"{type(exc).__name__}: {exc}"
            continue
        finally:
            info.path = _module_file(ep, module)
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
