"""The contract a distillation method plugin implements.

A method declares which adapter capabilities it needs, whether it needs a teacher (and one with
the student's vocabulary), and the schema of its ``options:`` section; at each step it turns a batch
into a loss using only the adapter's typed outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from seqkd.tasks.base import BatchReader, TaskAdapter


class NoOptions(BaseModel):
    """For methods without options: any key given is an error."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class LossOutput:
    loss: torch.Tensor  # summed over the batch's targets; the engine normalises
    num_targets: int
    parts: dict[str, float] = field(default_factory=dict)  # summed components, for the logs


@dataclass
class StageContext:
    """What the engine tells a method before training, for work done once per stage."""

    cache_dir: Path  # where this stage's teacher-output caches live
    teacher_id: str | None  # sha256 of the teacher's model file: part of every cache key
    max_tokens: int
    device: torch.device
    rebuild: bool  # --force: a cache built for other inputs is replaced instead of refused
    log: Callable[[str], None]


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

    @classmethod
    def check_models(cls, task: type[TaskAdapter], student: BaseModel, teacher: BaseModel) -> str | None:
        """Why this teacher/student pair cannot work with the method (checked when a recipe is
        validated, so a run does not fail hours in), or ``None``."""
        return None

    def prepare(self, context: StageContext) -> None:
        """Work done once before training (building teacher-output caches, distilled data)."""

    def train_reader(self, max_tokens: int, seed: int) -> BatchReader:
        """The training batches; methods that train on other data (e.g. teacher outputs) override it."""
        return self.task.train_reader(max_tokens, seed)

    def trainable(self) -> torch.nn.Module:
        """The module whose parameters the optimizer updates and whose state checkpoints hold.

        The student for most methods; a method that trains something that *produces* the student's
        weights (weight distillation's generator) returns that instead.
        """
        return self.student

    def student_forward(self, batch: Any) -> Any:
        """The student's task output for ``batch``, as training and validation see it."""
        return self.task.forward(self.student, batch)

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The student's current weights, as an ordinary model file stores them."""
        return self.student.state_dict()

    @abstractmethod
    def loss(self, batch: Any) -> LossOutput: ...

    def task_loss(self, batch: Any) -> LossOutput:
        """The task's own (label-smoothed) loss on the student: what supervised training minimises."""
        loss, n = self.task.nll(self.student_forward(batch), self.label_smoothing)
        return LossOutput(loss, n, {"nll": loss.item()})
