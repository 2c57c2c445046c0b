"""The hooks a seqkd plugin may implement.

Each hook receives a ``register`` callback, in the style of simonw/llm: a plugin calls it once per
thing it contributes. Built-in tasks and methods use exactly these hooks, through the same
``seqkd`` entry-point group that third-party packages use.

``PLUGIN_API_VERSION`` versions these hooks together with the contracts plugins code against
(``seqkd.method.Method``, ``seqkd.tasks.base.TaskAdapter`` and its typed outputs). Version 2.0
reshapes the method and task contracts (a task must implement every method of each capability it
declares, see ``seqkd.tasks.base.CAPABILITY_HOOKS``; the host checks what a plugin registers) and
adds ``register_commands``, so code written for 1.x does not load unchanged. A plugin module may say
which version it was built for with ``SEQKD_PLUGIN_API = "2"`` (or ``"2.0"``); the host refuses one
built for another major version, or for a newer minor version than it provides.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

import pluggy

PLUGIN_API_VERSION = "2.0"  # major: breaking changes to the contracts; minor: additions

hookspec = pluggy.HookspecMarker("seqkd")
hookimpl = pluggy.HookimplMarker("seqkd")


@dataclass(frozen=True)
class Command:
    """A ``seqkd`` subcommand a plugin brings, so a task can ship its own tools (``seqkd translate``).

    The host refuses a plugin whose command takes the name of a core command or of another
    plugin's command: a subcommand must mean one thing whatever else is installed.
    """

    name: str  # the subcommand, e.g. "translate"
    help: str  # one line for `seqkd --help`
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]  # exit status


@hookspec
def register_tasks(register: Callable[[type], None]) -> None:
    """Call ``register(TaskAdapterClass)`` for each task adapter this plugin provides."""


@hookspec
def register_methods(register: Callable[[type], None]) -> None:
    """Call ``register(MethodClass)`` for each distillation method this plugin provides."""


@hookspec
def register_commands(register: Callable[[Command], None]) -> None:
    """Call ``register(Command(...))`` for each ``seqkd`` subcommand this plugin provides."""
