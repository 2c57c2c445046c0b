"""The plugin host: loads entry points of group ``seqkd`` and keeps the registry of what they add.

Loading rules:
- ``SEQKD_PLUGINS`` (comma-separated entry-point names) restricts what loads; unset loads all. Names
  in it that match no installed entry point are kept in ``Registry.unmatched``.
- A plugin that fails to import or to register is recorded with its error and skipped; the rest
  still load.
- What a plugin registers is checked when it registers (right base class, the class attributes the
  contracts need, nothing abstract, every method of each declared capability): one bad class
  refuses the whole plugin, naming the plugin and the problem, so a mistake shows in ``seqkd
  plugins`` instead of hours into a run.
- Two plugins that register the same task or method name both load, but that name is unusable
  (``Registry.clashes``; ``Registry.lookup`` raises :class:`PluginClash`) until ``SEQKD_PLUGINS``
  selects one of them: silently letting one win would run code the user did not choose.
- A plugin command named like a core command or another plugin's command refuses that plugin.
- A plugin module that declares ``SEQKD_PLUGIN_API`` for an API this seqkd does not provide (see
  ``seqkd.hookspecs.PLUGIN_API_VERSION``) is recorded as failed with what to install instead.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, NamedTuple

import pluggy

from seqkd import hookspecs
from seqkd.errors import SeqkdError

ENTRY_POINT_GROUP = "seqkd"
BUILT_IN = "seqkd"  # the distribution of seqkd's own plugins
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


# The subcommands seqkd itself defines; a plugin command may not take one of these names.
CORE_COMMANDS: frozenset[str] = frozenset({"plugins", "new-plugin", "validate", "show", "run", "recipes", "cache", "export", "report"})

# The kinds of name ``Registry.lookup`` resolves, and the registry attribute holding each.
_KINDS: dict[str, str] = {"task": "tasks", "method": "methods"}
_COMMAND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_MISSING = object()


class PluginAPIError(SeqkdError):
    """A plugin built for a plugin API this seqkd does not provide."""


class PluginError(SeqkdError):
    """A plugin registered something the host refuses; the message names the plugin and the problem."""


class PluginClash(SeqkdError):
    """A task or method name registered by several plugins, unusable until the user picks one."""


@dataclass
class PluginInfo:
    """What ``seqkd plugins`` shows about one loaded (or failed) plugin."""

    name: str
    distribution: str
    version: str
    module: str
    tasks: list[str] = field(default_factory=list)  # every name it registered, clashed ones included
    methods: list[str] = field(default_factory=list)
    error: str | None = None
    path: str | None = None  # the file the plugin module was (or would have been) loaded from
    hooks: list[str] = field(default_factory=list)  # the hooks it implements
    api: str | None = None  # the plugin API version it declares, if any
    commands: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``entry-point (distribution version)``: how messages name a plugin, so two plugins of the
        same name from different packages can be told apart."""
        return f"{self.name} ({self.distribution} {self.version})"


@dataclass
class Registry:
    """Tasks, methods and commands by name, plus the record of every plugin considered.

    ``tasks`` and ``methods`` hold only usable names: a name in ``clashes`` is in neither, so code
    that reads the dicts directly never runs a plugin the user did not choose.
    """

    tasks: dict[str, type] = field(default_factory=dict)
    methods: dict[str, type] = field(default_factory=dict)
    commands: dict[str, hookspecs.Command] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    # (kind, name) -> the plugins registering it, as "entry-point (distribution version)"
    clashes: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)  # SEQKD_PLUGINS names no entry point has
    installed: list[str] = field(default_factory=list)  # every entry point of the group, allowed or not

    def owner(self, kind: str, name: str) -> str:
        """The first plugin that registered ``name`` (``kind``: tasks, methods or commands), or "?"."""
        for info in self.plugins:
            if name in getattr(info, kind):
                return info.name
        return "?"

    def lookup(self, kind: str, name: str) -> type | None:
        """The task or method class called ``name``; ``None`` if no plugin registers it.

        Raises :class:`PluginClash` when several plugins register it, saying how to choose one.
        """
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}, not {kind!r}")
        owners = self.clashes.get((kind, name))
        if owners is not None:
            raise PluginClash(self._clash_message(kind, name, owners))
        return getattr(self, _KINDS[kind]).get(name)

    def _clash_message(self, kind: str, name: str, owners: list[str]) -> str:
        count = {2: "two", 3: "three"}.get(len(owners), str(len(owners)))
        listed = ", ".join(owners[:-1]) + f" and {owners[-1]}"
        # the example keeps the first owner and every other plugin that loaded, dropping the rest
        keep = [info.name for info in self.plugins if info.error is None and info.label not in owners[1:]]
        return (
            f"{kind} {name!r} is registered by {count} plugins: {listed}; choose one with "
            f"{ALLOW_LIST_ENV}=<entry points to load>, e.g. {ALLOW_LIST_ENV}={','.join(keep)}"
        )


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


