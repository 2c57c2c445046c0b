"""The hooks a seqkd plugin may implement.

Each hook receives a ``register`` callback, in the style of simonw/llm: a plugin calls it once per
thing it contributes. Built-in tasks and methods use exactly these hooks, through the same
``seqkd`` entry-point group that third-party packages use.

``PLUGIN_API_VERSION`` versions these hooks together with the contracts plugins code against
(``seqkd.method.Method``, ``seqkd.tasks.base.TaskAdapter`` and its typed outputs). A plugin module
may say which version it was built for with ``SEQKD_PLUGIN_API = "1"`` (or ``"1.0"``); the host
refuses one built for another major version, or for a newer minor version than it provides.
"""

from __future__ import annotations

from typing import Callable

import pluggy

PLUGIN_API_VERSION = "1.0"  # major: breaking changes to the contracts; minor: additions

hookspec = pluggy.HookspecMarker("seqkd")
hookimpl = pluggy.HookimplMarker("seqkd")


@hookspec
def register_tasks(register: Callable[[type], None]) -> None:
    """Call ``register(TaskAdapterClass)`` for each task adapter this plugin provides."""


@hookspec
def register_methods(register: Callable[[type], None]) -> None:
    """Call ``register(MethodClass)`` for each distillation method this plugin provides."""
