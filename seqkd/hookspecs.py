"""The hooks a seqkd plugin may implement.

Each hook receives a ``register`` callback, in the style of simonw/llm: a plugin calls it once per
thing it contributes. Built-in tasks and methods use exactly these hooks, through the same
``seqkd`` entry-point group that third-party packages use.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("seqkd")
hookimpl = pluggy.HookimplMarker("seqkd")


@hookspec
def register_tasks(register: Callable[[type], None]) -> None:
    """Call ``register(TaskAdapterClass)`` for each task adapter this plugin provides."""


@hookspec
def register_methods(register: Callable[[type], None]) -> None:
    """Call ``register(MethodClass)`` for each distillation method this plugin provides."""