def _short(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_name(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _is_str_set(value: object) -> bool:
    return isinstance(value, (set, frozenset)) and all(isinstance(item, str) for item in value)


def _is_schema(value: object) -> bool:
    from pydantic import BaseModel

    return isinstance(value, type) and issubclass(value, BaseModel)


# The class attributes each kind must set, how to check one, and what it must be (for messages).
_Check = tuple[str, Callable[[object], bool], str]
_TASK_ATTRIBUTES: tuple[_Check, ...] = (
    ("name", _is_name, "a non-empty str"),
    ("description", _is_str, "a str"),
    ("capabilities", _is_str_set, "a frozenset of str"),
    ("config_schema", _is_schema, "a pydantic BaseModel subclass"),
    ("model_schema", _is_schema, "a pydantic BaseModel subclass"),
    ("evaluation_schema", _is_schema, "a pydantic BaseModel subclass"),
)
_METHOD_ATTRIBUTES: tuple[_Check, ...] = (
    ("name", _is_name, "a non-empty str"),
    ("description", _is_str, "a str"),
    ("options_schema", _is_schema, "a pydantic BaseModel subclass"),
    ("requires", _is_str_set, "a set of str"),
)


def _attribute(cls: object, attribute: str) -> object:
    try:
        return getattr(cls, attribute, _MISSING)
    except Exception:  # a property that raises counts as missing
        return _MISSING


def _describe(kind: str, cls: object) -> str:
    """How a message names a registered class: by its ``name`` when it has a usable one."""
    name = _attribute(cls, "name")
    if _is_name(name):
        return f"{kind} {name!r}"
    qualname = _attribute(cls, "__qualname__")
    module = _attribute(cls, "__module__")
    if isinstance(qualname, str):
        return f"{kind} class {module}.{qualname}" if isinstance(module, str) else f"{kind} class {qualname}"
    return f"{kind} {_short(cls)}"


def _overrides(cls: type, method: str, base: type) -> bool:
    """Whether ``cls`` defines ``method`` itself or inherits it from somewhere other than ``base``."""
    for klass in cls.__mro__:
        if method in vars(klass):
            return klass not in base.__mro__
    return False


def _class_problems(cls: object, base: type, attributes: tuple[_Check, ...]) -> list[str]:
    """What is wrong with a registered task or method class, in words; empty when it is usable."""
    if not isinstance(cls, type) or not issubclass(cls, base):
        return [f"is not a subclass of {base.__module__}.{base.__qualname__}"]
    problems: list[str] = []
    for attribute, check, expected in attributes:
        value = _attribute(cls, attribute)
        if value is _MISSING:
            problems.append(f"missing class attribute {attribute!r}")
        elif not check(value):
            problems.append(f"class attribute {attribute!r} must be {expected}, got {_short(value)}")
    if inspect.isabstract(cls):
        missing = ", ".join(f"{m}()" for m in sorted(getattr(cls, "__abstractmethods__", ())))
        problems.append(f"is abstract: does not implement {missing}")
    return problems


def check_task(cls: object) -> list[str]:
    """Problems of a task adapter class, including capabilities declared but not implemented."""
    from seqkd.tasks.base import CAPABILITY_HOOKS, TaskAdapter

    problems = _class_problems(cls, TaskAdapter, _TASK_ATTRIBUTES)
    capabilities = _attribute(cls, "capabilities")
    if isinstance(cls, type) and issubclass(cls, TaskAdapter) and _is_str_set(capabilities):
        for capability in sorted(capabilities):  # type: ignore[call-overload]
            missing = [m for m in CAPABILITY_HOOKS.get(capability, ()) if not _overrides(cls, m, TaskAdapter)]
            if missing:
                problems.append(
                    f"declares capability {capability!r} but does not implement {', '.join(f'{m}()' for m in missing)}"
                )
    return problems


def check_method(cls: object) -> list[str]:
    """Problems of a distillation method class."""
    from seqkd.method import Method

    return _class_problems(cls, Method, _METHOD_ATTRIBUTES)


def check_command(command: object) -> list[str]:
    """Problems of a registered command (a frozen dataclass does not check its field types)."""
    if not isinstance(command, hookspecs.Command):
        return [f"is not a {hookspecs.__name__}.Command"]
    problems: list[str] = []
    if not isinstance(command.name, str) or not _COMMAND_NAME.fullmatch(command.name):
        problems.append(f"name must be a word such as 'translate' (letters, digits, - and _), got {_short(command.name)}")
    if not isinstance(command.help, str):
        problems.append(f"help must be a str, got {_short(command.help)}")
    for attribute in ("add_arguments", "run"):
        if not callable(getattr(command, attribute)):
            problems.append(f"{attribute} must be callable, got {_short(getattr(command, attribute))}")
    return problems


@dataclass
class _Contribution:
    """What one plugin registered, before it is merged into the registry."""

    tasks: dict[str, type] = field(default_factory=dict)
    methods: dict[str, type] = field(default_factory=dict)
    commands: dict[str, hookspecs.Command] = field(default_factory=dict)


def _collect(registry: Registry, info: PluginInfo, module: ModuleType) -> _Contribution:
    """Run one plugin's hooks in isolation, check everything it registers and return it.

    Raises :class:`PluginError` at the first refused registration, which refuses the plugin.
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    pm.register(module, name=info.name)
    info.hooks = sorted(caller.name for caller in pm.get_hookcallers(module) or [])
    found = _Contribution()

    def refuse(what: str, problems: list[str]) -> None:
        raise PluginError(f"plugin {info.name!r}: {what}: {'; '.join(problems)}")

    def register_class(
        kind: str, target: dict[str, type], check: Callable[[object], list[str]]
    ) -> Callable[[type], None]:
        def register(cls: type) -> None:
            problems = check(cls)
            if problems:
                refuse(_describe(kind, cls), problems)
            if cls.name in target:
                refuse(f"{kind} {cls.name!r}", ["registered twice by this plugin"])
            target[cls.name] = cls

        return register

    def register_command(command: hookspecs.Command) -> None:
        problems = check_command(command)
        if problems:
            refuse(_describe("command", command), problems)
        name = command.name
        if name in CORE_COMMANDS:
            refuse(f"command {name!r}", ["is a core seqkd command"])
        if name in found.commands:
            refuse(f"command {name!r}", ["registered twice by this plugin"])
        if name in registry.commands:
            refuse(f"command {name!r}", [f"is already registered by plugin {registry.owner('commands', name)!r}"])
        found.commands[name] = command

    pm.hook.register_tasks(register=register_class("task", found.tasks, check_task))
    pm.hook.register_methods(register=register_class("method", found.methods, check_method))
    pm.hook.register_commands(register=register_command)
    return found


def _merge(registry: Registry, info: PluginInfo, found: _Contribution) -> None:
    """Add a plugin's names; a task or method name another plugin has becomes a clash for both."""
    for kind, names in (("task", found.tasks), ("method", found.methods)):
        target: dict[str, type] = getattr(registry, _KINDS[kind])
        for name, cls in names.items():
            if name not in target and (kind, name) not in registry.clashes:
                target[name] = cls
                continue
            target.pop(name, None)
            earlier = [p for p in registry.plugins if p is not info and name in getattr(p, _KINDS[kind])]
            # seqkd's own plugin first: the clash message's example selection keeps the first owner
            owners = sorted([*earlier, info], key=lambda p: p.distribution != BUILT_IN)
            registry.clashes[(kind, name)] = [p.label for p in owners]
    registry.commands.update(found.commands)
    info.tasks = sorted(found.tasks)
    info.methods = sorted(found.methods)
    info.commands = sorted(found.commands)


def load_plugins(entry_points: list[importlib.metadata.EntryPoint] | None = None) -> Registry:
    """Load every allowed entry point of group ``seqkd`` (sorted by name, so order is stable)."""
    if entry_points is None:
        entry_points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    allowed = allow_list()
    registry = Registry(installed=sorted({ep.name for ep in entry_points}))
    if allowed is not None:
        registry.unmatched = sorted(allowed - set(registry.installed))
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
            found = _collect(registry, info, module)
        except Exception as exc:  # a broken plugin must not take the others down
            info.error = f"{type(exc).__name__}: {exc}"
            continue
        finally:
            info.path = _module_file(ep, module)
        _merge(registry, info, found)
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


def built_in_registry() -> Registry:
    """seqkd's own plugins alone, whatever else is installed and whatever ``SEQKD_PLUGINS`` says
    (for pages generated from the built-ins)."""
    own = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.dist is not None and ep.dist.name == BUILT_IN]
    saved = os.environ.pop(ALLOW_LIST_ENV, None)
    try:
        return load_plugins(own)
    finally:
        if saved is not None:
            os.environ[ALLOW_LIST_ENV] = saved
