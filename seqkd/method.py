"""The contract a distillation method plugin implements.

A method declares which adapter capabilities it needs, whether it needs a teacher (and one with
the student's vocabulary), and the schema of its ``options:`` section; at each step it turns a batch
into a loss using only the adapter's typed outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from seqkd.tasks.base import TaskAdapter


class NoOptions(BaseModel):
    """For methods without options: any key given is an error."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class LossOutput:
    loss: torch.Tensor  # summed over the batch's targets; the engine normalises
    num_targets: int
    parts: dict[str, float] = field(default_factory=dict)  # summed components, for the logs


class Method(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset()
    needs_teacher: ClassVar[bool] = False
    needs_same_vocabulary: ClassVar[bool] = False
    options_schema: ClassVar[type[BaseModel]] = NoOptions

    def __init__(
        self,
        options: BaseModel,
        task: TaskAdapter,
        student: torch.nn.Module,
        teacher: torch.nn.Module | None,
        label_smoothing: float,
    ) -> None:
        self.options = options
        self.task = task
        self.student = student
        self.teacher = teacher
        self.label_smoothing = label_smoothing
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)

    @abstractmethod
    def loss(self, batch: Any) -> LossOutput: ...
