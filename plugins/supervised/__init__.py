"""``supervised``: the task's own loss, no teacher. Trains teachers and baseline students."""

from __future__ import annotations

from typing import Any

from seqkd.hookspecs import hookimpl
from seqkd.method import LossOutput, Method


class Supervised(Method):
    name = "supervised"
    description = "Task loss only (label-smoothed NLL); trains teachers and baseline students"

    def loss(self, batch: Any, step: int) -> LossOutput:
        return self.task_loss(batch)


@hookimpl
def register_methods(register):
    register(Supervised)
