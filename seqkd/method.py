"""The contract a distillation method plugin implements.

A method declares which adapter capabilities it needs, how many teachers it takes and whether they
must share the student's output space (vocabulary, tag or label set), and the schema of its
``options:`` section. At each step it turns a batch into a loss using only the adapter's typed
outputs. It may own trainable modules (``self.modules``: optimised with the student, checkpointed,
never written into the student's model file) and other state (``state_dict``/``load_state_dict``).
"""

from __future__ import annotations

import contextlib
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


class Teacher:
    """One of a stage's teachers, loaded from its model file the first time ``model`` is read.

    So a method that reads its teachers' outputs from a cache never holds them in memory; ``id``
    (a hash of the model file) keys those caches without loading anything.
    """

    def __init__(self, source: str, id: str, load: Callable[[], tuple[torch.nn.Module, dict[str, Any]]]) -> None:
        self.source = source  # the stage name or checkpoint path, for messages
        self.id = id
        self._load = load
        self._model: torch.nn.Module | None = None
        self._output_space: dict[str, Any] = {}

    @classmethod
    def from_model(cls, model: torch.nn.Module, id: str = "in-memory", output_space: dict[str, Any] | None = None) -> "Teacher":
        """A teacher around a model already in memory (unit tests, notebooks)."""
        return cls(id, id, lambda: (model, output_space or {}))

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            # building it must not move the training's random stream; read first inside
            # ``teacher_pass()``, its weights must still not become inference tensors
            with torch.random.fork_rng(), torch.inference_mode(False):
                model, self._output_space = self._load()
            model.eval()  # a method may switch it to train mode (teacher dropout, MC dropout)
            model.requires_grad_(False)
            self._model = model
        return self._model

    @property
    def output_space(self) -> dict[str, Any]:
        """What the teacher's model file records of its output space (its tag or label set, ...)."""
        self.model
        return self._output_space


def teacher_pass(*, saved_for_backward: bool = False) -> contextlib.AbstractContextManager:
    """The context of every teacher forward pass: ``torch.inference_mode()``, no autograd record at
    all (under the trainer's autocast, so at ``training.precision``).

    Tensors made in it are *inference tensors*, which autograd refuses to save for backward. A new
    tensor computed from one outside it is an ordinary tensor: ``logits[mask]``, ``.float()`` of a
    bf16 tensor, ``log_softmax``, arithmetic, ``torch.stack``. So ``seqkd.losses`` and any loss that
    first derives its targets from the teacher's outputs may take them. A method that feeds the
    outputs themselves, or a view of them (``hidden[:, 0]``, ``.float()`` of a float32 tensor), into
    an op that saves them for the student's backward (a product, a matmul with a student tensor)
    passes ``saved_for_backward=True`` and gets ``torch.no_grad()`` instead.
    """
    return torch.no_grad() if saved_for_backward else torch.inference_mode()


@dataclass
class StageContext:
    """What the engine tells a method before training, for work done once per stage."""

    cache_dir: Path  # where this stage's teacher-output caches live
    max_tokens: int
    device: torch.device
    rebuild: bool  # --force: a cache built for other inputs is replaced instead of refused
    log: Callable[[str], None]
    write_text: Callable[[Path, str], None]  # writes once (rank 0 of a multi-process run), atomically
    teacher_ids: list[str] = field(default_factory=list)  # every teacher's model-file hash: part of every cache key


class Method(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset()
    # how many teachers a stage may name: (at least, at most); None means no upper limit
    num_teachers: ClassVar[tuple[int, int | None]] = (0, 0)
    # teachers must have the student's vocabulary / tag set; False rebuilds each teacher from the
    # output space stored in its model file (e.g. teachers trained on subsets of the labels)
    same_output_space: ClassVar[bool] = True
    options_schema: ClassVar[type[BaseModel]] = NoOptions

    def __init__(
        self,
        options: BaseModel,
        task: TaskAdapter,
        student: torch.nn.Module,
        teachers: list[Teacher],
        label_smoothing: float,
    ) -> None:
        self.options = options
        self.task = task
        self.student = student
        self.teachers = teachers
        self.label_smoothing = label_smoothing
        # trainable modules that belong to the method (projections, pseudo-classifiers, generators)
        self.modules = torch.nn.ModuleDict()

    @property
    def teacher(self) -> torch.nn.Module:
        """The teacher's model, for methods that take exactly one."""
        if len(self.teachers) != 1:
            raise RuntimeError(f"method {self.name!r} has {len(self.teachers)} teachers; use self.teachers")
        return self.teachers[0].model

    @classmethod
    def options_model(cls, task: type[TaskAdapter]) -> type[BaseModel]:
        """The schema of ``options:`` for this task; methods whose options embed the task's own
        settings (e.g. its generation settings) build it from the task."""
        return cls.options_schema

    @classmethod
    def check_models(cls, task: type[TaskAdapter], student: BaseModel, teachers: list[BaseModel]) -> str | None:
        """Why these teacher/student configs cannot work with the method (checked when a recipe is
        validated, so a run does not fail hours in), or ``None``."""
        return None

    def prepare(self, context: StageContext) -> None:
        """Work done once before training (teacher-output caches, distilled data, own modules)."""

    def train_reader(self, max_tokens: int, seed: int) -> BatchReader:
        """The training batches; methods that train on other data (e.g. teacher outputs) override it."""
        return self.task.train_reader(max_tokens, seed)

    def student_forward(self, batch: Any) -> Any:
        """The student's task output for ``batch``, as training and validation see it."""
        return self.task.forward(self.student, batch)

    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The student's current weights, as an ordinary model file stores them."""
        return self.student.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """Non-parameter state to checkpoint (tensors and plain values only); ``modules`` is saved apart."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    @abstractmethod
    def loss(self, batch: Any, step: int) -> LossOutput:
        """The loss of one batch at optimizer update ``step`` (0-based: for schedules of alpha or T)."""

    def task_loss(self, batch: Any) -> LossOutput:
        """The task's own (label-smoothed) loss on the student: what supervised training minimises."""
        loss, n = self.task.nll(self.student_forward(batch), self.label_smoothing)
        return LossOutput(loss, n, {"nll": loss.item()})
