"""``hidden_mse``: hidden-state MSE over a fixed layer map (Patient KD, Sun et al. 2019), a baseline
for the intermediate-layer methods.

L = (1 − α)·CE + α·T²·KL(σ(z_T / T) ‖ σ(z_S / T)) + β·Σ_(i→j) ‖ĥ_S^i − ĥ_T^j‖²

with ĥ a layer's mean over real tokens, projected to the teacher's width where the widths differ
(a learned linear map per mapped layer, owned by the method) and L2-normalised, as PKD normalises
its [CLS] states. The default map is PKD-skip: student layer i to teacher layer ⌈i·L_T / L_S⌉, so
the last layers meet.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from seqkd.hookspecs import hookimpl
from seqkd.losses import hidden_mse, token_kl
from seqkd.method import LossOutput, Method, StageContext, teacher_pass
from seqkd_plugins.layer_kd import check_layers, probe


class HiddenMSEOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the logit KD term; 1 - alpha weighs the CE.")
    beta: float = Field(10.0, ge=0.0, description="Weight of the hidden-state term.")
    temperature: float = Field(1.0, gt=0.0, description="Softmax temperature T of the KD term.")
    layer_map: dict[int, int] | None = Field(
        None, description="Student layer -> teacher layer (1-based), e.g. {1: 2, 2: 4, 3: 6}; default: PKD-skip, i -> ceil(i * L_T / L_S).",
    )


def skip_map(student_depth: int, teacher_depth: int) -> dict[int, int]:
    """PKD-skip: evenly spaced teacher layers, the last student layer on the last teacher layer."""
    return {i: math.ceil(i * teacher_depth / student_depth) for i in range(1, student_depth + 1)}


class HiddenMSE(Method):
    name = "hidden_mse"
    description = "Patient-KD-style baseline: (1-a)*CE + a*KD + b*MSE between normalised hidden states over a fixed layer map"
    requires = frozenset({"layer_states"})
    num_teachers = (1, 1)
    options_schema = HiddenMSEOptions

    options: HiddenMSEOptions

    def prepare(self, context: StageContext) -> None:
        student, teacher = (probe(self.task, m, context.max_tokens) for m in (self.student, self.teacher))
        depth_s, depth_t = len(student.hidden) - 1, len(teacher.hidden) - 1
        self.layer_map = self.options.layer_map or skip_map(depth_s, depth_t)
        check_layers(list(self.layer_map), depth_s, "student", "hidden_mse.layer_map")
        check_layers(list(self.layer_map.values()), depth_t, "teacher", "hidden_mse.layer_map")
        width_s, width_t = student.hidden[-1].shape[-1], teacher.hidden[-1].shape[-1]
        self.modules["project"] = torch.nn.ModuleList(
            torch.nn.Identity() if width_s == width_t else torch.nn.Linear(width_s, width_t, bias=False) for _ in self.layer_map
        )

    def loss(self, batch: Any, step: int) -> LossOutput:
        o = self.options
        student = self.task.layer_states(self.student, batch)
        with teacher_pass():
            teacher = self.task.layer_states(self.teacher, batch)
        ce, n = self.task.nll(student.output, self.label_smoothing)
        kd = token_kl(student.output, teacher.output.logits, o.temperature)
        rows = torch.ones(student.mask.shape[0], 1, dtype=torch.bool, device=student.mask.device)
        mse = sum(
            hidden_mse(F.normalize(project(student.pooled(i)), dim=-1).unsqueeze(1), F.normalize(teacher.pooled(j), dim=-1).unsqueeze(1), rows)
            for (i, j), project in zip(self.layer_map.items(), self.modules["project"])
        )
        total = (1.0 - o.alpha) * ce + o.alpha * kd + o.beta * mse
        return LossOutput(total, n, {"nll": ce.item(), "kd": kd.item(), "mse": mse.item()})


@hookimpl
def register_methods(register):
    register(HiddenMSE)
