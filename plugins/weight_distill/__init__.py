"""``weight_distill``: weight distillation for Transformer NMT (Lin et al., ACL 2021), phase 1.

The student's weights are *generated* from the frozen teacher's by a small parameter generator
(``generator.py``); phase 1 trains only the generator, through the student's forward pass, with the
task's label-smoothed NLL on the teacher's beam-search outputs (``data: distilled``, the paper's
setting, shared with ``seq_kd`` through the teacher-output cache) or on the original pairs. The
stage's model file is the *converted* student: the generated weights as an ordinary checkpoint that
loads and runs without any generator code.

Phase 2 is a second stage that fine-tunes that checkpoint on the same data: ``method: seq_kd`` (or
``supervised`` for ``data: original``) with ``init: <this stage>``; see recipes/bible-en-es/wd.yaml.

The adapter supplies the weights by class and layer (the ``parameter_classes`` capability); the
method never reads a model's module structure itself.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, Field

from seqkd.hookspecs import hookimpl
from seqkd.method import LossOutput, StageContext
from seqkd.tasks.base import BatchReader, TaskAdapter
from seqkd_plugins.seq_kd import SeqKD, SeqKDOptions
from seqkd_plugins.weight_distill.generator import GeneratorError, WeightGenerator, depth_problem


class WeightDistillOptions(SeqKDOptions):
    data: Literal["distilled", "original"] = Field(
        "distilled", description="Train the generator on the teacher's beam outputs (the seq_kd settings above) or on the original pairs."
    )


class _StudentCall(torch.nn.Module):
    """The adapter's forward pass as a module, so ``torch.func.functional_call`` can run the student
    with generated tensors in place of its own parameters (tied weights stay tied)."""

    def __init__(self, task: TaskAdapter, student: torch.nn.Module) -> None:
        super().__init__()
        self.task, self.student = task, student

    def forward(self, batch: Any) -> Any:
        return self.task.forward(self.student, batch)


class WeightDistill(SeqKD):
    name = "weight_distill"
    description = "Weight distillation, phase 1: train a generator that maps the teacher's weights to the student's"
    requires = frozenset({"generation", "parameter_classes"})
    options_schema = WeightDistillOptions

    options: WeightDistillOptions

    @classmethod
    def check_models(cls, task: type[TaskAdapter], student: BaseModel, teachers: list[BaseModel]) -> str | None:
        return depth_problem(task.layer_counts(teachers[0]), task.layer_counts(student))

    def prepare(self, context: StageContext) -> None:
        if self.options.data == "distilled":
            super().prepare(context)
        self.student.requires_grad_(False)  # its values are overwritten by generated ones at every forward
        try:
            self.modules["generator"] = WeightGenerator(
                self.teacher, self.task.parameter_classes(self.teacher), self.student, self.task.parameter_classes(self.student)
            )
        except GeneratorError as exc:
            raise GeneratorError(f"weight_distill cannot map this teacher onto this student: {exc}") from exc
        self._call = _StudentCall(self.task, self.student)
        # each (module, attribute) holding a student parameter -> the parameter's generated name; a
        # tied weight is held by two modules (embedding and output projection), a shared module once
        first = {id(p): n for n, p in self.student.named_parameters()}
        self._aliases = {
            f"{prefix}.{attr}".lstrip("."): first[id(p)]
            for prefix, module in self.student.named_modules()
            for attr, p in module.named_parameters(recurse=False)
        }
        size = sum(p.numel() for p in self.generator.parameters())
        context.log(f"parameter generator: {size / 1e6:.2f}M trainable parameters for {len(self.generator.targets)} student weights")

    @property
    def generator(self) -> WeightGenerator:
        """The method's own trainable module: optimised and checkpointed by the engine, never part
        of the student's model file (which holds the generated weights)."""
        return self.modules["generator"]

    def train_reader(self, max_tokens: int, seed: int) -> BatchReader:
        if self.options.data == "original":
            return self.task.train_reader(max_tokens, seed)
        return super().train_reader(max_tokens, seed)

    def student_forward(self, batch: Any) -> Any:
        generated = self.generator()
        # every holder of a tied weight gets the same tensor; functional_call's own tie handling
        # leaves a shared embedding module untied afterwards (torch 2.9)
        values = {f"student.{alias}": generated[name] for alias, name in self._aliases.items()}
        return torch.func.functional_call(self._call, values, (batch,), tie_weights=False)

    @torch.no_grad()
    def student_state_dict(self) -> dict[str, torch.Tensor]:
        """The conversion: the generated weights written into the student, as a plain state dict."""
        generated = self.generator()
        for name, param in self.student.named_parameters():
            param.copy_(generated[name])
        return {name: value.clone() for name, value in self.student.state_dict().items()}

    def loss(self, batch: Any, step: int) -> LossOutput:
        return self.task_loss(batch)


@hookimpl
def register_methods(register):
    register(WeightDistill)
