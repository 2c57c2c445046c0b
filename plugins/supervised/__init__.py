"""``supervised``: the task's own loss, no teacher. Trains teachers and baseline students.

With ``view``, the model reads another input view of the task's examples (e.g. ``asr``: an ASR
stage's transcripts of the sources), as an MT model of an ASR → MT cascade trained on ASR output.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from seqkd.hashing import AddedFields
from seqkd.hookspecs import hookimpl
from seqkd.method import LossOutput, Method


class SupervisedOptions(AddedFields):
    model_config = ConfigDict(extra="forbid")
    added_fields = ("view",)

    view: str | None = Field(None, description="Train on this input view of the task (from `reads:`) instead of its sources.")


class Supervised(Method):
    name = "supervised"
    description = "Task loss only (label-smoothed NLL); trains teachers and baseline students"
    options_schema = SupervisedOptions

    options: SupervisedOptions

    def student_forward(self, batch: Any) -> Any:
        return self.task.forward(self.student, batch, view=self.options.view)

    def loss(self, batch: Any, step: int) -> LossOutput:
        return self.task_loss(batch)


@hookimpl
def register_methods(register):
    register(Supervised)
