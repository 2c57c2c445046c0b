"""Test-only methods, one for each shape of the plugin contract: several teachers, per-role input
views, a method-owned trainable module. Registered into a copy of the registry by the tests."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from seqkd.method import LossOutput, Method, StageContext
from seqkd.plugins import Registry, get_registry
from seqkd.losses import token_kl


class TwoTeachers(Method):
    """NLL/2 + the mean of the KLs to two teachers (which may differ in size)."""

    name = "two_teachers"
    description = "test: mean KL to two teachers"
    requires = frozenset({"token_logits"})
    num_teachers = (2, 2)

    def loss(self, batch: Any, step: int) -> LossOutput:
        out = self.task.forward(self.student, batch)
        nll, n = self.task.nll(out, self.label_smoothing)
        with torch.no_grad():
            logits = [self.task.forward(t.model, batch).logits for t in self.teachers]
        kls = [token_kl(out, teacher_logits, 1.0) for teacher_logits in logits]
        total = 0.5 * nll + 0.5 * sum(kls) / len(kls)
        return LossOutput(total, n, {"nll": nll.item(), **{f"kd_{i}": kl.item() for i, kl in enumerate(kls)}})


class ViewOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student_view: str = "draft"


class TwoViews(Method):
    """Word-KD where the teacher reads the task's own source and the student another view of it
    (cascade KD's shape: the teacher reads gold transcripts, the student ASR transcripts)."""

    name = "two_views"
    description = "test: teacher and student read different input views"
    requires = frozenset({"token_logits"})
    num_teachers = (1, 1)
    options_schema = ViewOptions

    def student_forward(self, batch: Any) -> Any:
        return self.task.forward(self.student, batch, view=self.options.student_view)

    def loss(self, batch: Any, step: int) -> LossOutput:
        out = self.student_forward(batch)
        nll, n = self.task.nll(out, self.label_smoothing)
        with torch.no_grad():
            teacher_logits = self.task.forward(self.teacher, batch).logits
        kd = token_kl(out, teacher_logits, 1.0)
        return LossOutput(0.5 * nll + 0.5 * kd, n, {"nll": nll.item(), "kd": kd.item()})


class ProjectedHidden(Method):
    """NLL + MSE between a projection of the student's hidden states and the teacher's: the
    projection is the method's own trainable module (as in FitNets / Universal-KD)."""

    name = "projected_hidden"
    description = "test: a method-owned projection onto the teacher's hidden states"
    requires = frozenset({"hidden_states"})
    num_teachers = (1, 1)

    def prepare(self, context: StageContext) -> None:
        student_dim = self.student.decoder_frontend.embed.weight.shape[1]
        teacher_dim = self.teacher.decoder_frontend.embed.weight.shape[1]
        self.modules["proj"] = torch.nn.Linear(student_dim, teacher_dim)
        self.calls = 0

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = state["calls"]

    def loss(self, batch: Any, step: int) -> LossOutput:
        self.calls += 1
        student = self.task.hidden_states(self.student, batch)
        with torch.no_grad():
            teacher = self.task.hidden_states(self.teacher, batch)
        nll, n = self.task.nll(student.output, self.label_smoothing)
        mse = F.mse_loss(self.modules["proj"](student.hidden[student.mask]), teacher.hidden[student.mask], reduction="sum")
        return LossOutput(nll + 0.01 * mse, n, {"nll": nll.item(), "mse": mse.item()})


def registry() -> Registry:
    """The installed plugins plus the test-only methods."""
    base = get_registry()
    extra = {cls.name: cls for cls in (TwoTeachers, TwoViews, ProjectedHidden)}
    return dataclasses.replace(base, methods={**base.methods, **extra})
